"""pixels.safetensors / pixels.json: HF image preprocessing of the real assets and of generated images.

Generated source images are written as PNGs to <out>/processor/generated/ from the formulas below (x = column,
y = row, c = channel, all integers; `%` is the non-negative remainder).
"""

import io
import os

import numpy as np
from PIL import Image

from processor_common import write_json

MEAN_CFG = [0.48145466, 0.4578275, 0.40821073]
STD_CFG = [0.26862954, 0.26130258, 0.27577711]
MEAN = np.array(MEAN_CFG, dtype=np.float32)
STD = np.array(STD_CFG, dtype=np.float32)


def grid(w, h):
    y, x = np.mgrid[0:h, 0:w]
    return x.astype(np.int64), y.astype(np.int64)


def rgb_ramp(w, h):
    x, y = grid(w, h)
    return np.stack([(x * 7 + y * 13 + c * 29) % 256 for c in range(3)], axis=-1).astype(np.uint8)


def rgb_noise(w, h):
    x, y = grid(w, h)
    return np.stack([(x * x * 31 + y * y * 17 + x * y * 7 + c * 101) % 256 for c in range(3)], axis=-1).astype(
        np.uint8)


RAMP = "RGB: v(x,y,c) = (x*7 + y*13 + c*29) % 256"
NOISE = "RGB: v(x,y,c) = (x*x*31 + y*y*17 + x*y*7 + c*101) % 256"
ALPHA = "A: a(x,y) = (x*3 + y*5) % 256"


