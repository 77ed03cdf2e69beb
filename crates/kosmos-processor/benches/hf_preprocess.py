"""HF's PIL preprocessing path timed per image, for comparison with `cargo bench -p kosmos-processor`.

Usage: OMP_NUM_THREADS=1 python hf_preprocess.py <assets_dir> [seconds_per_image] [--serve]
Prints one line per image: `<name> <images_per_second>` (decode from in-memory bytes + the
CLIPImageProcessorPil call that Kosmos2Processor makes), then `ALL <images_per_second>`.
With `--serve` it reads image names from stdin, one per line, and answers each with its
`<name> <images_per_second>` line, so that the Rust bench can alternate the two engines image by
image (a load change on a shared machine then hits both sides alike).
"""
import io
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from PIL import Image  # noqa: E402
from transformers import AutoProcessor  # noqa: E402


def main():
    args = [a for a in sys.argv[1:] if a != "--serve"]
    assets = args[0]
    budget = float(args[1]) if len(args) > 1 else 2.0
    proc = AutoProcessor.from_pretrained(os.path.join(assets, "kosmos-2-patch14-224"))
    ip = proc.image_processor
    assert type(ip).__name__ == "CLIPImageProcessorPil", type(ip).__name__
    names = sorted(os.listdir(os.path.join(assets, "images")))
    blobs = {n: open(os.path.join(assets, "images", n), "rb").read() for n in names}

    def images_per_second(b):
        ip(Image.open(io.BytesIO(b)), return_tensors="np")  # warm-up
        count, start = 0, time.perf_counter()
        while True:
            ip(Image.open(io.BytesIO(b)), return_tensors="np")
            count += 1
            el = time.perf_counter() - start
            if el >= budget and count >= 3:
                return count / el

    if "--serve" in sys.argv:
        for line in sys.stdin:
            n = line.strip()
            if n in blobs:
                print(f"{n} {images_per_second(blobs[n]):.2f}", flush=True)
            else:
                print(f"{n} nan", flush=True)
        return
    total_t, total_n = 0.0, 0
    for n in names:
        ips = images_per_second(blobs[n])
        total_t += 1.0 / ips
        total_n += 1
        print(f"{n} {ips:.2f}", flush=True)
    print(f"ALL {total_n / total_t:.2f}")


if __name__ == "__main__":
    main()
