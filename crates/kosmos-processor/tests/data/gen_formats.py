"""Writes small images in every format/mode the decoder handles, plus the RGB that HF 5.24
(`convert_to_rgb` on the image Pillow 13 opens) gets from each, for tests/formats.rs.

    /work/main/.venv/bin/python crates/kosmos-processor/tests/data/gen_formats.py

Outputs `formats/<name>` and `formats/<name>.rgb` (H*W*3 bytes) and `formats/list.txt`
(`<name> <width> <height>` per line). Deterministic.
"""
import os

import numpy as np
from PIL import Image
from transformers.image_transforms import convert_to_rgb

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "formats")


def textured(w, h, c, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 7 + y * 3 + k * 50) % 256 for k in range(c)], -1).astype(np.float64)
    a += rng.normal(0, 25, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    made = []

    def save(name, im, **kw):
        path = os.path.join(OUT, name)
        im.save(path, **kw)
        made.append(name)

    # JPEG: every subsampling, baseline and progressive, odd sizes, grey, CMYK, restarts.
    for w, h in [(1, 1), (3, 5), (17, 9), (40, 27)]:
        for ss in (0, 1, 2):
            for prog in (False, True):
                try:
                    save(f"rgb_{w}x{h}_ss{ss}_p{int(prog)}.jpg",
                         Image.fromarray(textured(w, h, 3, w * h + ss)),
                         quality=85, subsampling=ss, progressive=prog)
                except OSError:
                    pass  # Pillow cannot write some tiny progressive JPEGs
        save(f"l_{w}x{h}.jpg", Image.fromarray(textured(w, h, 1, 7)[..., 0], "L"), quality=90)
        save(f"cmyk_{w}x{h}.jpg", Image.fromarray(textured(w, h, 4, 8), "CMYK"), quality=90)
    base = Image.fromarray(textured(45, 31, 3, 11))
    save("q5.jpg", base, quality=5)
    save("q100.jpg", base, quality=100)
    save("optimized.jpg", base, quality=80, optimize=True)
    save("restart_blocks.jpg", base, quality=80, restart_marker_blocks=3)
    save("restart_rows_prog.jpg", base, quality=80, progressive=True, restart_marker_rows=1)

    # Other formats.
    a = textured(53, 37, 3, 3)
    im = Image.fromarray(a)
    y, x = np.mgrid[0:37, 0:53]
    alpha = ((x * 9 + y * 4) % 256).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([a, alpha]), "RGBA")
    save("a.gif", im)
    save("p_trns.gif", im.convert("P"), transparency=3)
    save("a.bmp", im)
    save("l.bmp", im.convert("L"))
    save("p.bmp", im.convert("P"))
    save("rgba.bmp", rgba)
    save("a_q80.webp", im, quality=80)
    save("a_q30.webp", im, quality=30)
    save("a_lossless.webp", im, lossless=True)
    save("rgba_lossless.webp", rgba, lossless=True)
    save("rgba_q80.webp", rgba, quality=80)
    frame2 = Image.fromarray(textured(53, 37, 3, 4))
    save("animated.gif", im, save_all=True, append_images=[frame2], duration=100, loop=0)
    # A first frame smaller than the logical screen (Pillow fills the rest with index 0,
    # or with the transparent index).
    small = Image.fromarray(textured(12, 10, 3, 5)).convert("P")
    for name, kw in [("small_frame.gif", {}), ("small_frame_trns.gif", {"transparency": 2})]:
        path = os.path.join(OUT, name)
        small.save(path, **kw)
        data = bytearray(open(path, "rb").read())
        data[6:8] = (20).to_bytes(2, "little")  # logical screen 20 x 16
        data[8:10] = (16).to_bytes(2, "little")
        open(path, "wb").write(bytes(data))
        made.append(name)
    save("a.tiff", im)
    save("rgba.tiff", rgba)

    lines = []
    for name in made:
        img = Image.open(os.path.join(OUT, name))
        rgb = convert_to_rgb(img, return_numpy=True)
        assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
        rgb.tofile(os.path.join(OUT, name + ".rgb"))
        lines.append(f"{name} {rgb.shape[1]} {rgb.shape[0]}")
    with open(os.path.join(OUT, "list.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(len(lines), "images")


if __name__ == "__main__":
    main()