def make_generated():
    """[(name, PIL image to save, formula text)], deterministic."""
    out = []

    def rgb(name, w, h, fn=rgb_ramp, formula=RAMP):
        out.append((name, Image.fromarray(fn(w, h), "RGB"), formula))

    rgb("rgb_224x224.png", 224, 224)
    rgb("rgb_7x300.png", 7, 300)
    rgb("rgb_300x7.png", 300, 7)
    rgb("rgb_225x223.png", 225, 223)
    rgb("rgb_1x1.png", 1, 1)
    rgb("rgb_2x3.png", 2, 3)
    rgb("rgb_448x448.png", 448, 448)
    rgb("rgb_1000x50.png", 1000, 50)
    rgb("rgb_noise_97x61.png", 97, 61, rgb_noise, NOISE)
    rgb("rgb_noise_120x100.png", 120, 100, rgb_noise, NOISE)

    x, y = grid(64, 48)
    rgba = np.concatenate([rgb_ramp(64, 48), ((x * 3 + y * 5) % 256).astype(np.uint8)[..., None]], axis=-1)
    out.append(("rgba_64x48.png", Image.fromarray(rgba, "RGBA"), RAMP + "; " + ALPHA))

    x, y = grid(50, 40)
    la = np.stack([(x * 7 + y * 13) % 256, (x * 3 + y * 5) % 256], axis=-1).astype(np.uint8)
    out.append(("la_50x40.png", Image.fromarray(la, "LA"), "L: (x*7 + y*13) % 256; " + ALPHA))

    x, y = grid(33, 77)
    out.append(("l_33x77.png", Image.fromarray(((x * 7 + y * 13) % 256).astype(np.uint8), "L"),
                "L: (x*7 + y*13) % 256"))

    x, y = grid(40, 30)
    idx = ((x // 4 + y // 3 * 10) % 16).astype(np.uint8)
    palette = []
    for i in range(16):
        palette += [(i * 37) % 256, (i * 91 + 20) % 256, (255 - i * 16) % 256]
    pimg = Image.fromarray(idx, "P")
    pimg.putpalette(palette)
    out.append(("p_40x30.png", pimg, "P: index (x//4 + (y//3)*10) % 16; palette[i] = (i*37 % 256, (i*91+20) % 256, "
                "255 - i*16)"))
    ptr = pimg.copy()
    ptr.info["transparency"] = 5
    out.append(("p_trns_40x30.png", ptr, "as p_40x30.png, with palette index 5 fully transparent (tRNS)"))

    ptr2 = pimg.copy()
    ptr2.info["transparency"] = bytes([(i * 17) % 256 for i in range(16)])
    out.append(("p_trns_alpha_40x30.png", ptr2, "as p_40x30.png, tRNS alpha of palette index i = (i*17) % 256"))

    ramp = rgb_ramp(30, 20)
    key = tuple(int(v) for v in ramp[0, 1])  # the colour of pixel (x=1, y=0)
    rt = Image.fromarray(ramp, "RGB")
    rt.info["transparency"] = key
    out.append(("rgb_trns_30x20.png", rt, RAMP + f"; tRNS colour key {key} (pixel x=1, y=0) is transparent"))

    lt = Image.fromarray(((x[:20, :30] * 7 + y[:20, :30] * 13) % 256).astype(np.uint8), "L")
    lt.info["transparency"] = 13
    out.append(("l_trns_30x20.png", lt, "L: (x*7 + y*13) % 256; tRNS grey key 13 (pixel x=0, y=1) is transparent"))

    x, y = grid(60, 40)
    i16 = (x * 4 + y * 9 + (y // 20) * 30000).astype(np.uint16)
    out.append(("i16_60x40.png", Image.fromarray(i16), "16-bit grey: x*4 + y*9 + (y // 20) * 30000"))

    x, y = grid(31, 17)
    one = ((x + y) % 3 == 0)
    out.append(("bit1_31x17.png", Image.fromarray(one).convert("1"), "1-bit: white iff (x + y) % 3 == 0"))
    return out


def png_bytes(img):
    buf = io.BytesIO()
    kw = {}
    if "transparency" in img.info:
        kw["transparency"] = img.info["transparency"]
    img.save(buf, format="PNG", optimize=False, compress_level=9, **kw)
    return buf.getvalue()


def hf_f32(ip, img):
    px = ip(img, return_tensors="np")["pixel_values"]
    assert px.shape == (1, 3, 224, 224) and px.dtype == np.float32, (px.shape, px.dtype)
    return np.ascontiguousarray(px[0])


def hf_u8(ip, img):
    px = ip(img, return_tensors="np", do_rescale=False, do_normalize=False)["pixel_values"]
    assert px.shape == (1, 3, 224, 224), px.shape
    px = np.asarray(px[0])
    assert np.all(px == np.round(px)) and px.min() >= 0 and px.max() <= 255
    return np.ascontiguousarray(px.astype(np.uint8))


def formula_normalize(u8):
    x = u8.astype(np.float32) / np.float32(255.0)
    return (x - MEAN[:, None, None]) / STD[:, None, None]


def gen_pixels(proc, vers, assets, out_dir):
    from safetensors.numpy import save_file

    ip = proc.image_processor
    tensors = {}
    meta = []
    img_dir = os.path.join(assets, "images")
    for name in sorted(os.listdir(img_dir)):
        with Image.open(os.path.join(img_dir, name)) as im:
            im.load()
            f32 = hf_f32(ip, im)
            tensors[name] = f32
            meta.append({"name": name, "source": "assets", "pil_mode": im.mode, "width": im.width,
                         "height": im.height, "has_f32": True, "f32_key": name})
            u8 = hf_u8(ip, im)
            assert np.array_equal(formula_normalize(u8), f32), name

    gen_dir = os.path.join(out_dir, "generated")
    os.makedirs(gen_dir, exist_ok=True)
    for old in sorted(os.listdir(gen_dir)):  # drop stale outputs of earlier runs (only our own PNGs live here)
        if old.endswith(".png"):
            os.remove(os.path.join(gen_dir, old))
    lut = None
    store_f32 = {"rgb_224x224.png"}
    for name, img, formula in make_generated():
        data = png_bytes(img)
        assert len(data) < 50_000, (name, len(data))
        with open(os.path.join(gen_dir, name), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data))  # what a reader of the PNG sees
        im.load()
        f32 = hf_f32(ip, im)
        u8 = hf_u8(ip, im)
        if name == "rgb_224x224.png":
            src = np.asarray(im).transpose(2, 0, 1)
            assert np.array_equal(u8, src), "224x224 must not be resized"
            lut = np.zeros((3, 256), dtype=np.float32)
            for c in range(3):
                vals = np.unique(src[c])
                assert len(vals) == 256, "the LUT image must hold every byte value"
                for v in vals:
                    pix = f32[c][src[c] == v]
                    assert np.all(pix == pix[0])
                    lut[c, v] = pix[0]
        assert np.array_equal(formula_normalize(u8), f32), name
        key = f"generated/{name}"
        tensors[key] = u8
        rec = {"name": key, "source": "generated", "pil_mode": im.mode, "width": im.width, "height": im.height,
               "u8_key": key, "has_f32": name in store_f32, "formula": formula}
        if name in store_f32:
            tensors[f"generated_f32/{name}"] = f32
            rec["f32_key"] = f"generated_f32/{name}"
        meta.append(rec)
    assert lut is not None
    for key, t in tensors.items():
        if key.startswith("generated/"):
            assert np.array_equal(lut[np.arange(3)[:, None, None], t], formula_normalize(t)), key
    tensors["lut"] = lut
    save_file({k: tensors[k] for k in sorted(tensors)}, os.path.join(out_dir, "pixels.safetensors"))
    write_json(os.path.join(out_dir, "pixels.json"), {"versions": vers, "images": meta, "image_mean": MEAN_CFG,
                                                      "image_std": STD_CFG})
    return len(meta)
