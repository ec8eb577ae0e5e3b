"""API behaviour of classification, instance segmentation and keypoint detection:
batches, parameters and their validation, wrong routes, the registry, the legacy
route, multi-label classification."""

import json
import shutil

import pytest
import requests

from helpers import (CLS, CLS_NAMES, DEV_IMAGES, HTTP_TIMEOUT, KEYPOINT_NAMES, POSE, REF_PARAMS, ROUTE_CLS,
                     ROUTE_KP, ROUTE_OD, ROUTE_SEG, SEG, SHAPES, assert_error, assert_same, b64,
                     check_cls_response, check_kp_response, check_multilabel_response, check_seg_response,
                     cls_ok, img_b64, infer_route, kp_ok, load_reference, mask_iou, pair_by_box, polygon_mask,
                     pred_xyxy, rle_decode, same_cls, same_kp, same_predictions, same_seg, seg_ok, summarize)

IMG_A = DEV_IMAGES / "02_multi_640x480.jpg"
IMG_B = DEV_IMAGES / "13_multi_300x200.png"
IMG_C = DEV_IMAGES / "05_multi_333x517.jpg"
IMG_POSE = DEV_IMAGES / "16_pose_640x480.jpg"
IMG_POSE2 = DEV_IMAGES / "17_pose_417x311.png"
IMG_SINGLE = DEV_IMAGES / "21_single_500x375.jpg"
IMG_EMPTY = DEV_IMAGES / "24_empty_333x517.png"

ALL_ROUTES = {SHAPES: ROUTE_OD, SEG: ROUTE_SEG, CLS: ROUTE_CLS, POSE: ROUTE_KP}
TASK_TYPES = {SHAPES: "object-detection", SEG: "instance-segmentation", CLS: "classification",
              POSE: "keypoint-detection"}


def img(path):
    return img_b64(path.read_bytes())


def size_of(resp):
    return resp["image"]["height"], resp["image"]["width"]


# --------------------------------------------------------------------------- batches

def test_classification_batch_equals_single(server):
    paths = [IMG_SINGLE, IMG_A, IMG_B, IMG_SINGLE]
    batch = cls_ok(server, CLS, [img(p) for p in paths], confidence=0.0)
    assert isinstance(batch, list) and len(batch) == 4
    for i, (p, got) in enumerate(zip(paths, batch)):
        same_cls(cls_ok(server, CLS, img(p), confidence=0.0), got, f"classification batch item {i} ({p.name})")
    assert [b["image"] for b in batch[:3]] == [{"width": 500, "height": 375}, {"width": 640, "height": 480},
                                               {"width": 300, "height": 200}]


def test_segmentation_batch_equals_single(server):
    paths = [IMG_A, IMG_B, IMG_C]
    for fmt in ("polygon", "rle"):
        batch = seg_ok(server, SEG, [img(p) for p in paths], response_mask_format=fmt, **REF_PARAMS)
        assert len(batch) == 3
        for i, (p, got) in enumerate(zip(paths, batch)):
            single = seg_ok(server, SEG, img(p), response_mask_format=fmt, **REF_PARAMS)
            assert single["predictions"], f"{p.name}: expected some detections"
            same_seg(single, got, f"segmentation {fmt} batch item {i} ({p.name})")


def test_keypoints_batch_equals_single(server):
    paths = [IMG_POSE, IMG_POSE2, IMG_A]
    batch = kp_ok(server, POSE, [img(p) for p in paths], **REF_PARAMS)
    assert len(batch) == 3
    for i, (p, got) in enumerate(zip(paths, batch)):
        same_kp(kp_ok(server, POSE, img(p), **REF_PARAMS), got, f"keypoints batch item {i} ({p.name})")


# --------------------------------------------------------------------------- classification

def test_classification_default_threshold_and_order(server):
    """Default confidence 0.4: only classes >= 0.4 come back, highest first; a
    threshold above 1 leaves none, with top "" and confidence 0."""
    ref = load_reference("dev/shapes-cls.json")
    for path in (IMG_SINGLE, IMG_A, IMG_EMPTY):
        out = cls_ok(server, CLS, img(path))
        probs = {CLS_NAMES[i]: p for i, p in enumerate(ref[path.name]["probs"])}
        got = [p["class"] for p in out["predictions"]]
        assert all(p["confidence"] >= 0.4 for p in out["predictions"]), out["predictions"]
        # Classes within 0.01 of the threshold may go either way.
        firm_in = {n for n, p in probs.items() if p >= 0.41}
        firm_out = {n for n, p in probs.items() if p < 0.39}
        assert firm_in <= set(got) and not (set(got) & firm_out), \
            f"{path.name}: got {got}, reference probabilities {probs}"
    out = cls_ok(server, CLS, img(IMG_SINGLE), confidence=1.01)
    assert out["predictions"] == [] and out["top"] == "" and out["confidence"] == 0, out


