"""Annotated pictures: `visualize_predictions` on the JSON routes (a base64 JPEG as
`visualization`) and `format=image` / `image_and_json` on the legacy route, drawn from real
models' predictions. Colours are checked against the documented per-class palette."""

from __future__ import annotations

import base64
import io
import json
import shutil

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from helpers import (CLS, DEV_IMAGES, HTTP_TIMEOUT, POSE, ROUTE_CLS, ROUTE_KP, ROUTE_OD, ROUTE_SEG, SEG, SHAPES,
                     assert_error, decode_rgb, img_b64, infer_route, polygon_mask, pred_xyxy)

IMG_MULTI = DEV_IMAGES / "02_multi_640x480.jpg"
IMG_MULTI2 = DEV_IMAGES / "13_multi_300x200.png"
IMG_POSE = DEV_IMAGES / "16_pose_640x480.jpg"
IMG_SINGLE = DEV_IMAGES / "21_single_500x375.jpg"

# The server's per-class palette (supervision's default), indexed by class_id modulo 21.
PALETTE = ["A351FB", "FF4040", "FFA1A0", "FF7633", "FFB633", "D1D435", "4CFB12", "94CF1A", "40DE8A", "1B9640",
           "00D6C1", "2E9CAA", "00C4FF", "364797", "6675FF", "0019EF", "863AFF", "530087", "CD3AFF", "FF97CA",
           "FF39C9"]
MASK_ALPHA = 0.4
# JPEG noise allowed on a colour channel.
TOLERANCE = 40


def color(class_id: int) -> np.ndarray:
    h = PALETTE[class_id % len(PALETTE)]
    return np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.int32)


def close(pixels: np.ndarray, rgb: np.ndarray, tol: int = TOLERANCE) -> np.ndarray:
    """Per pixel: every channel within `tol` of `rgb`."""
    return (np.abs(pixels.astype(np.int32) - rgb) <= tol).all(axis=-1)


def picture(data) -> np.ndarray:
    """A `visualization` (base64) or a JPEG body as HxWx3 RGB."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    assert raw[:2] == b"\xff\xd8", "not a JPEG"
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(np.int32)


def visualize(server, route, model_id, path, **params) -> dict:
    r = infer_route(server, route, model_id, img_b64(path.read_bytes()), visualize_predictions=True, **params)
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:1000]}"
    data = r.json()
    assert isinstance(data.get("visualization"), str), list(data)
    return data


def box_edges(p: dict, width: int, height: int):
    """Pixel coordinates along the middle half of the box's left and right edges."""
    x0, y0, x1, y1 = (int(round(v)) for v in pred_xyxy(p))
    ys = np.arange(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4)
    for x in (x0, x1):
        if 0 <= x < width:
            yield from ((x, y) for y in ys if 0 <= y < height)


def test_not_requested_means_no_visualization(server):
    r = infer_route(server, ROUTE_OD, SHAPES, img_b64(IMG_MULTI.read_bytes()))
    assert r.status_code == 200 and "visualization" not in r.json()
    r = infer_route(server, ROUTE_OD, SHAPES, img_b64(IMG_MULTI.read_bytes()), visualize_predictions=False)
    assert r.status_code == 200 and "visualization" not in r.json()


def test_boxes_take_their_class_colour(server):
    data = visualize(server, ROUTE_OD, SHAPES, IMG_MULTI, visualization_stroke_width=4, confidence=0.5)
    vis, original = picture(data["visualization"]), decode_rgb(IMG_MULTI).astype(np.int32)
    assert vis.shape == original.shape == (480, 640, 3)
    assert data["predictions"], "expected detections on the test image"
    assert list(data)[0] == "visualization", "Roboflow puts `visualization` first"
    for p in data["predictions"]:
        points = list(box_edges(p, 640, 480))
        xs, ys = np.array([q[0] for q in points]), np.array([q[1] for q in points])
        want = color(p["class_id"])
        drawn = close(vis[ys, xs], want).mean()
        before = close(original[ys, xs], want).mean()
        assert drawn > 0.9, f"{p['class']} box edge: only {drawn:.0%} of its pixels carry #{PALETTE[p['class_id']]}"
        assert before < 0.5, f"{p['class']} box edge already had the class colour ({before:.0%})"


