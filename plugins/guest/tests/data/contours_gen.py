"""Regenerates contours_cv2.txt, the contour-tracing parity data for src/contour.rs.

Run from the repository root:  python plugins/guest/tests/data/contours_gen.py
Needs numpy, opencv-python-headless (5.0.0 made the committed file) and the ultralytics
package source (8.4.190; `pip install --no-deps ultralytics==8.4.190`, torch is not needed:
only `min_index` and `merge_multi_segment` are taken from ultralytics/data/converter.py).

For each mask the file holds:
    mask W H
    <H rows of 0/1>
    contours K
    <K lines: the vertices of cv2.findContours(m, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE), "x,y x,y ...">
    merged
    <one line: ultralytics ops.masks2segments(m[None])[0] (strategy "all"), "x,y ...", or "-" if empty>
"""
import ast
import importlib.util
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def ultralytics_merge():
    """min_index and merge_multi_segment from the installed ultralytics, without importing torch."""
    package = importlib.util.find_spec("ultralytics").submodule_search_locations[0]  # found, not imported
    path = os.path.join(package, "data", "converter.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("min_index", "merge_multi_segment")]
    scope = {"np": np}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), path, "exec"), scope)
    return scope["merge_multi_segment"]


merge_multi_segment = ultralytics_merge()


def masks2segments_all(m):
    """ultralytics.utils.ops.masks2segments(strategy="all") for one mask."""
    c = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not c:
        return np.zeros((0, 2))
    if len(c) > 1:
        return np.concatenate(merge_multi_segment([x.reshape(-1, 2) for x in c]))
    return c[0].reshape(-1, 2)


def rows(*lines):
    return np.array([[int(ch) for ch in line] for line in lines], dtype=np.uint8)


cases = [
    rows("00000", "01110", "01110", "01110", "00000"),  # square
    rows("010", "000"),  # single pixel
    rows("1"),
    rows("111"),  # a line on the border
    rows("1", "1", "1"),
    rows("11", "11"),  # touching every border
    rows("1000", "1000", "1000", "1111"),  # L
    rows("0000000", "0110000", "0110011", "0000011", "1100000"),  # three blobs
    rows("11111", "10001", "10101", "10001", "11111"),  # hole with a blob inside (dropped)
    rows("1111111", "1000001", "1011101", "1010101", "1011101", "1000001", "1111111"),  # blob with its own hole
    rows("10000", "01000", "00100", "00010", "00001"),  # diagonal, 8-connected
    rows("01000", "10100", "01010", "00101", "00010"),  # diagonal zigzag
    rows("0110", "1001", "1001", "0110"),  # ring
    rows("101", "010", "101"),  # X
    rows("11011", "11011", "00000", "11011", "11011"),  # four blocks
    rows("1111", "0001", "1101", "1001", "1111"),  # spiral-ish with a notch
]
rng = np.random.default_rng(20261127)
for _ in range(24):
    h, w = rng.integers(3, 24, size=2)
    m = (rng.random((h, w)) < rng.uniform(0.2, 0.7)).astype(np.uint8)
    cases.append(m)
for _ in range(8):
    # Blobby masks: thresholded smooth noise.
    h, w = rng.integers(16, 48, size=2)
    noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    cases.append((noise > np.quantile(noise, 0.55)).astype(np.uint8))

with open(os.path.join(HERE, "contours_cv2.txt"), "w", encoding="ascii") as f:
    for m in cases:
        m = np.ascontiguousarray(m)
        f.write(f"mask {m.shape[1]} {m.shape[0]}\n")
        for r in m:
            f.write("".join(str(int(v)) for v in r) + "\n")
        contours = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        f.write(f"contours {len(contours)}\n")
        for c in contours:
            f.write(" ".join(f"{x},{y}" for x, y in c.reshape(-1, 2)) + "\n")
        merged = masks2segments_all(m)
        f.write("merged\n")
        f.write((" ".join(f"{int(x)},{int(y)}" for x, y in merged) if len(merged) else "-") + "\n")
print(len(cases), "masks")
