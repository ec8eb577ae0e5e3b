"""RF-DETR, Roboflow's DETR family, served by its own plugins (rfdetr-detection,
rfdetr-segmentation), against the references rfdetr's own post-processor made on ONNX Runtime
outputs (tests/fixtures/reference/dev/rfdetr-shapes-*.json, tests/fixtures/models/MODELS.md):
detections matched by class with box IoU >= 0.95 and |dconf| <= 0.01, masks (our polygons and the
reference's, rasterised alike) with IoU >= 0.9; >= 99 % of the rows match both ways, where rows
within the confidence tolerance of the 0.3 threshold may be missing or extra. Also: how the
family is routed (model type, or the outputs of a plain export), a batch equals single requests,
the official client and supervision take the results, and a Roboflow RF-DETR package is
downloaded, verified, cached and answered like a YOLO one."""

from __future__ import annotations

import json
import shutil

import pytest
import requests
import supervision as sv
from inference_sdk import InferenceConfiguration, InferenceHTTPClient

from helpers import (DEV_IMAGES, FIXTURES, HTTP_TIMEOUT, ROUTE_OD, ROUTE_SEG, SUMMARY_LINES, assert_same,
                     check_seg_response, image_files, img_b64, infer_ok, load_reference, mask_iou,
                     match_golden, polygon_mask, pred_xyxy, same_seg, seg_ok)

DETECT = "rfdetr-shapes-detect/1"
SEG = "rfdetr-shapes-seg/1"
PLAIN_DETECT = "rfdetr-plain-detect/1"
PLAIN_SEG = "rfdetr-plain-seg/1"
BACKGROUND = "rfdetr-background/1"
YOLO = "shapes-detect/1"
THRESHOLD = 0.3  # the references' threshold
PARAMS = {"confidence": THRESHOLD, "max_detections": 300}
MODELS = FIXTURES / "models"


def strip_metadata(onnx: bytes) -> bytes:
    """The ONNX file without its metadata_props (ModelProto field 14): what rfdetr's exporter
    writes before anyone adds `names`, `task` or `model_type`, i.e. a plain export."""
    def varint(data, i):
        value, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, i

    out, i = bytearray(), 0
    while i < len(onnx):
        start = i
        tag, i = varint(onnx, i)
        wire = tag & 7
        if wire == 0:
            _, i = varint(onnx, i)
        elif wire == 2:
            n, i = varint(onnx, i)
            i += n
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if tag >> 3 != 14:
            out += onnx[start:i]
    return bytes(out)


@pytest.fixture(scope="module")
def rf_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rfdetr-models")
    for model_id, name in [(DETECT, "rfdetr-shapes-detect.onnx"), (SEG, "rfdetr-shapes-seg.onnx"),
                           (YOLO, "shapes-detect.onnx")]:
        (root / model_id).mkdir(parents=True)
        shutil.copyfile(MODELS / name, root / model_id / "weights.onnx")
    # Plain exports: no metadata at all; classes from class_names.txt.
    for model_id, name in [(PLAIN_DETECT, "rfdetr-shapes-detect.onnx"), (PLAIN_SEG, "rfdetr-shapes-seg.onnx")]:
        (root / model_id).mkdir(parents=True)
        (root / model_id / "weights.onnx").write_bytes(strip_metadata((MODELS / name).read_bytes()))
        (root / model_id / "class_names.txt").write_text("circle\nsquare\ntriangle\n")
    # Roboflow's class lists may name a placeholder class, which is never reported.
    (root / BACKGROUND).mkdir(parents=True)
    shutil.copyfile(root / PLAIN_DETECT / "weights.onnx", root / BACKGROUND / "weights.onnx")
    (root / BACKGROUND / "class_names.txt").write_text("background_class83422\nsquare\ntriangle\n")
    return root


@pytest.fixture(scope="module")
def rf_server(start_server, rf_models):
    return start_server(models=rf_models).url


def registry(base: str) -> dict:
    r = requests.get(f"{base}/model/registry", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return {m["model_id"]: m for m in r.json()["models"]}


def post(base: str, route: str, model_id: str, image, **params):
    r = requests.post(f"{base}{route}", json={"model_id": model_id, "image": image, **params},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:2000]}"
    return r.json()


