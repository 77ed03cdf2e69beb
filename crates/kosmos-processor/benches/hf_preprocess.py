"""HF's PIL preprocessing path timed per image, for comparison with `cargo bench -p kosmos-processor`.

Usage: OMP_NUM_THREADS=1 python hf_preprocess.py <assets_dir> [seconds_per_image]
Prints one line per image: `<name> <images_per_second>` (decode from in-memory bytes + the
CLIPImageProcessorPil call that Kosmos2Processor makes), then `ALL <images_per_second>`.
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
    assets = sys.argv[1]
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    proc = AutoProcessor.from_pretrained(os.path.join(assets, "kosmos-2-patch14-224"))
    ip = proc.image_processor
    assert type(ip).__name__ == "CLIPImageProcessorPil", type(ip).__name__
    names = sorted(os.listdir(os.path.join(assets, "images")))
    blobs = {n: open(os.path.join(assets, "images", n), "rb").read() for n in names}
    total_t, total_n = 0.0, 0
    for n in names:
        b = blobs[n]
        ip(Image.open(io.BytesIO(b)), return_tensors="np")  # warm-up
        count, start = 0, time.perf_counter()
        while True:
            ip(Image.open(io.BytesIO(b)), return_tensors="np")
            count += 1
            el = time.perf_counter() - start
            if el >= budget and count >= 3:
                break
        total_t += el / count
        total_n += 1
        print(f"{n} {count / el:.2f}", flush=True)
    print(f"ALL {total_n / total_t:.2f}")


if __name__ == "__main__":
    main()
