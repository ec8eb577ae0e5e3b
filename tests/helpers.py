"""Helpers shared by the black-box tests: request building, image encodings,
response checks and prediction matching. No server-specific knowledge beyond
the Roboflow-compatible wire format lives here."""

from __future__ import annotations

import base64
import io
import json
import pickle
import pickletools
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import requests
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
DEV_IMAGES = FIXTURES / "images" / "dev"
PHOTOS = FIXTURES / "images" / "photos"
REFERENCE = FIXTURES / "reference"

# Per-request timeout (seconds). Generous: the first request loads a model.
HTTP_TIMEOUT = 120

SHAPES = "shapes-detect/1"
SHAPES_STATIC = "shapes-detect-static/1"
NUDENET = "nudenet/1"
SHAPES_NAMES = {0: "circle", 1: "square", 2: "triangle"}

# The settings the golden references were generated with.
REF_PARAMS = {"confidence": 0.25, "iou_threshold": 0.45, "max_detections": 300}

# Lines printed in pytest's terminal summary (e.g. the golden match rates).
SUMMARY_LINES: list = []

PREDICTION_KEYS = {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"}


# --------------------------------------------------------------------------- encodings

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def img_b64(data: bytes, prefix: str = "") -> dict:
    return {"type": "base64", "value": prefix + b64(data)}


def img_url(url: str) -> dict:
    return {"type": "url", "value": url}


def img_numpy(value_b64: str) -> dict:
    return {"type": "numpy", "value": value_b64}


def decode_rgb(path_or_bytes) -> np.ndarray:
    """Decode like the references do (OpenCV IMREAD_COLOR semantics): EXIF
    orientation applied, alpha dropped without compositing, grey replicated to 3
    channels. Returns HxWx3 uint8 RGB."""
    data = Path(path_or_bytes).read_bytes() if isinstance(path_or_bytes, (str, Path)) else path_or_bytes
    im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    if im.mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def rgb_to_bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def numpy1_style_pickle(data: bytes) -> bytes:
    """Rewrite a numpy-2 pickle so it names `numpy.core.*` like numpy 1.x clients
    (the seed's clients) produce. Frames are dropped (they are optional)."""
    out = bytearray()
    ops = list(pickletools.genops(data))
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        raw = data[pos:end]
        if op.name == "FRAME":
            continue
        if op.name == "GLOBAL" and arg.startswith("numpy._core"):
            module, name = arg.split(" ", 1)
            raw = b"c" + module.replace("numpy._core", "numpy.core").encode() + b"\n" + name.encode() + b"\n"
        elif op.name == "SHORT_BINUNICODE" and arg.startswith("numpy._core"):
            s = arg.replace("numpy._core", "numpy.core").encode()
            raw = b"\x8c" + bytes([len(s)]) + s
        out += raw
    return bytes(out)


def png_bomb(width: int = 40000, height: int = 40000) -> bytes:
    """A tiny, structurally valid-looking PNG whose IHDR declares width x height
    8-bit RGB. Only a few rows of pixel data are present (zlib-compressed zeros),
    so a decoder that trusts the header would try to allocate width*height*3 bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * ((1 + width * 3) * 4), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def npy_bomb(shape=(40000, 40000, 3)) -> bytes:
    """An .npy file whose header declares a huge uint8 array but carries 1 KiB of data."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 1024


# --------------------------------------------------------------------------- requests

def infer(base: str, model_id: str, image: Any, **params) -> requests.Response:
    """POST /infer/object_detection with a JSON body."""
    body = {"model_id": model_id, "image": image, **params}
    return requests.post(f"{base}/infer/object_detection", json=body, timeout=HTTP_TIMEOUT)


def infer_ok(base: str, model_id: str, image: Any, **params):
    r = infer(base, model_id, image, **params)
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:2000]}"
    data = r.json()
    if isinstance(image, list):
        assert isinstance(data, list), f"a list of images must give a JSON array, got {type(data).__name__}"
        assert len(data) == len(image)
        for item in data:
            check_od_response(item)
    else:
        check_od_response(data)
    return data


def check_ok(r: requests.Response) -> dict:
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:2000]}"
    data = r.json()
    check_od_response(data)
    return data


def check_od_response(data: Any) -> None:
    """Validate the object-detection response shape."""
    assert isinstance(data, dict), f"expected a JSON object, got {type(data).__name__}: {str(data)[:500]}"
    for key in ("inference_id", "time", "image", "predictions"):
        assert key in data, f"response lacks {key!r}: {str(data)[:500]}"
    assert isinstance(data["time"], (int, float)) and data["time"] >= 0
    img = data["image"]
    assert isinstance(img, dict) and isinstance(img.get("width"), int) and isinstance(img.get("height"), int), img
    assert img["width"] > 0 and img["height"] > 0
    assert isinstance(data["predictions"], list)
    for p in data["predictions"]:
        missing = PREDICTION_KEYS - set(p)
        assert not missing, f"prediction lacks {sorted(missing)}: {p}"
        for k in ("x", "y", "width", "height", "confidence"):
            assert isinstance(p[k], (int, float)), (k, p)
        assert isinstance(p["class"], str) and isinstance(p["class_id"], int), p
        assert isinstance(p["detection_id"], str) and p["detection_id"], p
        assert 0.0 <= p["confidence"] <= 1.0, p
        assert p["width"] >= 0 and p["height"] >= 0, p
        # The box lies inside the image (small slack for float rounding).
        slack = 0.51
        assert p["x"] - p["width"] / 2 >= -slack and p["x"] + p["width"] / 2 <= img["width"] + slack, (p, img)
        assert p["y"] - p["height"] / 2 >= -slack and p["y"] + p["height"] / 2 <= img["height"] + slack, (p, img)


