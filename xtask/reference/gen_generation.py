#!/usr/bin/env python3
"""Generate the generation fixtures (tests/fixtures/generation/) from HF transformers 5.24's own code.

Usage (what `cargo xtask fixtures` runs, from the repo root, with PYTHONHASHSEED=0 OMP_NUM_THREADS=1):
    .venv/bin/python xtask/reference/gen_generation.py --assets ../shared/assets --out tests/fixtures

Writes only <out>/generation/generation.json. Deterministic (CPU, one thread, fixed torch generators, sorted
JSON) and small (well under 1 MB). Every f32 is stored as its IEEE-754 bit pattern (an unsigned int), so the
Rust tests can compare bit for bit and -inf needs no JSON extension.

Contents:
- "processors": single HF LogitsProcessor classes (RepetitionPenalty, NoRepeatNGram, MinNewTokensLength,
  Temperature, TopK, TopP) applied to seeded random scores and token histories.
- "pipelines": the full list HF builds in `GenerationMixin._get_logits_processor` (its order and its
  min_tokens_to_keep rule) for a given config, applied to random scores.
- "toy" + "generate": a deterministic toy causal LM (next-token logits = a fixed random table row chosen by
  (previous two ids, number of real tokens)) driven by HF's real `generate()` (greedy and beam search,
  use_cache=False); the Rust tests implement the same toy and compare sequences, per-step scores and
  beam sequence scores.
"""

import argparse
import json
import os

import torch
import transformers
from transformers import GenerationConfig, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

NEG_INF = float("-inf")
TOY_VOCAB = 32
TOY_ROWS = 61
TOP_P_MARGIN = 1e-5  # keep cumulative probabilities this far from the top-p threshold (f32 vs f64 sums)


def bits(t):
    """f32 tensor -> nested lists of unsigned IEEE-754 bit patterns."""
    t = t.detach().to(torch.float32).contiguous()
    flat = [v & 0xFFFFFFFF for v in t.view(torch.int32).flatten().tolist()]
    if t.dim() == 1:
        return flat
    n = t.shape[-1]
    rows = [flat[i : i + n] for i in range(0, len(flat), n)]
    return rows


# ----------------------------------------------------------------------------------------------------------
# single processors


def random_scores(g, rows, vocab, scale=3.0, neg_inf_frac=0.0, integer=False):
    s = torch.randn(rows, vocab, generator=g) * scale
    if integer:
        s = torch.round(s)
    if neg_inf_frac > 0:
        mask = torch.rand(rows, vocab, generator=g) < neg_inf_frac
        s = s.masked_fill(mask, NEG_INF)
    return s


def left_padded_histories(g, rows, length, alphabet, pad_id=1, max_pad=0):
    ids = torch.randint(3, 3 + alphabet, (rows, length), generator=g)
    pads = []
    for r in range(rows):
        p = int(torch.randint(0, max_pad + 1, (1,), generator=g)) if max_pad > 0 else 0
        ids[r, :p] = pad_id
        pads.append(p)
    return ids, pads


def case(name, kind, params, ids, pad_lens, prompt_len, scores, out):
    return {
        "name": name,
        "kind": kind,
        "params": params,
        "input_ids": ids.tolist(),
        "pad_lens": pad_lens,
        "prompt_len": prompt_len,
        "scores": bits(scores),
        "expected": bits(out),
    }


def top_p_margin_ok(scores, top_p, min_keep):
    """True when no cumulative probability (f64) that decides anything lies within TOP_P_MARGIN of the f32
    threshold (the last `min_keep` sorted entries are always kept, so they decide nothing)."""
    s, _ = torch.sort(scores.double(), dim=-1, stable=True)
    cum = s.softmax(-1).cumsum(-1)[..., : s.shape[-1] - min_keep]
    thr = float(torch.tensor(1.0 - top_p, dtype=torch.float32))
    finite = torch.isfinite(s[..., : s.shape[-1] - min_keep])
    return bool(((cum - thr).abs()[finite] > TOP_P_MARGIN).all())


def top_p_stable_reference(scores, top_p, min_keep):
    """HF's TopPLogitsWarper with a STABLE sort (ties ordered by index): the rule the Rust port follows."""
    s, idx = torch.sort(scores, descending=False, stable=True)
    cum = s.softmax(dim=-1).cumsum(dim=-1)
    rm = cum <= (1 - top_p)
    rm[..., -min_keep:] = 0
    rm = rm.scatter(1, idx, rm)
    return scores.masked_fill(rm, NEG_INF)