def without_ids(preds: list) -> list:
    return [{k: v for k, v in p.items() if k != "detection_id"} for p in preds]


# --------------------------------------------------------------------------- routing

def test_family_is_routed_by_model_type_and_by_outputs(rf_server):
    for model_id in (DETECT, SEG, PLAIN_DETECT, PLAIN_SEG, YOLO):
        route = ROUTE_SEG if "seg" in model_id else ROUTE_OD
        post(rf_server, route, model_id, img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes()))
    reg = registry(rf_server)
    want = {
        DETECT: ("object-detection", "rfdetr-detection", "architecture", "rfdetr-nano"),
        SEG: ("instance-segmentation", "rfdetr-segmentation", "architecture", "rfdetr-seg-nano"),
        PLAIN_DETECT: ("object-detection", "rfdetr-detection", "outputs", None),
        PLAIN_SEG: ("instance-segmentation", "rfdetr-segmentation", "outputs", None),
        YOLO: ("object-detection", "object-detection", "default", None),
    }
    for model_id, (task, plugin, reason, arch) in want.items():
        m = reg[model_id]
        got = (m["task_type"], m.get("plugin"), m.get("plugin_reason"), m.get("architecture"))
        assert got == (task, plugin, reason, arch), (model_id, m)
        assert (m["input_width"], m["input_height"]) == (320, 320), m


# --------------------------------------------------------------------------- correctness

def _match_all(base, route, model_id, ref_file, per_pair=None):
    refs = load_reference(ref_file)
    totals = {"ref": 0, "ours": 0, "matched": 0, "tolerable_ref": 0, "tolerable_ours": 0}
    problems = []
    for path in image_files(DEV_IMAGES):
        ref = refs[path.name]
        out = post(base, route, model_id, img_b64(path.read_bytes()), **PARAMS)
        assert (out["image"]["width"], out["image"]["height"]) == (ref["decoded_width"], ref["decoded_height"])
        preds = out["predictions"]
        pairs, miss_r, miss_p, bad_r, bad_p = match_golden(ref["predictions"], preds, THRESHOLD)
        totals["ref"] += len(ref["predictions"])
        totals["ours"] += len(preds)
        totals["matched"] += len(pairs)
        totals["tolerable_ref"] += len(miss_r) - len(bad_r)
        totals["tolerable_ours"] += len(miss_p) - len(bad_p)
        problems += [f"{path.name}: missing {r['class_name']} {r['confidence']}" for r in bad_r]
        problems += [f"{path.name}: extra {p['class']} {p['confidence']}" for p in bad_p]
        if per_pair:
            for r, p, _ in pairs:
                per_pair(path, out, r, p)
    ref_rate = totals["matched"] / max(1, totals["ref"] - totals["tolerable_ref"])
    our_rate = totals["matched"] / max(1, totals["ours"] - totals["tolerable_ours"])
    return totals, ref_rate, our_rate, problems


def _report(label, totals, ref_rate, our_rate, extra=""):
    line = (f"{label}: {totals['matched']} matched of {totals['ref']} reference / {totals['ours']} ours "
            f"(near-threshold unmatched: {totals['tolerable_ref']} ref, {totals['tolerable_ours']} ours); "
            f"match rate {ref_rate:.2%} of the reference, {our_rate:.2%} of ours{extra}")
    print(line)
    SUMMARY_LINES.append(line)


def test_detection_matches_rfdetr(rf_server):
    totals, ref_rate, our_rate, problems = _match_all(rf_server, ROUTE_OD, DETECT, "dev/rfdetr-shapes-detect.json")
    _report("rfdetr-shapes-detect", totals, ref_rate, our_rate)
    assert totals["ref"] == 134
    assert ref_rate >= 0.99 and our_rate >= 0.99, problems