def test_labels_only_change_the_label_area(server):
    params = dict(visualization_stroke_width=2, confidence=0.5)
    plain = visualize(server, ROUTE_OD, SHAPES, IMG_MULTI, visualization_labels=False, **params)
    labelled = visualize(server, ROUTE_OD, SHAPES, IMG_MULTI, visualization_labels=True, **params)
    a, b = picture(plain["visualization"]), picture(labelled["visualization"])
    changed = np.abs(a - b).max(axis=-1) > TOLERANCE
    assert changed.sum() > 200, "labels drew (almost) nothing"
    # Every changed pixel lies in a band around some box's top edge (the label sits on it).
    near_label = np.zeros_like(changed)
    for p in labelled["predictions"]:
        top = int(round(pred_xyxy(p)[1]))
        near_label[max(0, top - 40):top + 40, :] = True
    stray = changed & ~near_label
    assert not stray.any(), f"{stray.sum()} pixels changed away from every label, e.g. {np.argwhere(stray)[:5]}"


def test_segmentation_masks_are_tinted(server):
    data = visualize(server, ROUTE_SEG, SEG, IMG_MULTI, confidence=0.5)
    vis, original = picture(data["visualization"]), decode_rgb(IMG_MULTI).astype(np.int32)
    assert vis.shape == original.shape
    assert data["predictions"], "expected instances on the test image"
    covered = np.zeros(vis.shape[:2], bool)
    for p in data["predictions"]:
        mask = polygon_mask(p["points"], 480, 640)
        covered |= mask
        inner = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        if inner.sum() < 50:
            continue
        tinted = original[inner] * (1 - MASK_ALPHA) + color(p["class_id"]) * MASK_ALPHA
        to_tint = np.abs(vis[inner] - tinted).mean()
        to_original = np.abs(vis[inner] - original[inner]).mean()
        assert to_tint < 12 and to_tint < to_original, \
            f"{p['class']}: inside differs from the tint by {to_tint:.1f}, from the original by {to_original:.1f}"
    # Far from every mask and box the picture is the input.
    for p in data["predictions"]:
        x0, y0, x1, y1 = (int(round(v)) for v in pred_xyxy(p))
        covered[max(0, y0 - 50):y1 + 50, max(0, x0 - 50):x1 + 50] = True
    assert (~covered).sum() > 1000
    assert np.abs(vis[~covered] - original[~covered]).mean() < 4


def test_rle_masks_draw_like_polygons(server):
    polygons = visualize(server, ROUTE_SEG, SEG, IMG_MULTI, confidence=0.5)
    rle = visualize(server, ROUTE_SEG, SEG, IMG_MULTI, confidence=0.5, response_mask_format="rle")
    a, b = picture(polygons["visualization"]), picture(rle["visualization"])
    tinted = np.abs(a - decode_rgb(IMG_MULTI)).max(axis=-1) > 20
    assert tinted.sum() > 1000
    assert (np.abs(a - b).max(axis=-1) > TOLERANCE).sum() < 0.05 * tinted.sum()


def test_keypoints_are_drawn(server):
    data = visualize(server, ROUTE_KP, POSE, IMG_POSE, visualization_stroke_width=3, confidence=0.5)
    vis = picture(data["visualization"])
    assert vis.shape == (480, 640, 3)
    keypoints = [k for p in data["predictions"] for k in p["keypoints"]]
    assert keypoints, "expected keypoints on the pose image"
    hits = 0
    for k in keypoints:
        x, y = int(round(k["x"])), int(round(k["y"]))
        if 0 <= x < 640 and 0 <= y < 480:
            hits += close(vis[y, x], color(k["class_id"])).item()
    assert hits >= 0.9 * len(keypoints), f"only {hits} of {len(keypoints)} keypoints carry their colour"


