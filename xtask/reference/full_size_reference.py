#!/usr/bin/env python3
"""The full-size (1.66B) random-weight KOSMOS-2 checkpoint and its HF reference outputs.

Usage (what `cargo xtask parity --full-size` and `cargo xtask bench` run, from the repo root):
    .venv/bin/python xtask/reference/full_size_reference.py --assets ../shared/assets --out target/full-size \
        [--build-only] [--seed 0] [--threads 2] [--decode-steps 32]

1. Checkpoint, cached in <out>/model/ (config.json = the REAL config, model.safetensors = 885 f32 tensors, the
   tied lm_head omitted as in HF's save_pretrained). Weights: HF's own `_init_weights` (post_init) under
   `torch.manual_seed(seed)`, so activations have realistic scales (text std 0.02, CLIP-style vision init); then
   every LayerNorm weight gets 1 + N(0, 0.02^2) and every bias N(0, 0.02^2) from a second seeded generator, so a
   swapped or ignored LN/bias parameter cannot hide behind HF's ones/zeros init. Built under torch.no_grad and
   written tensor by tensor (no second in-memory copy), then freed. <out>/model/build.json records the recipe;
   a checkpoint with another recipe is rebuilt.
2. Reference (skipped with --build-only), cached in <out>/reference.safetensors + <out>/reference.json: the REAL
   Kosmos2Processor on images/snowman.jpg with "<grounding>An image of"; HF f32 (eager attention) forward ->
   pixel_values, vision_last_hidden_state, image_embeds, logits (all 71 rows); HF f32 greedy generate (8 tokens)
   -> greedy_ids + greedy_step_logits; a cached decode fed forced tokens 100 + (i * 7919) % 60000 ->
   forced_step_logits (decode-steps rows); then the same model cast to bf16 -> hf_bf16_* (stored as f32).
"""

import argparse
import gc
import hashlib
import json
import os
import shutil
import struct
import sys
import time

import torch

sys.dont_write_bytecode = True

PROMPT = "<grounding>An image of"
IMAGE = "snowman.jpg"
RECIPE_VERSION = 1
PERTURB_STD = 0.02
GREEDY_TOKENS = 8  # on a random model greedy soon repeats one token; the forced decode covers the cache


def log(msg):
    print(f"[full_size] {msg}", flush=True)


def quiet_transformers():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def recipe(seed):
    return {"recipe_version": RECIPE_VERSION, "seed": seed, "init": "HF _init_weights (post_init)",
            "perturb": f"LayerNorm weight 1+N(0,{PERTURB_STD}^2), bias N(0,{PERTURB_STD}^2), generator seed+1",
            "torch": torch.__version__, "transformers": __import__("transformers").__version__}


# ----------------------------------------------------------------------------------------------------------
# checkpoint


def write_safetensors_streaming(path, tensors):
    """safetensors without the in-memory copy of safetensors.torch.save_file: header, then each tensor's
    bytes written straight from its (contiguous, f32) storage."""
    header, offset = {}, 0
    for name, t in tensors:
        n = t.numel() * t.element_size()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _name, t in tensors:
            assert t.dtype == torch.float32 and t.is_contiguous()
            f.write(memoryview(t.numpy()).cast("B"))
    os.replace(tmp, path)