def test_segmentation_matches_rfdetr(rf_server):
    ious = []

    def per_pair(path, out, r, p):
        h, w = out["image"]["height"], out["image"]["width"]
        ious.append(mask_iou(polygon_mask(p["points"], h, w), polygon_mask(r["mask_polygon"], h, w)))

    totals, ref_rate, our_rate, problems = _match_all(rf_server, ROUTE_SEG, SEG, "dev/rfdetr-shapes-seg.json",
                                                      per_pair)
    low = [v for v in ious if v < 0.9]
    _report("rfdetr-shapes-seg", totals, ref_rate, our_rate,
            f"; mask IoU min {min(ious):.3f}, mean {sum(ious) / len(ious):.3f} over {len(ious)} masks")
    assert totals["ref"] == 24
    assert ref_rate >= 0.99 and our_rate >= 0.99, problems
    assert ious and len(low) <= 0.01 * len(ious), f"mask IoUs below 0.9: {low}"


def test_plain_export_answers_like_the_described_one(rf_server):
    for path in image_files(DEV_IMAGES)[:4]:
        image = img_b64(path.read_bytes())
        assert_same(post(rf_server, ROUTE_OD, DETECT, image, **PARAMS),
                    post(rf_server, ROUTE_OD, PLAIN_DETECT, image, **PARAMS), path.name)


def test_a_batch_equals_single_requests(rf_server):
    paths = [DEV_IMAGES / n for n in ("02_multi_640x480.jpg", "04_multi_160x120.jpg",
                                      "08_multi_800x600.jpg", "10_multi_480x640_rgba.png")]
    images = [img_b64(p.read_bytes()) for p in paths]
    batch = post(rf_server, ROUTE_OD, DETECT, images, **PARAMS)
    assert isinstance(batch, list) and len(batch) == len(images)
    for p, image, b in zip(paths, images, batch):
        assert_same(post(rf_server, ROUTE_OD, DETECT, image, **PARAMS), b, p.name)
    seg_paths = [DEV_IMAGES / n for n in ("03_multi_1280x720.jpg", "08_multi_800x600.jpg")]
    seg_images = [img_b64(p.read_bytes()) for p in seg_paths]
    batch = post(rf_server, ROUTE_SEG, SEG, seg_images, **PARAMS)
    for p, image, b in zip(seg_paths, seg_images, batch):
        same_seg(post(rf_server, ROUTE_SEG, SEG, image, **PARAMS), b, p.name, iou_min=0.999)


def test_request_options(rf_server):
    image = img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())
    full = post(rf_server, ROUTE_OD, DETECT, image, **PARAMS)["predictions"]
    assert len(full) == 13
    # iou_threshold has no effect: RF-DETR is not suppressed ...
    for iou in (0.05, 0.95):
        assert without_ids(post(rf_server, ROUTE_OD, DETECT, image, iou_threshold=iou, **PARAMS)["predictions"]) \
            == without_ids(full)
    # ... unless class-agnostic NMS is asked for: one box per query is left.
    agnostic = post(rf_server, ROUTE_OD, DETECT, image, class_agnostic_nms=True, iou_threshold=0.5,
                    **PARAMS)["predictions"]
    assert 0 < len(agnostic) < len(full)
    top3 = post(rf_server, ROUTE_OD, DETECT, image, confidence=0.3, max_detections=3)["predictions"]
    assert [p["confidence"] for p in top3] == [p["confidence"] for p in full[:3]]
    squares = post(rf_server, ROUTE_OD, DETECT, image, class_filter=["square"], **PARAMS)["predictions"]
    assert squares and all(p["class"] == "square" for p in squares)
    assert len(squares) == sum(p["class"] == "square" for p in full)
    # The legacy route answers with the model's own task, and RLE masks work.
    r = requests.post(f"{rf_server}/{SEG}?confidence=0.3",
                      files={"file": ("08.jpg", (DEV_IMAGES / "08_multi_800x600.jpg").read_bytes())},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["predictions"], r.text[:500]
    rle = seg_ok(rf_server, SEG, img_b64((DEV_IMAGES / "08_multi_800x600.jpg").read_bytes()),
                 response_mask_format="rle", **PARAMS)
    check_seg_response(rle, "rle")
    assert rle["predictions"]


def test_roboflow_background_class_is_never_reported(rf_server):
    image = img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())
    full = post(rf_server, ROUTE_OD, DETECT, image, **PARAMS)["predictions"]
    without = post(rf_server, ROUTE_OD, BACKGROUND, image, **PARAMS)["predictions"]
    assert any(p["class_id"] == 0 for p in full)
    # The other classes keep their ids (the model's columns) and names.
    assert without_ids(without) == without_ids([p for p in full if p["class_id"] != 0])


