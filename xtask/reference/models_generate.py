"""HF generate() cases for the tiny model fixtures, with the top-1/top-2 margin of every greedy step."""

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class _Jitter(LogitsProcessor):
    """Adds uniform noise of +-eps * max|finite score| per row: a beam result that survives it cannot be
    flipped by numerical differences within the parity tolerance."""

    def __init__(self, eps, seed):
        self.eps = eps
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids, scores):
        finite = torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores))
        scale = finite.abs().amax(dim=-1, keepdim=True)
        noise = (torch.rand(scores.shape, generator=self.g, dtype=scores.dtype) * 2 - 1) * self.eps * scale
        return scores + noise

# beam cases: the result must survive JITTER_DRAWS runs with +-JITTER_EPS relative noise on the scores
JITTER_EPS = 1e-4
JITTER_DRAWS = 4

DEFAULT_PARAMS = dict(
    max_new_tokens=20,
    min_new_tokens=0,
    do_sample=False,
    num_beams=1,
    no_repeat_ngram_size=0,
    length_penalty=1.0,
    early_stopping=False,
    eos_token_id=2,
    pad_token_id=1,
    use_cache=True,
)


def rows_to_lists(t):
    return [[int(x) for x in row] for row in t.tolist()]


@torch.no_grad()
def run_case(model, name, inputs, pixel_values, params, jitter=None):
    """inputs: dict of int64 tensors input_ids, attention_mask, image_embeds_position_mask (or None) and
    pixel_rows (list or None). Returns (case dict for JSON, processed scores tuple)."""
    p = dict(DEFAULT_PARAMS)
    p.update(params)
    kwargs = dict(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        max_new_tokens=p["max_new_tokens"],
        do_sample=p["do_sample"],
        num_beams=p["num_beams"],
        no_repeat_ngram_size=p["no_repeat_ngram_size"],
        length_penalty=p["length_penalty"],
        early_stopping=p["early_stopping"],
        eos_token_id=p["eos_token_id"],
        pad_token_id=p["pad_token_id"],
        use_cache=p["use_cache"],
        return_dict_in_generate=True,
        output_scores=True,
    )
    if p["min_new_tokens"]:
        kwargs["min_new_tokens"] = p["min_new_tokens"]
    if jitter is not None:
        kwargs["logits_processor"] = LogitsProcessorList([_Jitter(*jitter)])
    rows = inputs.get("pixel_rows")
    if rows is not None:
        kwargs["pixel_values"] = pixel_values[rows]
        kwargs["image_embeds_position_mask"] = inputs["image_embeds_position_mask"]
    out = model.generate(**kwargs)
    seqs = out.sequences
    case = {
        "name": name,
        "inputs": {
            "input_ids": rows_to_lists(inputs["input_ids"]),
            "attention_mask": rows_to_lists(inputs["attention_mask"]),
            "image_embeds_position_mask": (
                rows_to_lists(inputs["image_embeds_position_mask"]) if rows is not None else None
            ),
            "pixel_rows": list(rows) if rows is not None else None,
        },
        "params": p,
        "sequences": rows_to_lists(seqs),
    }
    if p["num_beams"] == 1:
        case["min_margin"] = greedy_margin(seqs, out.scores, inputs["input_ids"].shape[1], p["eos_token_id"])
    else:
        case["sequences_scores"] = [float(x) for x in out.sequences_scores.tolist()]
        if jitter is None:
            case["jitter_stable"] = all(
                run_case(model, name, inputs, pixel_values, params, (JITTER_EPS, s))[0]["sequences"]
                == case["sequences"]
                for s in range(JITTER_DRAWS)
            )
    return case, out.scores