def test_classification_multilabel(start_server, models_dir, tmp_path):
    """A MULTICLASS model answers predictions {name: {confidence, class_id}} and predicted_classes."""
    root = tmp_path / "models"
    dest = root / "shapes-cls-ml" / "1"
    dest.mkdir(parents=True)
    shutil.copyfile(models_dir / CLS / "weights.onnx", dest / "weights.onnx")
    (dest / "environment.json").write_text(json.dumps({"MULTICLASS": True}))
    srv = start_server(models=root)
    ref = load_reference("dev/shapes-cls.json")
    for path in (IMG_SINGLE, IMG_A):
        r = infer_route(srv.url, ROUTE_CLS, "shapes-cls-ml/1", img(path), confidence=0.1)
        assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:1000]}"
        out = r.json()
        check_multilabel_response(out)
        probs = ref[path.name]["probs"]
        assert set(out["predictions"]) == set(CLS_NAMES.values()), out["predictions"]
        for cid, name in CLS_NAMES.items():
            entry = out["predictions"][name]
            assert entry["class_id"] == cid, (name, entry)
            assert abs(entry["confidence"] - probs[cid]) <= 0.01, (path.name, name, entry, probs[cid])
        firm_above = {CLS_NAMES[i] for i, p in enumerate(probs) if p > 0.11}
        firm_below = {CLS_NAMES[i] for i, p in enumerate(probs) if p < 0.09}
        got = set(out["predicted_classes"])
        assert firm_above <= got and not (got & firm_below), (path.name, got, probs)
    r = infer_route(srv.url, ROUTE_CLS, "shapes-cls-ml/1", [img(IMG_SINGLE), img(IMG_A)], confidence=0.1)
    assert r.status_code == 200, r.text[:500]
    data = r.json()
    assert isinstance(data, list) and len(data) == 2
    for d in data:
        check_multilabel_response(d)


# --------------------------------------------------------------------------- segmentation

def test_segmentation_alias_route(server):
    a = seg_ok(server, SEG, img(IMG_A), **REF_PARAMS)
    b = seg_ok(server, SEG, img(IMG_A), route="/infer/segmentation", **REF_PARAMS)
    same_seg(a, b, "/infer/segmentation vs /infer/instance_segmentation")


def test_segmentation_polygons_lie_in_their_boxes(server):
    for path in (IMG_A, IMG_B, IMG_C):
        out = seg_ok(server, SEG, img(path), **REF_PARAMS)
        h, w = size_of(out)
        scale = min(320 / w, 320 / h)
        slack = 1.5 / scale + 1.0  # one model-input pixel plus rounding
        for p in out["predictions"]:
            assert len(p["points"]) >= 3, f"{path.name}: degenerate polygon for {summarize(p)}: {p['points']}"
            x1, y1, x2, y2 = pred_xyxy(p)
            outside = [q for q in p["points"] if not (x1 - slack <= q["x"] <= x2 + slack
                                                       and y1 - slack <= q["y"] <= y2 + slack)]
            assert not outside, f"{path.name}: polygon points outside the box of {summarize(p)}: {outside[:5]}"
            m = polygon_mask(p["points"], h, w)
            box_area = max(1.0, (x2 - x1) * (y2 - y1))
            assert m.sum() >= 0.2 * box_area, f"{path.name}: tiny mask ({m.sum()} px) in {summarize(p)}"


@pytest.mark.parametrize("mode,extra", [("fast", {}), ("tradeoff", {"tradeoff_factor": 0.5}),
                                        ("tradeoff", {"tradeoff_factor": 0.0}),
                                        ("tradeoff", {"tradeoff_factor": 1.0})])