# --------------------------------------------------------------------------- clients

def test_official_client_and_supervision(rf_server):
    config = InferenceConfiguration(confidence_threshold=THRESHOLD, max_detections=300,
                                    api_key_transport="legacy")
    client = InferenceHTTPClient(api_url=rf_server, api_key="test").configure(config)
    path = DEV_IMAGES / "08_multi_800x600.jpg"
    assert client.get_model_description(SEG).task_type == "instance-segmentation"
    res = client.infer(str(path), model_id=DETECT)
    det = sv.Detections.from_inference(res)
    assert len(det) == len(res["predictions"]) > 0
    assert list(det.data["class_name"]) == [p["class"] for p in res["predictions"]]
    for box, p in zip(det.xyxy, res["predictions"]):
        assert all(abs(a - b) < 1e-3 for a, b in zip(box, pred_xyxy(p))), (box, p)

    res = client.infer(str(path), model_id=SEG)
    h, w = res["image"]["height"], res["image"]["width"]
    det = sv.Detections.from_inference(res)
    assert len(det) == len(res["predictions"]) > 0
    assert det.mask is not None and det.mask.shape == (len(det), h, w)
    for m, p in zip(det.mask, res["predictions"]):
        assert mask_iou(m, polygon_mask(p["points"], h, w)) >= 0.9


# --------------------------------------------------------------------------- Roboflow

def test_roboflow_rfdetr_package_is_downloaded_verified_cached_and_served(start_server, rf_server, tmp_path):
    from roboflow_double import RoboflowDouble

    # What Roboflow's /ort gives for an RF-DETR: its model type, the task, the classes and an
    # environment.json with the dataset's resize (stretch) and RF-DETR's RESOLUTION.
    environment = {
        "CLASS_MAP": {"0": "circle", "1": "square", "2": "triangle"},
        "PREPROCESSING": json.dumps({"auto-orient": {"enabled": True},
                                     "resize": {"enabled": True, "width": 320, "height": 320,
                                                "format": "Stretch to"}}),
        "RESOLUTION": 320,
    }
    models = {"rf-shapes/3": {"file": "rfdetr-shapes-detect.onnx", "type": "object-detection",
                              "modelType": "rfdetr-base", "classes": ["circle", "square", "triangle"],
                              "environment": environment}}
    empty = tmp_path / "models"
    empty.mkdir()
    cache = tmp_path / "cache"
    with RoboflowDouble(models=models) as double:
        h = start_server(["--roboflow-api-url", double.url, "--cache-dir", str(cache)], models=empty)
        path = DEV_IMAGES / "02_multi_640x480.jpg"
        body = {"model_id": "rf-shapes/3", "image": img_b64(path.read_bytes()), "api_key": "rf-test-key", **PARAMS}
        first = requests.post(f"{h.url}{ROUTE_OD}", json=body, timeout=HTTP_TIMEOUT)
        assert first.status_code == 200, first.text
        downloads = double.counts[double.model_path("rf-shapes/3")]
        assert downloads == 1
        again = requests.post(f"{h.url}{ROUTE_OD}", json=body, timeout=HTTP_TIMEOUT)
        assert again.status_code == 200 and double.counts[double.model_path("rf-shapes/3")] == 1
        # The same answers as the fixture served from a models directory.
        local = post(rf_server, ROUTE_OD, DETECT, img_b64(path.read_bytes()), **PARAMS)
        assert_same(local, first.json(), "roboflow vs local")
        model = registry(h.url)["rf-shapes/3"]
        assert (model["task_type"], model["plugin"], model["architecture"]) == (
            "object-detection", "rfdetr-detection", "rfdetr-base"), model
        dirs = [d for d in cache.rglob("weights.onnx")]
        assert len(dirs) == 1 and (dirs[0].parent / ".verified").is_file()
        assert json.loads((dirs[0].parent / "model_type.json").read_text())["model_type"] == "rfdetr-base"
        h.stop()
        # Restarted offline: served from the verified cache.
        h = start_server(["--offline", "--cache-dir", str(cache)], models=empty)
        body.pop("api_key")
        r = requests.post(f"{h.url}{ROUTE_OD}", json=body, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        assert_same(local, r.json(), "cached")