def test_skeleton_edges_from_model_metadata(start_server, models_dir, tmp_path):
    """A model whose keypoints_metadata.json declares edges gets lines between its keypoints."""
    root = tmp_path / "models"
    dest = root / "pose-edges" / "1"
    dest.mkdir(parents=True)
    shutil.copyfile(models_dir / POSE / "weights.onnx", dest / "weights.onnx")
    names = {"0": "apex", "1": "base_cw", "2": "base_ccw"}
    edges = [{"from": 0, "to": 1}, {"from": 1, "to": 2}, {"from": 2, "to": 0}]
    (dest / "keypoints_metadata.json").write_text(json.dumps(
        [{"object_class_id": c, "keypoints": names, "edges": edges} for c in range(3)]))
    srv = start_server(models=root)
    data = visualize(srv.url, ROUTE_KP, "pose-edges/1", IMG_POSE, visualization_stroke_width=3, confidence=0.5)
    vis = picture(data["visualization"])
    checked = 0
    for p in data["predictions"]:
        at = {k["class_id"]: (k["x"], k["y"]) for k in p["keypoints"]}
        for a, b in ((0, 1), (1, 2), (2, 0)):
            if a in at and b in at:
                (xa, ya), (xb, yb) = at[a], at[b]
                if np.hypot(xb - xa, yb - ya) < 30:
                    continue
                # The middle of the edge, away from the dots at its ends.
                xs = np.linspace(xa, xb, 9)[3:6].round().astype(int)
                ys = np.linspace(ya, yb, 9)[3:6].round().astype(int)
                assert close(vis[ys, xs], color(p["class_id"])).all(), (p["class"], a, b, vis[ys, xs])
                checked += 1
    assert checked, "no skeleton edge long enough to check"


def test_classification_label(server):
    data = visualize(server, ROUTE_CLS, CLS, IMG_SINGLE, confidence=0.1)
    vis, original = picture(data["visualization"]), decode_rgb(IMG_SINGLE).astype(np.int32)
    assert vis.shape == original.shape == (375, 500, 3)
    top = data["predictions"][0]
    assert data["top"] == top["class"]
    want = color(top["class_id"])
    # The label's background fills the top-left corner; the text inside is black or white.
    corner = vis[1:4, 1:4].reshape(-1, 3)
    assert close(corner, want).all(), corner
    assert not close(original[1:4, 1:4].reshape(-1, 3), want).all()
    assert np.abs(vis[200:, :] - original[200:, :]).mean() < 4, "the label should stay in its corner"


def test_batch_gets_one_picture_per_image(server):
    images = [img_b64(IMG_MULTI.read_bytes()), img_b64(IMG_MULTI2.read_bytes())]
    r = infer_route(server, ROUTE_OD, SHAPES, images, visualize_predictions=True)
    assert r.status_code == 200, r.text[:500]
    shapes = [picture(d["visualization"]).shape for d in r.json()]
    assert shapes == [(480, 640, 3), (200, 300, 3)]


def test_legacy_format_image(server):
    r = requests.post(f"{server}/{SHAPES}", params={"format": "image", "stroke": 3, "labels": "True"},
                      files={"file": ("a.jpg", IMG_MULTI.read_bytes())}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "image/jpeg"
    assert picture(r.content).shape == (480, 640, 3)


def test_legacy_format_image_and_json(server):
    r = requests.post(f"{server}/{SHAPES}", params={"format": "image_and_json", "confidence": 50},
                      data=base64.b64encode(IMG_MULTI.read_bytes()),
                      headers={"content-type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    data = r.json()
    assert data["predictions"] and picture(data["visualization"]).shape == (480, 640, 3)
    plain = requests.post(f"{server}/{SHAPES}", data=base64.b64encode(IMG_MULTI.read_bytes()),
                          headers={"content-type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT)
    assert plain.status_code == 200 and "visualization" not in plain.json()


@pytest.mark.parametrize("query", [
    {"format": "image", "stroke": "0"},
    {"format": "image", "stroke": "-2"},
    {"format": "image", "stroke": "101"},
    {"format": "image", "stroke": "thick"},
    {"format": "image", "stroke": "2.5"},
    {"format": "image_and_json", "labels": "maybe"},
    {"format": "picture"},
])
def test_legacy_bad_parameters(server, query):
    r = requests.post(f"{server}/{SHAPES}", params=query, files={"file": ("a.jpg", IMG_MULTI.read_bytes())},
                      timeout=HTTP_TIMEOUT)
    assert_error(r, 400)


@pytest.mark.parametrize("stroke", [0, -1, 1000])
def test_json_bad_stroke(server, stroke):
    r = infer_route(server, ROUTE_OD, SHAPES, img_b64(IMG_MULTI.read_bytes()), visualize_predictions=True,
                    visualization_stroke_width=stroke)
    assert "visualization_stroke_width" in assert_error(r, 400)
