#!/usr/bin/env python3
"""One HF transformers benchmark run in its own process (what `cargo xtask bench` alternates with bench_driver).

    .venv/bin/python xtask/reference/bench_hf.py --model DIR --processor DIR --image FILE --prompt TEXT \
        --dtype f32|bf16 [--tokens 64] [--warmup-tokens 4] [--threads 2]

Phases, timed exactly like crates/kosmos2/examples/bench_driver/bench.rs:
- load: Kosmos2ForConditionalGeneration.from_pretrained(dtype=...), default attention (SDPA), eval();
- preprocess: open the image file + Kosmos2Processor(text, images) -> tensors;
- encode: model.get_image_features(pixel_values) (vision tower + projection);
- prefill: model.text_model over the prompt with the image embeddings, cache on, logits_to_keep=1 (what
  Kosmos2ForConditionalGeneration.generate runs);
- decode: `tokens` cached steps fed forced tokens 100 + (i * 7919) % 60000 (same work in both engines, no eos),
  each with logits_to_keep=1 and an arg-max;
- end-to-end: preprocess through the last decode step.
One warm-up run with `warmup-tokens` steps precedes the timed run. Prints one line
`RESULT\tkey=value ...`; peak_rss_mib is this process's VmHWM.
"""

import argparse
import os
import sys
import time

sys.dont_write_bytecode = True


def peak_rss_mib(field="VmHWM"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def forced_token(i):
    return 100 + (i * 7919) % 60000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--processor", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--dtype", choices=["f32", "bf16"], required=True)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--warmup-tokens", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import transformers
    from PIL import Image
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    proc = AutoProcessor.from_pretrained(args.processor)

    t = time.perf_counter()
    model = Kosmos2ForConditionalGeneration.from_pretrained(args.model, dtype=dtype).eval()
    load_ms = (time.perf_counter() - t) * 1e3
    rss_after_load = peak_rss_mib("VmRSS")

    @torch.inference_mode()
    def run(tokens):
        start = time.perf_counter()
        image = Image.open(args.image)
        enc = proc(text=args.prompt, images=image, return_tensors="pt")
        preprocess = time.perf_counter()

        emb = model.get_image_features(enc["pixel_values"].to(dtype), return_dict=True).pooler_output
        encode = time.perf_counter()

        mask = enc["attention_mask"]
        # prefill and decode go through text_model, as Kosmos2ForConditionalGeneration.generate does
        out = model.text_model(input_ids=enc["input_ids"], attention_mask=mask, image_embeds=emb,
                               image_embeds_position_mask=enc["image_embeds_position_mask"], use_cache=True,
                               logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1)
        prefill = time.perf_counter()

        one = torch.ones(1, 1, dtype=mask.dtype)
        for i in range(tokens):
            mask = torch.cat([mask, one], dim=1)
            out = model.text_model(input_ids=torch.tensor([[forced_token(i)]]), attention_mask=mask,
                                   cache=out.cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(-1)
        end = time.perf_counter()
        _ = nxt.item()
        return {
            "preprocess_ms": (preprocess - start) * 1e3,
            "encode_ms": (encode - preprocess) * 1e3,
            "prefill_ms": (prefill - encode) * 1e3,
            "decode_ms_per_token": (end - prefill) * 1e3 / max(tokens, 1),
            "e2e_ms": (end - start) * 1e3,
            "prompt_tokens": enc["input_ids"].shape[1],
        }

    run(args.warmup_tokens)
    r = run(args.tokens)
    print("RESULT\t" + " ".join([
        f"load_ms={load_ms:.1f}",
        f"preprocess_ms={r['preprocess_ms']:.2f}",
        f"encode_ms={r['encode_ms']:.1f}",
        f"prefill_ms={r['prefill_ms']:.1f}",
        f"decode_ms_per_token={r['decode_ms_per_token']:.2f}",
        f"e2e_ms={r['e2e_ms']:.1f}",
        f"peak_rss_mib={peak_rss_mib():.0f}",
        f"rss_after_load_mib={rss_after_load:.0f}",
        f"tokens={args.tokens}",
        f"prompt_tokens={r['prompt_tokens']}",
        f"threads={torch.get_num_threads()}",
        f"attn={model.config._attn_implementation}",
    ]), flush=True)


if __name__ == "__main__":
    main()
