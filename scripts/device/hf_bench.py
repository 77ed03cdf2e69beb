"""HF transformers side of the device check: Kosmos2ForConditionalGeneration with random weights
at the real size (Kosmos2Config() defaults), eager attention, bf16, on the GPU. Times image encode
(get_image_features), prefill (text model over an 80-token prompt with 64 image tokens, as
generate's first step) and decode (one token per forward with the KV cache), at each batch size,
with CUDA events (median of repeats after warm-up). Writes JSON lines like cuda_bench.

    python3 scripts/device/hf_bench.py --out bench_hf.jsonl [--batches 1,8,32]
    python3 scripts/device/hf_bench.py --device cpu --tiny   # API smoke test without a GPU
"""

import argparse
import inspect
import json
import statistics
import sys
import time

import torch
from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

PROMPT = 80
IMAGE_START = 4
NEW_TOKENS = 32


def build(device, tiny):
    if tiny:
        cfg = Kosmos2Config(
            text_config=dict(embed_dim=32, layers=2, ffn_dim=64, attention_heads=4, vocab_size=300),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=28, patch_size=14),
            latent_query_num=64,
        )
    else:
        cfg = Kosmos2Config()
    for c in (cfg, cfg.text_config, cfg.vision_config):
        c._attn_implementation = "eager"
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Kosmos2ForConditionalGeneration(cfg)
    return model.to(dtype).eval(), cfg, dtype


class Timer:
    def __init__(self, device):
        self.device = device

    def __call__(self, fn, warm, reps):
        for _ in range(warm):
            fn()
        times = []
        for _ in range(reps):
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    device = args.device
    model, cfg, dtype = build(device, args.tiny)
    text = model.text_model
    params = inspect.signature(text.forward).parameters
    cache_kw = "past_key_values" if "past_key_values" in params else "cache"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    vocab = cfg.text_config.vocab_size
    size = cfg.vision_config.image_size
    latent = cfg.latent_query_num
    timer = Timer(device)
    out = open(args.out, "w") if args.out else None

    def report(stage, batch, ms, unit):
        print(f"hf-eager-{str(dtype).split('.')[-1]:<8} {stage:<14} batch {batch:>2}  {ms:>9.3f} {unit}", flush=True)
        if out:
            out.write(json.dumps({"impl": "hf-eager-bf16", "stage": stage, "batch": batch,
                                  "ms": round(ms, 4), "unit": unit}) + "\n")
            out.flush()

    with torch.inference_mode():
        for batch in [int(b) for b in args.batches.split(",")]:
            pixels = torch.randn(batch, 3, size, size, device=device, dtype=dtype)

            def encode():
                r = model.get_image_features(pixel_values=pixels)
                return r if torch.is_tensor(r) else r.pooler_output

            report("image_encode", batch, timer(encode, 2, 7), "ms")
            embeds = encode()
            ids = torch.randint(3, vocab, (batch, PROMPT), device=device)
            ids[:, 0] = 0
            mask = torch.zeros(batch, PROMPT, dtype=torch.bool, device=device)
            mask[:, IMAGE_START:IMAGE_START + latent] = True
            attn = torch.ones(batch, PROMPT, dtype=torch.long, device=device)

            def prefill():
                return text(input_ids=ids, attention_mask=attn, image_embeds=embeds,
                            image_embeds_position_mask=mask, use_cache=True, **extra)

            report("prefill", batch, timer(prefill, 2, 7), "ms")

            def decode_run():
                o = prefill()
                cache = o.past_key_values
                nxt = o.logits[:, -1].argmax(-1, keepdim=True)
                am = attn
                if device == "cuda":
                    torch.cuda.synchronize()
                times = []
                for _ in range(NEW_TOKENS):
                    am = torch.cat([am, am.new_ones(batch, 1)], dim=1)
                    if device == "cuda":
                        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        s.record()
                    t0 = time.perf_counter()
                    o = text(input_ids=nxt, attention_mask=am, use_cache=True,
                             **{cache_kw: cache}, **extra)
                    cache = o.past_key_values
                    nxt = o.logits[:, -1].argmax(-1, keepdim=True)
                    if device == "cuda":
                        e.record()
                        e.synchronize()
                        times.append(s.elapsed_time(e))
                    else:
                        times.append((time.perf_counter() - t0) * 1e3)
                return statistics.median(times)

            decode_run()
            report("decode", batch, statistics.median(decode_run() for _ in range(3)), "ms/token")
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