def error_message(r: requests.Response) -> str:
    """The error text of a JSON error body: `message`, or FastAPI-style `detail`."""
    ctype = r.headers.get("content-type", "")
    assert "json" in ctype.lower(), f"error body is not JSON (content-type {ctype!r}): {r.text[:500]}"
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"error body does not parse as JSON: {r.text[:500]}")
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    msg = body.get("message")
    if msg is None and "detail" in body:
        msg = body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])
    assert isinstance(msg, str) and msg.strip(), f"error body has no non-empty message/detail: {body!r}"
    return msg


def assert_error(r: requests.Response, status: int, allow_detail: bool = False) -> str:
    assert r.status_code == status, f"expected HTTP {status}, got {r.status_code}: {r.text[:1000]}"
    msg = error_message(r)
    if not allow_detail:
        assert isinstance(r.json().get("message"), str), f"expected a `message` field: {r.text[:500]}"
    return msg


# --------------------------------------------------------------------------- geometry & matching

def pred_xyxy(p: dict) -> tuple:
    return (p["x"] - p["width"] / 2, p["y"] - p["height"] / 2,
            p["x"] + p["width"] / 2, p["y"] + p["height"] / 2)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:
        return 1.0 if a == b else 0.0
    return inter / union


def match_golden(ref_dets: list, preds: list, threshold: float = 0.25,
                 iou_min: float = 0.95, conf_tol: float = 0.01):
    """Greedy one-to-one matching, best IoU first. A pair is eligible when the
    class names agree, IoU >= iou_min and |dconf| <= conf_tol.

    ref_dets: reference detections ({"class_name","confidence","xyxy"}).
    preds: server predictions (centre x,y,width,height).
    Returns (matched pairs [(ref, pred, iou)], unmatched refs, unmatched preds,
    intolerable refs, intolerable preds); an unmatched detection is tolerable
    only if its confidence is within conf_tol of the threshold."""
    cands = []
    for i, r in enumerate(ref_dets):
        for j, p in enumerate(preds):
            if r["class_name"] != p["class"]:
                continue
            if abs(r["confidence"] - p["confidence"]) > conf_tol:
                continue
            v = iou(tuple(r["xyxy"]), pred_xyxy(p))
            if v >= iou_min:
                cands.append((v, i, j))
    cands.sort(key=lambda t: -t[0])
    used_r, used_p, pairs = set(), set(), []
    for v, i, j in cands:
        if i in used_r or j in used_p:
            continue
        used_r.add(i)
        used_p.add(j)
        pairs.append((ref_dets[i], preds[j], v))
    miss_r = [r for i, r in enumerate(ref_dets) if i not in used_r]
    miss_p = [p for j, p in enumerate(preds) if j not in used_p]
    bad_r = [r for r in miss_r if abs(r["confidence"] - threshold) > conf_tol]
    bad_p = [p for p in miss_p if abs(p["confidence"] - threshold) > conf_tol]
    return pairs, miss_r, miss_p, bad_r, bad_p


def same_predictions(a: list, b: list, width: int, height: int,
                     box_rel_tol: float = 1e-3, conf_tol: float = 1e-4) -> list:
    """Compare two prediction lists for the same pixels. Returns a list of
    human-readable differences (empty when equal)."""
    tol = box_rel_tol * max(width, height)
    diffs = []
    if len(a) != len(b):
        diffs.append(f"count differs: {len(a)} vs {len(b)}")
    unused = list(range(len(b)))
    for p in a:
        hit = None
        for j in unused:
            q = b[j]
            if (p["class"] == q["class"] and p["class_id"] == q["class_id"]
                    and abs(p["confidence"] - q["confidence"]) <= conf_tol
                    and all(abs(p[k] - q[k]) <= tol for k in ("x", "y", "width", "height"))):
                hit = j
                break
        if hit is None:
            diffs.append(f"no counterpart for {summarize(p)}")
        else:
            unused.remove(hit)
    for j in unused:
        diffs.append(f"extra {summarize(b[j])}")
    return diffs


def assert_same(a: dict, b: dict, label: str = "") -> None:
    assert (a["image"]["width"], a["image"]["height"]) == (b["image"]["width"], b["image"]["height"]), \
        f"{label}: image size differs: {a['image']} vs {b['image']}"
    diffs = same_predictions(a["predictions"], b["predictions"], a["image"]["width"], a["image"]["height"])
    assert not diffs, f"{label}: predictions differ:\n  " + "\n  ".join(diffs)


def summarize(p: dict) -> str:
    return (f"{p['class']} conf={p['confidence']:.4f} "
            f"box=({p['x']:.1f},{p['y']:.1f},{p['width']:.1f},{p['height']:.1f})")


def summarize_ref(r: dict) -> str:
    return f"{r['class_name']} conf={r['confidence']:.4f} xyxy={r['xyxy']}"


def load_reference(rel: str) -> dict:
    """tests/fixtures/reference/<rel> → {file name: reference image entry}."""
    data = json.loads((REFERENCE / rel).read_text())
    return {e["file"]: e for e in data["images"]}


def image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def chunks(seq: Iterable, n: int):
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
