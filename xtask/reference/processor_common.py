"""Shared helpers for the processor fixture generator (gen_processor.py).

Loading the HF processor with the checks the fixtures rely on, version stamps, deterministic JSON output and
the conversion of bbox arguments between Python (tuples vs lists) and JSON.
"""

import importlib.util
import json
import math
import os
import platform


def assert_no_torchvision():
    """HF picks the torchvision image backend when torchvision is importable; the fixtures need the PIL one."""
    if importlib.util.find_spec("torchvision") is not None:
        raise SystemExit("torchvision is importable: HF would use the torchvision image backend. Remove it.")


def load_processor(assets):
    assert_no_torchvision()
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(os.path.join(assets, "kosmos-2-patch14-224"))
    ip_cls = type(proc.image_processor).__name__
    if ip_cls != "CLIPImageProcessorPil":
        raise SystemExit(f"image processor class is {ip_cls}, expected CLIPImageProcessorPil")
    if proc.tokenizer.padding_side != "right":
        raise SystemExit(f"unexpected default padding side {proc.tokenizer.padding_side}")
    return proc


def versions(proc):
    import numpy
    import PIL
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
        "torch": torch.__version__.split("+")[0],
        "processor_class": type(proc).__name__,
        "tokenizer_class": type(proc.tokenizer).__name__,
        "image_processor_class": type(proc.image_processor).__name__,
    }


def _dump(value):
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_json(path, obj):
    """Write a dict with sorted keys; top-level lists of dicts get one element per line (readable diffs)."""
    lines = ["{"]
    keys = sorted(obj)
    for i, key in enumerate(keys):
        value = obj[key]
        end = "," if i + 1 < len(keys) else ""
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{_dump(key)}:[")
            for j, item in enumerate(value):
                lines.append(_dump(item) + ("," if j + 1 < len(value) else ""))
            lines.append("]" + end)
        else:
            lines.append(f"{_dump(key)}:{_dump(value)}{end}")
    lines.append("}")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def float_json(x):
    """A float for JSON: non-finite values become the strings NaN / Infinity / -Infinity (errors.json only)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return x


def bboxes_to_json(b):
    """Python bbox argument -> JSON (tuples and lists both become arrays; see README for the disambiguation)."""
    if b is None:
        return None
    if isinstance(b, (list, tuple)):
        return [bboxes_to_json(x) for x in b]
    if isinstance(b, bool):
        return b
    if isinstance(b, float):
        return float_json(b)
    return b


def rows(x, single):
    """HF output (flat list for a single example, list of rows for a batch) -> list of rows of plain ints."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    x = list(x)
    if single:
        assert all(not isinstance(v, (list, tuple)) for v in x), "single example returned batched output"
        return [[int(v) for v in x]]
    return [[int(v) for v in r] for r in x]