@torch.no_grad()
def build_checkpoint(assets, mdir, seed):
    from torch import nn
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    stamp = os.path.join(mdir, "build.json")
    want = recipe(seed)
    if os.path.isfile(os.path.join(mdir, "model.safetensors")) and os.path.isfile(stamp):
        with open(stamp) as f:
            have = json.load(f)
        if {k: have.get(k) for k in ("recipe_version", "seed")} == {k: want[k] for k in ("recipe_version", "seed")}:
            log(f"checkpoint cached at {mdir}")
            return False
    t0 = time.time()
    os.makedirs(mdir, exist_ok=True)
    cfg_src = os.path.join(assets, "kosmos-2-patch14-224", "config.json")
    config = Kosmos2Config.from_pretrained(os.path.dirname(cfg_src))
    torch.manual_seed(seed)
    model = Kosmos2ForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for _name, module in sorted(model.named_modules(), key=lambda x: x[0]):
        if isinstance(module, nn.LayerNorm):
            module.weight.add_(torch.randn(module.weight.shape, generator=g) * PERTURB_STD)
    for name, p in sorted(model.named_parameters(), key=lambda x: x[0]):
        if name.endswith(".bias"):
            p.add_(torch.randn(p.shape, generator=g) * PERTURB_STD)
    tied = model.text_model.lm_head.weight.data_ptr() == model.text_model.model.embed_tokens.weight.data_ptr()
    assert tied, "the real config ties lm_head to embed_tokens"
    state = model.state_dict()
    tensors = [(k, v.contiguous()) for k, v in sorted(state.items()) if k != "text_model.lm_head.weight"]
    n_params = sum(t.numel() for _, t in tensors)
    n_tensors = len(tensors)
    log(f"built {len(tensors)} tensors, {n_params / 1e9:.3f}G params in {time.time() - t0:.1f}s; writing")
    for k, t in tensors:
        assert torch.isfinite(t).all(), k
    write_safetensors_streaming(os.path.join(mdir, "model.safetensors"), tensors)
    del tensors, state, model
    gc.collect()
    shutil.copyfile(cfg_src, os.path.join(mdir, "config.json"))
    with open(stamp, "w") as f:
        json.dump({**want, "tensors": n_tensors, "params": n_params},
                  f, indent=1, sort_keys=True)
    log(f"checkpoint written to {mdir} in {time.time() - t0:.1f}s")
    return True


# ----------------------------------------------------------------------------------------------------------
# reference outputs


def processor_inputs(assets):
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(os.path.join(assets, "kosmos-2-patch14-224"))
    image = Image.open(os.path.join(assets, "images", IMAGE))
    enc = proc(text=PROMPT, images=image, return_tensors="pt")
    return {k: enc[k] for k in ("pixel_values", "input_ids", "attention_mask", "image_embeds_position_mask")}


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        h.update(f.read(1 << 20))  # header + first tensors: enough to tell checkpoints apart cheaply
    return f"{size}:{h.hexdigest()[:16]}"


@torch.no_grad()
def forward(model, inp, dtype):
    out = model(pixel_values=inp["pixel_values"].to(dtype), input_ids=inp["input_ids"],
                attention_mask=inp["attention_mask"], image_embeds_position_mask=inp["image_embeds_position_mask"],
                use_cache=False)
    return {
        "vision_last_hidden_state": out.image_outputs.last_hidden_state.float().contiguous(),
        "image_embeds": out.image_outputs.pooler_output.float().contiguous(),
        "logits": out.logits.float().contiguous(),
    }


def forced_token(i):
    """The i-th forced decode token (bench_driver/bench.rs and bench_hf.py use the same formula)."""
    return 100 + (i * 7919) % 60000


def rel_margins(logits):
    """(top1 - top2) / max|row| per row: how far each arg-max is from flipping."""
    top2 = logits.topk(2, dim=-1).values
    return ((top2[:, 0] - top2[:, 1]) / logits.abs().amax(-1)).tolist()


@torch.no_grad()
def greedy(model, inp, n):
    """HF generate, greedy, no logits processors: the new ids and the raw logits of each step."""
    gen = model.generate(pixel_values=inp["pixel_values"], input_ids=inp["input_ids"],
                         attention_mask=inp["attention_mask"],
                         image_embeds_position_mask=inp["image_embeds_position_mask"], use_cache=True,
                         max_new_tokens=n, do_sample=False, num_beams=1, no_repeat_ngram_size=0,
                         repetition_penalty=1.0, min_new_tokens=0, output_logits=True,
                         return_dict_in_generate=True)
    prompt_len = inp["input_ids"].shape[1]
    new_ids = gen.sequences[0, prompt_len:].tolist()
    logits = torch.cat([x.float() for x in gen.logits], dim=0).contiguous()  # [steps, vocab]
    assert logits.argmax(-1).tolist() == new_ids, "generate applied a logits processor"
    return new_ids, logits


