"""Regenerates the Pillow resize parity data in this folder (see README.md).

Run from the repository root:  python plugins/guest/tests/data/gen_pil.py
Needs numpy and Pillow (made with Pillow 13.0.0). The sources are `rand_97x61x3.npy`
(made by gen.py) and "formula" images computed from their coordinates, which the Rust
tests compute the same way (see `formula_image` in src/pil_resize.rs), so only the
results are committed.
"""
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, arr):
    np.save(os.path.join(HERE, name), np.ascontiguousarray(arr, dtype=np.uint8))


def formula_image(w, h):
    """R, G, B = (x*x + 3*y*y + x*y*(c+1) + 17*c) mod 256: textured, with sharp edges."""
    y, x, c = np.meshgrid(np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64), np.arange(3), indexing="ij")
    return ((x * x + 3 * y * y + x * y * (c + 1) + 17 * c) % 256).astype(np.uint8)


def pil_resize(arr, w, h):
    return np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))


def resize_crop(arr, s):
    """torchvision Resize(s) + CenterCrop(s) on a PIL image, as Ultralytics classify_transforms runs them."""
    img = Image.fromarray(arr)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = s, int(s * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    left = int(round((new_w - s) / 2.0))
    top = int(round((new_h - s) / 2.0))
    return np.asarray(img.crop((left, top, left + s, top + s)))


src = np.load(os.path.join(HERE, "rand_97x61x3.npy"))
# Pillow 13 runs the vertical pass first when the image loses more than twice as many rows
# as columns (320x20, 90x20, 80x26; 80x27 is right at the boundary: horizontal first).
for w, h in [(40, 25), (23, 13), (120, 75), (97, 30), (50, 61), (5, 3), (320, 20), (90, 20), (80, 27), (80, 26)]:
    save(f"pil_97x61x3_to_{w}x{h}.npy", pil_resize(src, w, h))
for s in [32, 80]:
    save(f"pil_crop_97x61x3_s{s}.npy", resize_crop(src, s))

big = formula_image(400, 300)
save("pil_formula_400x300_to_36x27.npy", pil_resize(big, 36, 27))
save("pil_crop_formula_400x300_s64.npy", resize_crop(big, 64))
save("pil_crop_formula_300x400_s48.npy", resize_crop(formula_image(300, 400), 48))
# Tall: 120x400 -> 40x133, vertical pass first.
save("pil_crop_formula_120x400_s40.npy", resize_crop(formula_image(120, 400), 40))
