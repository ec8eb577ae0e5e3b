"""Helpers shared by the black-box tests: request building, image encodings,
response checks and prediction matching. No server-specific knowledge beyond
the Roboflow-compatible wire format lives here."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import pickle
import pickletools
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pytest
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

# How long a running server may take to notice a change in its plugins directory (seconds).
RESCAN_WAIT = 15.0


# --------------------------------------------------------------------------- servers and plugins


def key_sha(key: str) -> str:
    """An API key as a tenants file stores it."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def install_plugin(src_dir: Path, name: str, dest: Path, manifest: str | None = None) -> None:
    """Installs `<name>.wasm` and its manifest (the one beside it, or the text `manifest`) into `dest`."""
    if not (src_dir / f"{name}.wasm").is_file():
        pytest.fail(f"{src_dir / name}.wasm is missing: run scripts/setup", pytrace=False)
    shutil.copy(src_dir / f"{name}.wasm", dest / f"{name}.wasm")
    if manifest is None:
        shutil.copy(src_dir / f"{name}.toml", dest / f"{name}.toml")
    else:
        (dest / f"{name}.toml").write_text(manifest)


def wait_for(predicate, what: str, timeout: float = RESCAN_WAIT) -> None:
    """Polls `predicate` until it holds, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    pytest.fail(f"not within {timeout}s: {what}")


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


# --------------------------------------------------------------------------- other tasks
# (classification, instance segmentation, keypoint detection)

SEG = "shapes-seg/1"
POSE = "shapes-pose/1"
CLS = "shapes-cls/1"
CLS_NAMES = {0: "circle", 1: "square", 2: "triangle"}
KEYPOINT_NAMES = ["apex", "base_cw", "base_ccw"]

ROUTE_OD = "/infer/object_detection"
ROUTE_SEG = "/infer/instance_segmentation"
ROUTE_CLS = "/infer/classification"
ROUTE_KP = "/infer/keypoints_detection"


def infer_route(base: str, route: str, model_id: str, image: Any, **params) -> requests.Response:
    """POST <route> (e.g. /infer/classification) with a JSON body."""
    body = {"model_id": model_id, "image": image, **params}
    return requests.post(f"{base}{route}", json=body, timeout=HTTP_TIMEOUT)


def _check_each(image: Any, data: Any, check) -> None:
    if isinstance(image, list):
        assert isinstance(data, list), f"a list of images must give a JSON array, got {type(data).__name__}"
        assert len(data) == len(image), f"{len(image)} images gave {len(data)} responses"
        for item in data:
            check(item)
    else:
        check(data)


def cls_ok(base: str, model_id: str, image: Any, **params):
    r = infer_route(base, ROUTE_CLS, model_id, image, **params)
    assert r.status_code == 200, f"POST {ROUTE_CLS} {model_id}: HTTP {r.status_code}: {r.text[:2000]}"
    data = r.json()
    _check_each(image, data, check_cls_response)
    return data


def seg_ok(base: str, model_id: str, image: Any, route: str = ROUTE_SEG, **params):
    r = infer_route(base, route, model_id, image, **params)
    assert r.status_code == 200, f"POST {route} {model_id}: HTTP {r.status_code}: {r.text[:2000]}"
    data = r.json()
    fmt = params.get("response_mask_format") or "polygon"
    _check_each(image, data, lambda d: check_seg_response(d, fmt))
    return data


def kp_ok(base: str, model_id: str, image: Any, **params):
    r = infer_route(base, ROUTE_KP, model_id, image, **params)
    assert r.status_code == 200, f"POST {ROUTE_KP} {model_id}: HTTP {r.status_code}: {r.text[:2000]}"
    data = r.json()
    _check_each(image, data, check_kp_response)
    return data


def _check_common(data: Any) -> None:
    assert isinstance(data, dict), f"expected a JSON object, got {type(data).__name__}: {str(data)[:500]}"
    for key in ("inference_id", "time", "image", "predictions"):
        assert key in data, f"response lacks {key!r}: {str(data)[:500]}"
    assert isinstance(data["time"], (int, float)) and data["time"] >= 0, data["time"]
    img = data["image"]
    assert isinstance(img, dict) and isinstance(img.get("width"), int) and isinstance(img.get("height"), int), img
    assert img["width"] > 0 and img["height"] > 0, img


def check_cls_response(data: Any) -> None:
    """Single-label classification: predictions [{class, class_id, confidence}] highest
    first, `top` (class name or "") and `confidence` (top score or 0)."""
    _check_common(data)
    preds = data["predictions"]
    assert isinstance(preds, list), f"single-label predictions must be a list: {str(data)[:500]}"
    for p in preds:
        assert set(p) >= {"class", "class_id", "confidence"}, p
        assert isinstance(p["class"], str) and isinstance(p["class_id"], int), p
        assert isinstance(p["confidence"], (int, float)) and 0.0 <= p["confidence"] <= 1.0, p
    confs = [p["confidence"] for p in preds]
    assert confs == sorted(confs, reverse=True), f"predictions not sorted by confidence: {preds}"
    assert "top" in data and "confidence" in data, f"response lacks top/confidence: {str(data)[:500]}"
    assert isinstance(data["top"], str) and isinstance(data["confidence"], (int, float)), data
    if preds:
        assert data["top"] == preds[0]["class"], (data["top"], preds[0])
        assert abs(data["confidence"] - preds[0]["confidence"]) < 1e-6, (data["confidence"], preds[0])
    else:
        assert data["top"] == "" and data["confidence"] == 0, (data["top"], data["confidence"])


def check_multilabel_response(data: Any) -> None:
    """Multi-label classification: predictions {name: {confidence, class_id}}, predicted_classes."""
    _check_common(data)
    preds = data["predictions"]
    assert isinstance(preds, dict), f"multi-label predictions must be an object: {str(data)[:500]}"
    for name, v in preds.items():
        assert isinstance(v, dict) and set(v) >= {"confidence", "class_id"}, (name, v)
        assert isinstance(v["class_id"], int) and isinstance(v["confidence"], (int, float)), (name, v)
    assert isinstance(data.get("predicted_classes"), list), f"lacks predicted_classes: {str(data)[:500]}"
    assert set(data["predicted_classes"]) <= set(preds), data["predicted_classes"]


def check_seg_response(data: Any, fmt: str = "polygon") -> None:
    """OD shape plus `points` (polygon) or `rle` {size: [H, W], counts: str}."""
    check_od_response(data)
    w, h = data["image"]["width"], data["image"]["height"]
    for p in data["predictions"]:
        if fmt == "rle":
            assert "rle" in p, f"rle requested but prediction has no `rle`: {str(p)[:300]}"
            assert "points" not in p, f"rle requested but prediction also has `points`: {str(p)[:300]}"
            rle = p["rle"]
            assert isinstance(rle, dict) and set(rle) >= {"size", "counts"}, rle
            assert list(rle["size"]) == [h, w], f"rle size {rle['size']} is not [height, width] = {[h, w]}"
            assert isinstance(rle["counts"], str), f"rle counts must be a COCO compressed string: {rle}"
        else:
            assert "points" in p, f"prediction lacks `points`: {str(p)[:300]}"
            assert "rle" not in p, f"polygon requested but prediction has `rle`: {str(p)[:300]}"
            pts = p["points"]
            assert isinstance(pts, list), pts
            for q in pts:
                assert isinstance(q, dict) and isinstance(q.get("x"), (int, float)) \
                    and isinstance(q.get("y"), (int, float)), f"bad point {q!r}"
                assert -1.0 <= q["x"] <= w + 1.0 and -1.0 <= q["y"] <= h + 1.0, (q, w, h)


def check_kp_response(data: Any) -> None:
    """OD shape plus keypoints [{x, y, confidence, class_id, class}] per prediction."""
    check_od_response(data)
    for p in data["predictions"]:
        assert isinstance(p.get("keypoints"), list), f"prediction lacks `keypoints`: {str(p)[:300]}"
        for k in p["keypoints"]:
            assert set(k) >= {"x", "y", "confidence", "class_id", "class"}, k
            for key in ("x", "y", "confidence"):
                assert isinstance(k[key], (int, float)), (key, k)
            assert isinstance(k["class_id"], int) and isinstance(k["class"], str), k
            assert 0.0 <= k["confidence"] <= 1.0, k
        ids = [k["class_id"] for k in p["keypoints"]]
        assert len(ids) == len(set(ids)), f"keypoint class_id repeated: {ids}"


# --------------------------------------------------------------------------- masks

def rle_counts_from_string(s: str) -> list:
    """COCO compressed RLE counts string -> run lengths (pycocotools' rleFrString)."""
    counts, p, m = [], 0, 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"bad character {s[p]!r} in RLE counts at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
            if more and p >= len(s):
                raise ValueError("RLE counts string ends inside a number")
        if m > 2:
            x += counts[m - 2]
        counts.append(x)
        m += 1
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """{"size": [h, w], "counts": str | list} -> HxW bool mask (column-major runs,
    starting with background). Raises ValueError if the runs do not cover h*w."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    runs = rle_counts_from_string(counts) if isinstance(counts, str) else list(counts)
    if any(r < 0 for r in runs):
        raise ValueError(f"negative run length in RLE: {runs[:20]}")
    if sum(runs) != h * w:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, size {h}x{w} has {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T.copy()


def polygon_mask(points, height: int, width: int) -> np.ndarray:
    """Rasterise a polygon ([[x, y], ...] or [{"x","y"}, ...], original pixels) at
    height x width with cv2.fillPoly (1/16 px sub-pixel vertices). Fewer than 3 points
    give an empty mask."""
    import cv2

    pts = [(q["x"], q["y"]) if isinstance(q, dict) else (q[0], q[1]) for q in points]
    mask = np.zeros((height, width), np.uint8)
    if len(pts) >= 3:
        arr = np.round(np.asarray(pts, dtype=np.float64) * 16).astype(np.int32)
        cv2.fillPoly(mask, [arr], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(inter) / float(union)


def pair_by_box(a: list, b: list, iou_min: float = 0.99) -> list:
    """Pair two prediction lists of the same image (same class, box IoU >= iou_min),
    greedily, best IoU first. Returns [(pa, pb)]; unpaired predictions are left out."""
    cands = []
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            if p["class"] == q["class"]:
                v = iou(pred_xyxy(p), pred_xyxy(q))
                if v >= iou_min:
                    cands.append((v, i, j))
    cands.sort(key=lambda t: -t[0])
    used_a, used_b, pairs = set(), set(), []
    for v, i, j in cands:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((a[i], b[j]))
    return pairs


# --------------------------------------------------------------------------- comparisons (other tasks)

def same_cls(a, b, label):
    """Two single-label classification responses for the same pixels agree."""
    assert (a["image"], a["top"]) == (b["image"], b["top"]), \
        f"{label}: {a['image']}/{a['top']!r} vs {b['image']}/{b['top']!r}"
    pa = [(p["class"], p["class_id"]) for p in a["predictions"]]
    pb = [(p["class"], p["class_id"]) for p in b["predictions"]]
    assert pa == pb, f"{label}: classes differ: {pa} vs {pb}"
    for p, q in zip(a["predictions"], b["predictions"]):
        assert abs(p["confidence"] - q["confidence"]) <= 1e-4, f"{label}: {p} vs {q}"


def same_seg(a, b, label, iou_min=0.98):
    """Same detections (assert_same) and, per detection, masks (polygon or RLE) with IoU >= iou_min."""
    assert_same(a, b, label)
    h, w = a["image"]["height"], a["image"]["width"]
    pairs = pair_by_box(a["predictions"], b["predictions"])
    assert len(pairs) == len(a["predictions"]), f"{label}: boxes do not pair up"
    for p, q in pairs:
        ma = polygon_mask(p["points"], h, w) if "points" in p else rle_decode(p["rle"])
        mb = polygon_mask(q["points"], h, w) if "points" in q else rle_decode(q["rle"])
        if ("points" in p) == ("points" in q):
            v = mask_iou(ma, mb)
        else:  # a polygon raster vs a pixel mask: see banded_mask_iou
            v = banded_mask_iou(mb, ma, outline_band_px(w, h)) if "points" in p else \
                banded_mask_iou(ma, mb, outline_band_px(w, h))
        assert v >= iou_min, f"{label}: masks differ (IoU {v:.3f}) for {summarize(p)}"


def same_kp(a, b, label):
    """Same detections (assert_same) and the same keypoints (0.05 px, 1e-4 confidence)."""
    assert_same(a, b, label)
    pairs = pair_by_box(a["predictions"], b["predictions"])
    assert len(pairs) == len(a["predictions"]), f"{label}: boxes do not pair up"
    for p, q in pairs:
        kp = {k["class_id"]: k for k in p["keypoints"]}
        kq = {k["class_id"]: k for k in q["keypoints"]}
        assert sorted(kp) == sorted(kq), f"{label}: keypoint sets differ: {sorted(kp)} vs {sorted(kq)}"
        for i in kp:
            assert kp[i]["class"] == kq[i]["class"], (kp[i], kq[i])
            assert abs(kp[i]["x"] - kq[i]["x"]) <= 0.05 and abs(kp[i]["y"] - kq[i]["y"]) <= 0.05, \
                f"{label}: keypoint {i} moved: {kp[i]} vs {kq[i]}"
            assert abs(kp[i]["confidence"] - kq[i]["confidence"]) <= 1e-4, (kp[i], kq[i])


def outline_band_px(width: int, height: int, input_size: int = 320) -> int:
    """One model-input pixel in original pixels (at least 1) for a letterboxed image."""
    import math

    return max(1, math.ceil(1.0 / min(input_size / width, input_size / height)))


def banded_mask_iou(mask: np.ndarray, poly: np.ndarray, band_px: int) -> float:
    """IoU of a pixel mask and a polygon raster, not counting pixels within band_px
    of the polygon raster's outline. A polygon that traces boundary-pixel centres at
    the model's input scale and a pixel mask at the original scale legitimately
    disagree along that outline (by up to about one input pixel); the band keeps
    that out of the comparison while a wrong position, scale or pixel order still
    shows."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * band_px + 1, 2 * band_px + 1))
    p8 = poly.astype(np.uint8)
    band = cv2.dilate(p8, k).astype(bool) & ~cv2.erode(p8, k).astype(bool)
    return mask_iou(mask & ~band, poly & ~band)