@torch.no_grad()
def forced_decode(model, inp, n):
    """Prefill, then n-1 cached steps fed the forced tokens (diverse inputs, unlike greedy on a random
    model): row 0 is the prefill's last row, row i the logits after feeding forced_token(i - 1)."""
    out = model(pixel_values=inp["pixel_values"], input_ids=inp["input_ids"], attention_mask=inp["attention_mask"],
                image_embeds_position_mask=inp["image_embeds_position_mask"], use_cache=True, logits_to_keep=1)
    rows = [out.logits[:, -1].float()]
    mask = inp["attention_mask"]
    for i in range(n - 1):
        mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
        # decode steps go through text_model, as generate() does (the top-level forward needs pixels)
        out = model.text_model(input_ids=torch.tensor([[forced_token(i)]]), attention_mask=mask, cache=out.cache,
                               use_cache=True, logits_to_keep=1)
        rows.append(out.logits[:, -1].float())
    return torch.cat(rows, dim=0).contiguous()


def build_reference(assets, out, mdir, decode_steps, seed):
    from safetensors.torch import save_file
    from transformers import Kosmos2ForConditionalGeneration

    ref_json = os.path.join(out, "reference.json")
    ref_st = os.path.join(out, "reference.safetensors")
    digest = file_digest(os.path.join(mdir, "model.safetensors"))
    if os.path.isfile(ref_json) and os.path.isfile(ref_st):
        with open(ref_json) as f:
            have = json.load(f)
        if have.get("checkpoint") == digest and have.get("decode_steps") == decode_steps \
                and have.get("recipe_version") == RECIPE_VERSION:
            log(f"reference cached at {ref_st}")
            return
    t0 = time.time()
    inp = processor_inputs(assets)
    model = Kosmos2ForConditionalGeneration.from_pretrained(mdir, dtype=torch.float32,
                                                            attn_implementation="eager").eval()
    log(f"HF loaded the checkpoint in {time.time() - t0:.1f}s")
    t1 = time.time()
    f32 = forward(model, inp, torch.float32)
    log(f"HF f32 forward in {time.time() - t1:.1f}s")
    t1 = time.time()
    ids, greedy_logits = greedy(model, inp, GREEDY_TOKENS)
    log(f"HF f32 greedy ({len(ids)} tokens) in {time.time() - t1:.1f}s: {ids}")
    t1 = time.time()
    forced_logits = forced_decode(model, inp, decode_steps)
    log(f"HF f32 forced decode ({decode_steps} steps) in {time.time() - t1:.1f}s")
    model = model.to(torch.bfloat16)
    gc.collect()
    t1 = time.time()
    bf16 = forward(model, inp, torch.bfloat16)
    log(f"HF bf16 forward in {time.time() - t1:.1f}s")
    del model
    gc.collect()

    tensors = {"pixel_values": inp["pixel_values"].float().contiguous(), **f32,
               "greedy_step_logits": greedy_logits, "forced_step_logits": forced_logits}
    tensors.update({f"hf_bf16_{k}": v for k, v in bf16.items()})
    save_file(tensors, ref_st)
    logits = f32["logits"][0]
    meta = {
        **recipe(seed),
        "checkpoint": digest,
        "prompt": PROMPT,
        "image": IMAGE,
        "attn_implementation": "eager",
        "input_ids": inp["input_ids"][0].tolist(),
        "attention_mask": inp["attention_mask"][0].tolist(),
        "image_embeds_position_mask": inp["image_embeds_position_mask"][0].tolist(),
        "decode_steps": decode_steps,
        "forced_ids": [forced_token(i) for i in range(decode_steps - 1)],
        "forced_step_argmax": forced_logits.argmax(-1).tolist(),
        "forced_min_row_margin": min(rel_margins(forced_logits)),
        "greedy_ids": ids,
        "greedy_min_margin": min(rel_margins(greedy_logits)),
        "logits_argmax": logits.argmax(-1).tolist(),
        "logits_min_row_margin": min(rel_margins(logits)),
        "hf_bf16_logits_argmax": bf16["logits"][0].argmax(-1).tolist(),
    }
    with open(ref_json, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    log(f"reference written to {out} in {time.time() - t0:.1f}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quiet_transformers()
    mdir = os.path.join(args.out, "model")
    built = build_checkpoint(args.assets, mdir, args.seed)
    if built:
        # a rebuilt checkpoint invalidates the reference
        for f in ("reference.json", "reference.safetensors"):
            p = os.path.join(args.out, f)
            if os.path.exists(p):
                os.remove(p)
    if not args.build_only:
        build_reference(args.assets, args.out, mdir, args.decode_steps, args.seed)


if __name__ == "__main__":
    main()