def greedy_margin(seqs, scores, prompt_len, eos):
    """Smallest (top1 - top2) / max|finite score| over all steps of rows not yet finished (the scale of the
    parity tolerance); also checks that the emitted token is the arg-max of the processed scores."""
    worst = float("inf")
    for b in range(seqs.shape[0]):
        for k, s in enumerate(scores):
            if k > 0 and (seqs[b, prompt_len:prompt_len + k] == eos).any():
                break
            row = s[b].double()
            top = torch.topk(row, 2)
            t1, t2 = float(top.values[0]), float(top.values[1])
            assert int(top.indices[0]) == int(seqs[b, prompt_len + k]), (b, k)
            scale = float(row[torch.isfinite(row)].abs().max())
            worst = min(worst, (t1 - t2) / scale)
    return worst


def strip_left_pad(inputs, b, pad_id=1):
    """Row b of a left-padded batch, without its pads, as a batch of one."""
    mask = inputs["attention_mask"][b]
    start = int((mask == 0).sum())
    assert bool((mask[start:] == 1).all()) and bool((inputs["input_ids"][b, :start] == pad_id).all())
    one = {
        "input_ids": inputs["input_ids"][b:b + 1, start:],
        "attention_mask": inputs["attention_mask"][b:b + 1, start:],
        "image_embeds_position_mask": inputs["image_embeds_position_mask"][b:b + 1, start:],
        "pixel_rows": [inputs["pixel_rows"][b]],
    }
    return one


def token_at(case, row, step):
    """The token generated by `row` at generation step `step` (0-based)."""
    prompt_len = len(case["inputs"]["input_ids"][row])
    return case["sequences"][row][prompt_len + step]


def run_all_cases(model, main_inputs, pad_inputs, text_inputs, pixel_values, max_new):
    """All generation cases of one model. Returns (cases list, {scores key: tensor})."""
    cases, scores = [], {}

    def add(name, inputs, params, keep_scores=False, topk=None):
        case, sc = run_case(model, name, inputs, pixel_values, params)
        cases.append(case)
        if keep_scores:
            for k in range(min(3, len(sc))):
                if topk is None:
                    scores[f"{name}.step{k}"] = sc[k].float()
                else:
                    top = torch.topk(sc[k].float(), topk, dim=-1)
                    scores[f"{name}.step{k}.topk_values"] = top.values
                    scores[f"{name}.step{k}.topk_indices"] = top.indices
        return case

    topk = 8 if model.config.text_config.vocab_size > 10000 else None
    add("greedy_ngram0", main_inputs, dict(max_new_tokens=max_new))
    g3 = add("greedy_ngram3", main_inputs, dict(max_new_tokens=max_new, no_repeat_ngram_size=3), True, topk)
    # an eos that row 0 emits (for the first time) at step >= 3 of greedy_ngram3, so that rows stop at
    # different steps and the finished row gets pad-filled
    eos_step, eos = first_new_token(g3, 0, 3)
    add("greedy_eos", main_inputs, dict(max_new_tokens=max_new, no_repeat_ngram_size=3, eos_token_id=eos))
    add("greedy_min_new", main_inputs, dict(max_new_tokens=max_new, no_repeat_ngram_size=3, eos_token_id=eos,
                                            min_new_tokens=eos_step + 3), True, topk)
    add("beam3", main_inputs, dict(max_new_tokens=max_new - 4, num_beams=3))
    add("beam3_eos", main_inputs, dict(max_new_tokens=max_new - 4, num_beams=3, no_repeat_ngram_size=3,
                                       eos_token_id=eos, length_penalty=0.7))
    add("batch_left_pad", pad_inputs, dict(max_new_tokens=max_new - 4))
    for b in range(pad_inputs["input_ids"].shape[0]):
        add(f"batch_left_pad_row{b}", strip_left_pad(pad_inputs, b), dict(max_new_tokens=max_new - 4))
    add("text_only", text_inputs, dict(max_new_tokens=max_new - 4))
    return cases, scores


def first_new_token(case, row, min_step):
    """(step, token): the first step >= min_step where `row` emits a token it has not emitted before."""
    prompt_len = len(case["inputs"]["input_ids"][row])
    new = case["sequences"][row][prompt_len:]
    for k in range(min_step, len(new)):
        if new[k] not in new[:k]:
            return k, new[k]
    return min_step, new[min_step]