def test_mask_decode_modes(server, mode, extra):
    """fast / tradeoff masks agree with accurate ones: IoU >= 0.7 for objects at least
    32 model-input pixels across. Smaller ones only need to overlap (IoU >= 0.4): at
    the prototypes' 1/4 resolution a 24-pixel square is 6x6 cells, and a contour
    through the cell centres loses half a cell all round (IoU about 0.69)."""
    compared = 0
    for path in (IMG_A, IMG_B, IMG_C):
        acc = seg_ok(server, SEG, img(path), mask_decode_mode="accurate", **REF_PARAMS)
        other = seg_ok(server, SEG, img(path), mask_decode_mode=mode, **extra, **REF_PARAMS)
        label = f"{path.name} {mode} {extra}"
        assert_same(acc, other, label)  # the mode changes masks, not detections
        h, w = size_of(acc)
        scale = min(320 / w, 320 / h)
        for p, q in pair_by_box(acc["predictions"], other["predictions"]):
            v = mask_iou(polygon_mask(p["points"], h, w), polygon_mask(q["points"], h, w))
            big = min(p["width"], p["height"]) * scale >= 32
            compared += big
            want = 0.7 if big else 0.4
            assert v >= want, f"{label}: mask IoU {v:.3f} < {want} vs accurate for {summarize(p)}"
    assert compared >= 5, f"only {compared} large objects compared"
    # The default is accurate.
    d = seg_ok(server, SEG, img(IMG_A), **REF_PARAMS)
    same_seg(seg_ok(server, SEG, img(IMG_A), mask_decode_mode="accurate", **REF_PARAMS), d, "default mode",
             iou_min=0.999)


def test_segmentation_rle_shape(server):
    out = seg_ok(server, SEG, img(IMG_A), response_mask_format="rle", **REF_PARAMS)
    assert out["predictions"]
    h, w = size_of(out)
    for p in out["predictions"]:
        m = rle_decode(p["rle"])
        assert m.shape == (h, w) and m.any(), summarize(p)
        # The mask lies in (about) its box.
        x1, y1, x2, y2 = pred_xyxy(p)
        ys, xs = m.nonzero()
        assert xs.min() >= x1 - 3 and xs.max() <= x2 + 3 and ys.min() >= y1 - 3 and ys.max() <= y2 + 3, \
            (summarize(p), (xs.min(), ys.min(), xs.max(), ys.max()))


@pytest.mark.parametrize("route", [ROUTE_SEG, ROUTE_KP])
def test_detection_params_apply(server, route):
    """max_detections, class_filter and class_agnostic_nms work on seg and pose too."""
    model, path, ok = (SEG, IMG_C, seg_ok) if route == ROUTE_SEG else (POSE, IMG_POSE, kp_ok)
    full = ok(server, model, img(path), **REF_PARAMS)
    preds = full["predictions"]
    assert len(preds) >= 3, f"{path.name}: want >= 3 detections to test with, got {len(preds)}"
    two = ok(server, model, img(path), **{**REF_PARAMS, "max_detections": 2})
    assert len(two["predictions"]) == 2, [summarize(p) for p in two["predictions"]]
    top2 = sorted(preds, key=lambda p: -p["confidence"])[:2]
    diffs = same_predictions(top2, two["predictions"], *size_of(full)[::-1])
    assert not diffs, f"max_detections=2 must keep the 2 best: {diffs}"
    cls = preds[0]["class"]
    filt = ok(server, model, img(path), class_filter=[cls], **REF_PARAMS)
    assert filt["predictions"] and all(p["class"] == cls for p in filt["predictions"]), filt["predictions"]
    agn = ok(server, model, img(path), class_agnostic_nms=True, **REF_PARAMS)
    assert 0 < len(agn["predictions"]) <= len(preds)


def test_bad_segmentation_params_are_400(server):
    image = img(IMG_A)
    for params, word in [({"mask_decode_mode": "precise"}, "mask_decode_mode"),
                         ({"mask_decode_mode": "tradeoff", "tradeoff_factor": 1.5}, "tradeoff_factor"),
                         ({"mask_decode_mode": "tradeoff", "tradeoff_factor": -0.1}, "tradeoff_factor"),
                         ({"response_mask_format": "bitmap"}, "response_mask_format"),
                         ({"response_mask_format": "RLE-ish"}, "response_mask_format")]:
        r = infer_route(server, ROUTE_SEG, SEG, image, **params)
        msg = assert_error(r, 400)
        assert word in msg, f"{params}: the 400 message should name {word!r}: {msg!r}"


# --------------------------------------------------------------------------- keypoints