def processor_cases():
    g = torch.Generator().manual_seed(1234)
    cases = []
    vocab = 48

    # RepetitionPenaltyLogitsProcessor, with HF's per-row prompt_ignore_length (= left-pad counts).
    for i, (penalty, max_pad) in enumerate([(1.2, 0), (0.8, 2), (2.0, 3), (1.0001, 0), (1.5, 4), (3.0, 1)]):
        ids, pads = left_padded_histories(g, 3, 9, alphabet=20, max_pad=max_pad)
        scores = random_scores(g, 3, vocab, neg_inf_frac=0.05 if i % 2 else 0.0)
        scores[0, 5] = 0.0
        proc = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=torch.tensor(pads))
        out = proc(ids, scores.clone())
        cases.append(case(f"repetition_{i}", "repetition_penalty", {"penalty": penalty}, ids, pads, 9, scores, out))

    # NoRepeatNGramLogitsProcessor over the whole row (pads included, as HF does).
    for i, (n, length, alphabet) in enumerate(
        [(1, 6, 10), (2, 12, 4), (3, 20, 3), (3, 2, 3), (3, 3, 2), (4, 30, 2), (2, 1, 3), (5, 40, 2), (3, 25, 5)]
    ):
        ids, pads = left_padded_histories(g, 3, length, alphabet=alphabet, max_pad=min(2, length - 1))
        scores = random_scores(g, 3, vocab)
        out = NoRepeatNGramLogitsProcessor(n)(ids, scores.clone())
        cases.append(case(f"ngram_{i}", "no_repeat_ngram", {"ngram_size": n}, ids, pads, length, scores, out))

    # MinNewTokensLengthLogitsProcessor (single and multiple eos).
    for i, (prompt_len, cur_len, min_new, eos) in enumerate(
        [(5, 5, 3, [2]), (5, 7, 3, [2]), (5, 8, 3, [2]), (4, 6, 10, [2, 7, 40]), (4, 14, 10, [2, 7, 40]), (6, 6, 0, [2])]
    ):
        ids, pads = left_padded_histories(g, 2, cur_len, alphabet=30)
        scores = random_scores(g, 2, vocab)
        proc = MinNewTokensLengthLogitsProcessor(prompt_len, min_new, eos)
        out = proc(ids, scores.clone())
        params = {"min_new_tokens": min_new, "eos_token_id": eos}
        cases.append(case(f"min_new_{i}", "min_new_tokens", params, ids, pads, prompt_len, scores, out))

    # TemperatureLogitsWarper: torch divides the f32 scores by f32(temperature).
    for i, t in enumerate([0.7, 1.3, 0.05, 3.0, 1.0 / 3.0, 0.9999]):
        ids, pads = left_padded_histories(g, 3, 4, alphabet=30)
        scores = random_scores(g, 3, vocab, scale=5.0, neg_inf_frac=0.1)
        out = TemperatureLogitsWarper(t)(ids, scores.clone())
        cases.append(case(f"temperature_{i}", "temperature", {"temperature": t}, ids, pads, 4, scores, out))

    # TopKLogitsWarper: keeps every score >= the k-th largest (ties at the k-th value all kept).
    for i, (k, keep, integer, inf) in enumerate(
        [(1, 1, False, 0.0), (3, 1, True, 0.0), (10, 1, True, 0.2), (vocab, 1, False, 0.0), (vocab + 5, 1, False, 0.1),
         (2, 3, True, 0.0), (5, 2, False, 0.5), (40, 1, False, 0.9)]
    ):
        ids, pads = left_padded_histories(g, 3, 4, alphabet=30)
        scores = random_scores(g, 3, vocab, integer=integer, neg_inf_frac=inf)
        out = TopKLogitsWarper(k, min_tokens_to_keep=keep)(ids, scores.clone())
        params = {"top_k": k, "min_tokens_to_keep": keep}
        cases.append(case(f"top_k_{i}", "top_k", params, ids, pads, 4, scores, out))

    # TopPLogitsWarper. Continuous scores (no ties) far from the threshold; plus tie cases kept only when
    # HF's (unstable, machine-dependent) sort gives the same result as the stable order we implement.
    specs = [(0.1, 1, False, 0.0), (0.5, 1, False, 0.0), (0.9, 1, False, 0.0), (0.95, 2, False, 0.1),
             (0.0, 1, False, 0.0), (0.3, 3, False, 0.3), (0.99, 1, False, 0.0), (0.7, 1, True, 0.0),
             (0.8, 2, True, 0.2), (0.6, 1, True, 0.0)]
    for i, (p, keep, integer, inf) in enumerate(specs):
        for _attempt in range(200):
            ids, pads = left_padded_histories(g, 3, 4, alphabet=30)
            scores = random_scores(g, 3, vocab, scale=2.0, integer=integer, neg_inf_frac=inf)
            out = TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores.clone())
            same = torch.equal(out, top_p_stable_reference(scores, p, keep))
            if same and top_p_margin_ok(scores, p, keep):
                break
        else:
            raise SystemExit(f"top_p case {i}: no usable random draw")
        params = {"top_p": p, "min_tokens_to_keep": keep}
        cases.append(case(f"top_p_{i}", "top_p", params, ids, pads, 4, scores, out))
    return cases


