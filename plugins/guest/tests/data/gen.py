"""Regenerates the resize parity data in this folder (see README.md).

Run from the repository root:  python plugins/guest/tests/data/gen.py
Needs numpy and opencv-python-headless (the references were made with OpenCV 5.0.0).
"""
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "..", "..", "tests", "fixtures", "images", "photos")


def save(name, arr):
    np.save(os.path.join(HERE, name), np.ascontiguousarray(arr, dtype=np.uint8))


def rgb(path):
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


rng = np.random.default_rng(20251127)
src = rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)
save("rand_97x61x3.npy", src)
for w, h in [(40, 25), (120, 75), (48, 30), (23, 13), (320, 20)]:
    save(f"rand_97x61x3_to_{w}x{h}.npy", cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR))

gray = np.ascontiguousarray(src[..., 1])
save("rand_97x61x1_to_33x77.npy", cv2.resize(gray, (33, 77), interpolation=cv2.INTER_LINEAR)[..., None])

src4 = rng.integers(0, 256, (17, 31, 4), dtype=np.uint8)
save("rand_31x17x4.npy", src4)
for w, h in [(62, 34), (50, 9)]:
    save(f"rand_31x17x4_to_{w}x{h}.npy", cv2.resize(src4, (w, h), interpolation=cv2.INTER_LINEAR))

# Bands of real photos (RGB, decoded like Ultralytics does), to check the letterboxed
# rows that only depend on them against the committed Ultralytics input tensors.
save("zidane_rows_320_344.npy", rgb(os.path.join(FIX, "zidane.jpg"))[320:344])
save("astronaut_rows_200_224.npy", rgb(os.path.join(FIX, "astronaut.png"))[200:224])

# Two channels, exact 2x down-scale: cv2 takes its INTER_AREA path, which rounds half to even.
src2 = rng.integers(0, 256, (14, 20, 2), dtype=np.uint8)
save("rand_20x14x2.npy", src2)
save("rand_20x14x2_to_10x7.npy", cv2.resize(src2, (10, 7), interpolation=cv2.INTER_LINEAR))
