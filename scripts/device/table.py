"""Merges the device check's results into one markdown table (printed, and written to --out):
test binaries (passed / failed), then kosmos2-rs vs HF eager bf16 per stage and batch, with the
speed-up and the issue's targets.

    python3 scripts/device/table.py --tests tests.tsv --rs bench_rs.jsonl --hf bench_hf.jsonl --out table.md
"""

import argparse
import json
import os

# Targets from issue 9 (H200, bf16): decode at batch 1 <= 1.0 ms/token, >= 10x HF eager,
# image encode <= 3 ms (batch 1).
TARGETS = {("decode", 1): 1.0, ("image_encode", 1): 3.0}
MIN_SPEEDUP = 10.0


def load(path):
    rows = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    r = json.loads(line)
                    rows[(r["stage"], int(r["batch"]))] = r
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", default=None)
    ap.add_argument("--rs", default=None)
    ap.add_argument("--hf", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    lines = []
    if a.tests and os.path.exists(a.tests):
        lines += ["| test binary | passed | failed | ignored | status |", "|---|---:|---:|---:|---|"]
        with open(a.tests) as f:
            for line in f:
                name, passed, failed, ignored, status = line.rstrip("\n").split("\t")
                lines.append(f"| {name} | {passed} | {failed} | {ignored} | {status} |")
        lines.append("")
    rs, hf = load(a.rs), load(a.hf)
    keys = sorted(set(rs) | set(hf), key=lambda k: (["image_encode", "prefill", "decode"].index(k[0])
                                                    if k[0] in ("image_encode", "prefill", "decode") else 9, k[1]))
    if keys:
        lines += ["| stage | batch | unit | kosmos2-rs | HF eager bf16 | speed-up | target |",
                  "|---|---:|---|---:|---:|---:|---|"]
        for k in keys:
            r, h = rs.get(k), hf.get(k)
            unit = (r or h)["unit"]
            rms = f"{r['ms']:.3f}" if r else "-"
            hms = f"{h['ms']:.3f}" if h else "-"
            sp = f"{h['ms'] / r['ms']:.1f}x" if r and h and r["ms"] > 0 else "-"
            goals = []
            if k in TARGETS:
                ok = r is not None and r["ms"] <= TARGETS[k]
                goals.append(f"<= {TARGETS[k]} {unit}: {'met' if ok else 'MISSED'}")
            if r and h and k[0] == "decode":
                goals.append(f">= {MIN_SPEEDUP:.0f}x: {'met' if h['ms'] / r['ms'] >= MIN_SPEEDUP else 'MISSED'}")
            lines.append(f"| {k[0]} | {k[1]} | {unit} | {rms} | {hms} | {sp} | {'; '.join(goals)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