# ----------------------------------------------------------------------------------------------------------
# the toy model


class ToyConfig(PretrainedConfig):
    model_type = "kosmos2_rs_toy"

    def __init__(self, vocab_size=TOY_VOCAB, table_rows=TOY_ROWS, **kwargs):
        self.vocab_size = vocab_size
        self.table_rows = table_rows
        super().__init__(**kwargs)


class ToyLM(PreTrainedModel, GenerationMixin):
    """next-token logits = table[(prev2 * 131 + prev1 * 31 + n_real * 7) % rows]; prev2/prev1 are the row's
    last two ids (pads included), n_real = attention_mask.sum() (the real tokens so far)."""

    config_class = ToyConfig
    base_model_prefix = "toy"
    main_input_name = "input_ids"

    def __init__(self, config):
        super().__init__(config)
        self.table = torch.nn.Parameter(torch.zeros(config.table_rows, config.vocab_size), requires_grad=False)

    def _init_weights(self, module):
        pass

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        b, t = input_ids.shape
        n_real = attention_mask.sum(-1) if attention_mask is not None else torch.full((b,), t)
        prev1 = input_ids[:, -1]
        prev2 = input_ids[:, -2] if t >= 2 else torch.zeros_like(prev1)
        idx = (prev2 * 131 + prev1 * 31 + n_real * 7) % self.config.table_rows
        return CausalLMOutputWithPast(logits=self.table[idx][:, None, :])


def build_toy():
    cfg = ToyConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1)
    model = ToyLM(cfg).eval()
    g = torch.Generator().manual_seed(20240607)
    table = torch.randn(TOY_ROWS, TOY_VOCAB, generator=g) * 2.0
    table[:, 2] += 2.0  # eos more likely, so beams finish at different lengths and early_stopping matters
    with torch.no_grad():
        model.table.copy_(table)
    return model


