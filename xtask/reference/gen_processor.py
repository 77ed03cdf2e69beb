"""Generate the HF-reference PROCESSOR fixtures of kosmos2-rs (tests/fixtures/processor/).

Usage (from the repo root, as `cargo xtask fixtures` does):
    PYTHONHASHSEED=0 OMP_NUM_THREADS=1 .venv/bin/python xtask/reference/gen_processor.py \
        --assets ../shared/assets --out tests/fixtures

Writes ONLY under <out>/processor/: prompts.json, tokenizer_ids.json, postprocess.json, errors.json,
pixels.safetensors, pixels.json and generated/*.png. The formats are documented in
tests/fixtures/processor/README.md. Output is deterministic (byte-identical on a second run).
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from processor_common import load_processor, versions, write_json  # noqa: E402


def image_cache(assets):
    from PIL import Image

    cache = {}

    def get(name):
        if name not in cache:
            with Image.open(os.path.join(assets, "images", name)) as im:
                im.load()
                cache[name] = im.copy()
        return cache[name]

    return get


def gen_prompts(proc, vers, images, out_dir):
    from processor_prompts import all_cases, run_case
    from processor_tokenizer import tokenizer_cases

    cases = [run_case(proc, images, c) for c in all_cases()]
    write_json(os.path.join(out_dir, "prompts.json"), {"versions": vers, "cases": cases})
    tok = tokenizer_cases(proc, cases)
    write_json(os.path.join(out_dir, "tokenizer_ids.json"), {"versions": vers, "cases": tok})
    return len(cases), len(tok)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", required=True, help="shared assets dir (holds kosmos-2-patch14-224/ and images/)")
    ap.add_argument("--out", required=True, help="fixtures dir; files go to <out>/processor/")
    args = ap.parse_args()

    import transformers

    transformers.logging.set_verbosity_error()

    proc = load_processor(args.assets)
    vers = versions(proc)
    out_dir = os.path.join(args.out, "processor")
    os.makedirs(out_dir, exist_ok=True)
    images = image_cache(args.assets)

    from processor_errors import gen_errors
    from processor_pixels import gen_pixels
    from processor_post import gen_postprocess

    n_prompts, n_tok = gen_prompts(proc, vers, images, out_dir)
    n_gen, n_dec = gen_postprocess(proc, vers, out_dir)
    n_rej, n_acc = gen_errors(proc, vers, images, out_dir)
    n_img = gen_pixels(proc, vers, args.assets, out_dir)
    print(
        f"processor fixtures: {n_prompts} prompt cases, {n_tok} tokenizer cases, {n_gen} post-process texts, "
        f"{n_dec} decode cases, {n_rej} rejected + {n_acc} accepted-suspicious error cases, {n_img} images"
    )


if __name__ == "__main__":
    main()