def test_keypoint_confidence_filters(server):
    image = img(IMG_POSE)
    full = kp_ok(server, POSE, image, **REF_PARAMS)
    preds = full["predictions"]
    assert preds
    for p in preds:
        assert sorted(k["class_id"] for k in p["keypoints"]) == [0, 1, 2], p["keypoints"]
        for k in p["keypoints"]:
            assert k["class"] == KEYPOINT_NAMES[k["class_id"]], k
    all_conf = sorted(k["confidence"] for p in preds for k in p["keypoints"])
    n_all = len(all_conf)
    for t in (0.99, 1.01, all_conf[n_all // 2] + 1e-6):
        out = kp_ok(server, POSE, image, keypoint_confidence=t, **REF_PARAMS)
        assert_same(full, out, f"keypoint_confidence={t} must not change detections")
        for p, q in pair_by_box(preds, out["predictions"]):
            kept = {k["class_id"] for k in q["keypoints"]}
            want = {k["class_id"] for k in p["keypoints"] if k["confidence"] >= t}
            assert kept == want, f"keypoint_confidence={t}: kept {sorted(kept)}, want {sorted(want)} " \
                                 f"(confidences {[round(k['confidence'], 4) for k in p['keypoints']]})"
        n = sum(len(p["keypoints"]) for p in out["predictions"])
        if t > 1:
            assert n == 0, f"keypoint_confidence={t} left {n} keypoints"
        else:
            assert n < n_all, f"keypoint_confidence={t} left all {n} keypoints"


# --------------------------------------------------------------------------- routing and registry

@pytest.mark.parametrize("model_id", [SHAPES, SEG, CLS, POSE])
def test_wrong_route_is_400_naming_the_right_route(server, model_id):
    right = ALL_ROUTES[model_id]
    for route in set(ALL_ROUTES.values()) - {right}:
        r = infer_route(server, route, model_id, img(IMG_A), confidence=0.25)
        msg = assert_error(r, 400)
        assert right in msg, f"{model_id} on {route}: message should name {right}: {msg!r}"


def test_registry_task_types(server):
    for model_id in ALL_ROUTES:
        r = requests.post(f"{server}/model/add", json={"model_id": model_id, "api_key": "test"},
                          timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, f"/model/add {model_id}: HTTP {r.status_code}: {r.text[:500]}"
    r = requests.get(f"{server}/model/registry", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    reg = {m["model_id"]: m for m in r.json()["models"]}
    for model_id, task in TASK_TYPES.items():
        assert model_id in reg, f"{model_id} not in registry: {sorted(reg)}"
        assert reg[model_id]["task_type"] == task, (model_id, reg[model_id])
        assert (reg[model_id]["input_height"], reg[model_id]["input_width"]) == (320, 320), reg[model_id]


# --------------------------------------------------------------------------- legacy route

def legacy(server, model_id, path, **query):
    r = requests.post(f"{server}/{model_id}", params={"api_key": "test", **query}, data=b64(path.read_bytes()),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"legacy {model_id} {query}: HTTP {r.status_code}: {r.text[:1000]}"
    return r.json()


def test_legacy_route_answers_each_task(server):
    q = {"confidence": 0.25, "overlap": 0.45, "max_detections": 300}
    out = legacy(server, CLS, IMG_SINGLE, confidence=0.01)
    check_cls_response(out)
    same_cls(cls_ok(server, CLS, img(IMG_SINGLE), confidence=0.01), out, "legacy classification")

    out = legacy(server, SEG, IMG_A, **q)
    check_seg_response(out, "polygon")
    assert out["predictions"]
    same_seg(seg_ok(server, SEG, img(IMG_A), **REF_PARAMS), out, "legacy segmentation")

    out = legacy(server, SEG, IMG_A, response_mask_format="rle", **q)
    check_seg_response(out, "rle")
    same_seg(seg_ok(server, SEG, img(IMG_A), **REF_PARAMS), out, "legacy segmentation rle", iou_min=0.9)

    out = legacy(server, POSE, IMG_POSE, **q)
    check_kp_response(out)
    assert out["predictions"]
    same_kp(kp_ok(server, POSE, img(IMG_POSE), **REF_PARAMS), out, "legacy keypoints")

    r = requests.post(f"{server}/{SEG}", params={"mask_decode_mode": "nope"}, data=b64(IMG_A.read_bytes()),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT)
    assert_error(r, 400)