def left_pad(rows, pad_id=1):
    t = max(len(r) for r in rows)
    ids = [[pad_id] * (t - len(r)) + r for r in rows]
    mask = [[0] * (t - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids), torch.tensor(mask)


PROMPTS = {
    "one": [[0, 5, 9, 12]],
    "two_same": [[0, 7, 8, 3, 4], [0, 11, 6, 20, 9]],
    "two_ragged": [[0, 5, 9], [0, 7, 8, 3, 4, 30]],
    "three_ragged": [[0, 13, 4], [0, 21, 22, 23, 24, 25, 26], [0, 8, 8, 8, 8]],
}


def generate_cases(model):
    greedy = [
        ("greedy_one", "one", {"max_new_tokens": 12}),
        ("greedy_ragged", "two_ragged", {"max_new_tokens": 16}),
        ("greedy_three", "three_ragged", {"max_new_tokens": 20}),
        ("greedy_ngram2", "two_ragged", {"max_new_tokens": 30, "no_repeat_ngram_size": 2}),
        ("greedy_ngram3", "three_ragged", {"max_new_tokens": 30, "no_repeat_ngram_size": 3}),
        ("greedy_rep", "two_ragged", {"max_new_tokens": 20, "repetition_penalty": 1.7}),
        ("greedy_rep_low", "two_same", {"max_new_tokens": 20, "repetition_penalty": 0.6}),
        ("greedy_min_new", "three_ragged", {"max_new_tokens": 14, "min_new_tokens": 8}),
        ("greedy_multi_eos", "three_ragged", {"max_new_tokens": 20, "eos_token_id": [2, 7, 19]}),
        ("greedy_all", "three_ragged",
         {"max_new_tokens": 25, "no_repeat_ngram_size": 3, "repetition_penalty": 1.3, "min_new_tokens": 4,
          "eos_token_id": [2, 7]}),
        ("greedy_one_token", "two_same", {"max_new_tokens": 1}),
    ]
    beam = []
    for prompt in ("two_ragged", "three_ragged", "two_same"):
        for nb in (2, 3, 4):
            for lp in (1.0, 0.0, 2.0, -0.5):
                for es in (False, True, "never"):
                    beam.append((f"beam{nb}_lp{lp}_es{es}_{prompt}", prompt,
                                 {"num_beams": nb, "length_penalty": lp, "early_stopping": es, "max_new_tokens": 12}))
    # early_stopping "never" with length_penalty > 0 bounds the running beams by max_length: these settings
    # make it continue (and find better hypotheses) where the heuristic (false) stops
    for prompt, nb, lp, mnt in [("two_same", 2, 2.0, 20), ("two_same", 2, 3.0, 40), ("two_same", 4, 1.0, 40),
                                ("two_ragged", 2, 1.0, 40), ("two_ragged", 3, 1.0, 40),
                                ("three_ragged", 2, 2.0, 40), ("three_ragged", 2, 3.0, 40)]:
        for es in (False, "never"):
            beam.append((f"beam{nb}_lp{lp}_es{es}_{prompt}_long{mnt}", prompt,
                         {"num_beams": nb, "length_penalty": lp, "early_stopping": es, "max_new_tokens": mnt}))
    beam += [
        ("beam3_ngram3", "three_ragged",
         {"num_beams": 3, "no_repeat_ngram_size": 3, "max_new_tokens": 20, "length_penalty": 1.0,
          "early_stopping": False}),
        ("beam2_min_new_rep", "two_same",
         {"num_beams": 2, "min_new_tokens": 5, "repetition_penalty": 1.4, "max_new_tokens": 15,
          "length_penalty": 1.0, "early_stopping": False}),
        ("beam4_multi_eos", "three_ragged",
         {"num_beams": 4, "eos_token_id": [2, 9], "max_new_tokens": 18, "length_penalty": 1.0,
          "early_stopping": "never"}),
        ("beam3_long", "one",
         {"num_beams": 3, "max_new_tokens": 40, "length_penalty": 1.0, "early_stopping": False}),
        ("beam5_one_token", "two_ragged",
         {"num_beams": 5, "max_new_tokens": 1, "length_penalty": 1.0, "early_stopping": False}),
    ]
    out = []
    for name, prompt, params in greedy + beam:
        full = {"do_sample": False, "num_beams": 1, "eos_token_id": 2, "pad_token_id": 1, "min_new_tokens": 0,
                "no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "length_penalty": 1.0,
                "early_stopping": False}
        full.update(params)
        ids, mask = left_pad(PROMPTS[prompt])
        with torch.no_grad():
            res = model.generate(input_ids=ids, attention_mask=mask, use_cache=False, return_dict_in_generate=True,
                                 output_scores=True, **full)
        entry = {"name": name, "params": full, "input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                 "sequences": res.sequences.tolist()}
        if full["num_beams"] == 1:
            entry["scores"] = [bits(s) for s in res.scores]
            entry["sequences_scores"] = None
        else:
            entry["scores"] = None
            entry["sequences_scores"] = bits(res.sequences_scores)
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------------------
# full processor lists, as generate() builds them


def pipeline_cases(model):
    g = torch.Generator().manual_seed(99)
    specs = [
        {"do_sample": True, "temperature": 0.7, "top_k": 8, "top_p": 0.9},
        {"do_sample": True, "temperature": 1.5, "top_k": 0, "top_p": 0.6, "repetition_penalty": 1.3},
        {"do_sample": True, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "no_repeat_ngram_size": 2},
        {"do_sample": True, "temperature": 0.5, "top_k": 3, "top_p": 0.5, "min_new_tokens": 10,
         "no_repeat_ngram_size": 3, "repetition_penalty": 0.9},
        {"do_sample": True, "num_beams": 2, "temperature": 2.0, "top_k": 1, "top_p": 0.2, "eos_token_id": [2, 5]},
        {"do_sample": True, "num_beams": 3, "temperature": 0.8, "top_k": 2, "top_p": 0.05},
        {"do_sample": False, "temperature": 0.3, "top_k": 2, "top_p": 0.1, "repetition_penalty": 1.2,
         "no_repeat_ngram_size": 2, "min_new_tokens": 3},
    ]
    cases = []
    vocab = 40
    for i, spec in enumerate(specs):
        full = {"num_beams": 1, "eos_token_id": 2, "pad_token_id": 1, "bos_token_id": 0, "min_new_tokens": 0,
                "no_repeat_ngram_size": 0, "repetition_penalty": 1.0}
        full.update(spec)
        prompt_len, cur_len = 6, 9
        for _attempt in range(500):
            ids, pads = left_padded_histories(g, 4, cur_len, alphabet=6, max_pad=2)
            mask = torch.ones(4, prompt_len, dtype=torch.long)
            for r, p in enumerate(pads):
                mask[r, :p] = 0
            scores = random_scores(g, 4, vocab, scale=2.0)
            if full["num_beams"] > 1:
                scores = torch.log_softmax(scores, dim=-1)
            gc = GenerationConfig(**full)
            gc.min_length = full["min_new_tokens"] + prompt_len if full["min_new_tokens"] else 0
            model._prepare_special_tokens(gc, True, device="cpu")
            procs = model._get_logits_processor(
                generation_config=gc,
                input_ids_seq_length=prompt_len,
                encoder_input_ids=ids[:, :prompt_len],
                prefix_allowed_tokens_fn=None,
                logits_processor=LogitsProcessorList(),
                device="cpu",
                model_kwargs={"attention_mask": mask},
            )
            out = procs(ids, scores.clone())
            # the scores reaching top-p must stay clear of its threshold (f32 vs f64 cumulative sums)
            pre = scores.clone()
            for p in procs:
                if isinstance(p, TopPLogitsWarper):
                    break
                pre = p(ids, pre)
            keep = len(gc._eos_token_tensor) + 1 if full["num_beams"] > 1 else 1
            if full["do_sample"] and full.get("top_p", 1.0) < 1.0 and not top_p_margin_ok(pre, full["top_p"], keep):
                continue
            break
        else:
            raise SystemExit(f"pipeline case {i}: no usable random draw")
        cases.append({
            "name": f"pipeline_{i}",
            "params": full,
            "processors": [type(p).__name__ for p in procs],
            "input_ids": ids.tolist(),
            "pad_lens": pads,
            "prompt_len": prompt_len,
            "scores": bits(scores),
            "expected": bits(out),
        })
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", required=True, help="shared assets folder (unused: the fixtures are synthetic)")
    ap.add_argument("--out", required=True, help="fixtures root; writes <out>/generation/")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()  # the pipeline configs set sampling flags on purpose

    model = build_toy()
    doc = {
        "about": "HF transformers generation reference (see xtask/reference/gen_generation.py); "
                 "floats are IEEE-754 f32 bit patterns",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
        "processors": processor_cases(),
        "pipelines": pipeline_cases(model),
        "toy": {
            "vocab_size": TOY_VOCAB,
            "table_rows": TOY_ROWS,
            "index": "(prev2 * 131 + prev1 * 31 + n_real * 7) % table_rows",
            "table": bits(model.table),
        },
        "generate": generate_cases(model),
    }
    out_dir = os.path.join(args.out, "generation")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "generation.json")
    with open(path, "w") as f:
        json.dump(doc, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    n_eos = sum(1 for c in doc["generate"] for row in c["sequences"] if 2 in row[len(c["input_ids"][0]):])
    print(f"gen_generation: wrote {path} ({os.path.getsize(path)} bytes): "
          f"{len(doc['processors'])} processor cases, {len(doc['pipelines'])} pipelines, "
          f"{len(doc['generate'])} generate cases ({n_eos} rows containing eos 2)")


if __name__ == "__main__":
    main()
