"""Regenerates the committed seed corpora in seeds/<target>/ (a few KB in all).

Run from this folder with the test venv (Pillow, numpy): ../../.venv/bin/python make_seeds.py
Seeds are tiny valid inputs of every format and variant the decoders handle, so the fuzzer
starts from deep inside each parser instead of guessing magic numbers.
"""
import io
import os
import pickle

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, "seeds", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def encode(img, fmt, **opts):
    out = io.BytesIO()
    img.save(out, fmt, **opts)
    return out.getvalue()


def pixels(shape):
    n = int(np.prod(shape))
    return ((np.arange(n) * 37 + 11) % 256).astype(np.uint8).reshape(shape)


rgb = Image.fromarray(pixels((6, 8, 3)), "RGB")
exif = Image.Exif()
exif[0x0112] = 6  # orientation: rotate 90 degrees
images = {
    "baseline.jpg": encode(rgb, "JPEG", quality=50),
    "progressive.jpg": encode(rgb, "JPEG", quality=50, progressive=True),
    "gray.jpg": encode(rgb.convert("L"), "JPEG", quality=50),
    "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=50),
    "subsampled420.jpg": encode(rgb, "JPEG", quality=50, subsampling=2),
    "exif6.jpg": encode(rgb, "JPEG", quality=50, exif=exif.tobytes()),
    "rgb.png": encode(rgb, "PNG"),
    "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
    "gray.png": encode(rgb.convert("L"), "PNG"),
    "palette.png": encode(rgb.quantize(4), "PNG"),
    "gray16.png": encode(rgb.convert("I;16"), "PNG"),
    "interlaced.png": encode(rgb, "PNG", interlace=1),
    "exif6.png": encode(rgb, "PNG", exif=exif.tobytes()),
    "rgb.bmp": encode(rgb, "BMP"),
    "palette.bmp": encode(rgb.quantize(4), "BMP"),
    "rgb.gif": encode(rgb, "GIF"),
    "lossy.webp": encode(rgb, "WEBP", quality=50),
    "lossless.webp": encode(rgb.convert("RGBA"), "WEBP", lossless=True),
    "rgb.tiff": encode(rgb, "TIFF"),
    "lzw.tiff": encode(rgb, "TIFF", compression="tiff_lzw"),
}
for name, data in images.items():
    write("decode_image", name, data)

arrays = {
    "rgb": pixels((3, 4, 3)),
    "gray": pixels((2, 5)),
    "rgba": pixels((2, 2, 4)),
    "hwc1": pixels((2, 3, 1)),
    "fortran": np.asfortranarray(pixels((3, 4, 3))),
    "strided": pixels((3, 8, 3))[:, ::2],
}
for name, array in arrays.items():
    for protocol in (2, 3, 4, 5):
        write("read_pickle", f"{name}.p{protocol}", pickle.dumps(array, protocol=protocol))
    out = io.BytesIO()
    np.save(out, array)
    write("read_npy", f"{name}.npy", out.getvalue())

# Request bodies as clients send them: one image or a list, every image type and spelling.
import base64
import json


def b64(data):
    return base64.b64encode(data).decode()


def body(image, **extra):
    return json.dumps({"model_id": "m/1", "image": image, **extra}).encode()


jpeg, png = images["baseline.jpg"], images["rgb.png"]
npy = io.BytesIO()
np.save(npy, arrays["rgb"])
requests = {
    "one-base64.json": body({"type": "base64", "value": b64(jpeg)}, confidence=0.5),
    "data-uri.json": body({"type": "base64", "value": "data:image/png;base64," + b64(png)}),
    "upper-case-type.json": body({"type": "BASE64", "value": b64(png)}),
    "numpy-pickle.json": body({"type": "numpy", "value": b64(pickle.dumps(arrays["rgb"], protocol=4))}),
    "numpy-npy.json": body({"type": "numpy", "value": b64(npy.getvalue())}),
    "url.json": body({"type": "url", "value": "https://example.com/a.jpg"}),
    "list.json": body([{"type": "base64", "value": b64(jpeg)}, {"type": "base64", "value": b64(png)},
                       {"type": "url", "value": "http://example.com/b.png"}]),
    "too-many.json": body([{"type": "url", "value": "x"}] * 9),
    "unknown-type.json": body({"type": "file", "value": "/etc/passwd"}),
    "missing-value.json": body({"type": "base64"}),
}
for name, data in requests.items():
    write("parse_request", name, data)
