"""Every input form gives the same predictions for the same pixels.

Group "encoded": the fixture file's own bytes (base64, data URI, URL, legacy
multipart / raw base64 / ?image= URL, GET). Group "pixels": the pixels decoded
here (EXIF applied, alpha dropped, grey expanded) sent losslessly (PNG, numpy
pickle protocols 2..5, numpy-1.x-style pickles, .npy, the seed's raw pickle on
the legacy route). Within a group results must be identical; across groups they
must be identical for PNG sources and golden-close for JPEG sources (the server
may decode JPEG slightly differently from Pillow)."""

import pickle

import numpy as np
import pytest
import requests

from helpers import (DEV_IMAGES, HTTP_TIMEOUT, REF_PARAMS, SHAPES, assert_same, b64, check_ok,
                     decode_rgb, img_b64, img_numpy, img_url, infer_ok, iou, match_golden,
                     npy_bytes, numpy1_style_pickle, png_bytes, pred_xyxy, rgb_to_bgr,
                     same_predictions)

LEGACY_QUERY = {"api_key": "test", "confidence": 0.25, "overlap": 0.45, "max_detections": 300}

FILES = [
    "02_multi_640x480.jpg",       # plain JPEG
    "13_multi_300x200.png",       # plain PNG
    "11_multi_640x480_exif6.jpg",  # EXIF orientation 6: 480x640 stored, 640x480 displayed
    "10_multi_480x640_rgba.png",  # RGBA: alpha must be dropped, not composited
    "09_multi_320x240_gray.png",  # 8-bit grey
]

EXPECTED_SIZE = {
    "02_multi_640x480.jpg": (640, 480),
    "13_multi_300x200.png": (300, 200),
    "11_multi_640x480_exif6.jpg": (640, 480),
    "10_multi_480x640_rgba.png": (480, 640),
    "09_multi_320x240_gray.png": (320, 240),
}


def legacy_url(server, model_id=SHAPES):
    return f"{server}/{model_id}"


def encoded_forms(server, image_server, name):
    """{form name: response JSON} for the file's own encoded bytes."""
    data = (DEV_IMAGES / name).read_bytes()
    mime = "image/png" if name.endswith(".png") else "image/jpeg"
    url = f"{image_server}/dev/{name}"
    out = {
        "json-base64": infer_ok(server, SHAPES, img_b64(data), **REF_PARAMS),
        "json-data-uri": infer_ok(server, SHAPES, img_b64(data, f"data:{mime};base64,"), **REF_PARAMS),
        "json-url": infer_ok(server, SHAPES, img_url(url), **REF_PARAMS),
    }
    lu = legacy_url(server)
    out["legacy-multipart"] = check_ok(requests.post(
        lu, params=LEGACY_QUERY, files={"file": (name, data, mime)}, timeout=HTTP_TIMEOUT))
    out["legacy-raw-base64-form"] = check_ok(requests.post(
        lu, params=LEGACY_QUERY, data=b64(data),
        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT))
    # inference-sdk's v0 mode sends the bare base64 string with Content-Type application/json.
    out["legacy-raw-base64-json-ctype"] = check_ok(requests.post(
        lu, params=LEGACY_QUERY, data=b64(data),
        headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT))
    out["legacy-data-uri"] = check_ok(requests.post(
        lu, params=LEGACY_QUERY, data=f"data:{mime};base64," + b64(data),
        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT))
    out["legacy-post-image-url"] = check_ok(requests.post(
        lu, params={**LEGACY_QUERY, "image": url}, timeout=HTTP_TIMEOUT))
    out["legacy-get-image-url"] = check_ok(requests.get(
        lu, params={**LEGACY_QUERY, "image": url}, timeout=HTTP_TIMEOUT))
    return out


def pixel_forms(server, name):
    """{form name: response JSON} for the pixels decoded here."""
    rgb = decode_rgb(DEV_IMAGES / name)
    bgr = rgb_to_bgr(rgb)  # what cv2.imread gives a Python client
    out = {"json-png": infer_ok(server, SHAPES, img_b64(png_bytes(rgb)), **REF_PARAMS)}
    for proto in (2, 3, 4, 5):
        out[f"json-numpy-pickle-p{proto}"] = infer_ok(
            server, SHAPES, img_numpy(b64(pickle.dumps(bgr, protocol=proto))), **REF_PARAMS)
    for proto in (2, 5):
        out[f"json-numpy1-pickle-p{proto}"] = infer_ok(
            server, SHAPES, img_numpy(b64(numpy1_style_pickle(pickle.dumps(bgr, protocol=proto)))),
            **REF_PARAMS)
    out["json-npy"] = infer_ok(server, SHAPES, img_numpy(b64(npy_bytes(bgr))), **REF_PARAMS)
    # The seed's form: raw pickle bytes as the body, image_type=numpy.
    out["legacy-numpy-raw-pickle"] = check_ok(requests.post(
        legacy_url(server), params={**LEGACY_QUERY, "image_type": "numpy"}, data=pickle.dumps(bgr),
        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT))
    return out


def assert_group_equal(results, label):
    first_name, first = next(iter(results.items()))
    for form, res in results.items():
        assert_same(first, res, f"{label}: {form} vs {first_name}")


def assert_golden_close(a, b, label):
    """Same image decoded by two different decoders: golden-level agreement."""
    assert a["image"] == b["image"], f"{label}: image size {a['image']} vs {b['image']}"
    as_ref = [{"class_name": p["class"], "confidence": p["confidence"], "xyxy": list(pred_xyxy(p))}
              for p in a["predictions"]]
    pairs, miss_r, miss_p, bad_r, bad_p = match_golden(as_ref, b["predictions"])
    assert not bad_r and not bad_p, f"{label}: decoders disagree: missing {bad_r}, extra {bad_p}"


@pytest.mark.parametrize("name", FILES)
def test_input_forms_agree(server, image_server, name):
    enc = encoded_forms(server, image_server, name)
    pix = pixel_forms(server, name)
    for res in list(enc.values()) + list(pix.values()):
        assert (res["image"]["width"], res["image"]["height"]) == EXPECTED_SIZE[name], \
            f"{name}: reported size {res['image']}"
    assert_group_equal(enc, f"{name} encoded")
    assert_group_equal(pix, f"{name} pixels")
    if name.endswith(".png"):
        assert_same(enc["json-base64"], pix["json-png"], f"{name}: file bytes vs decoded pixels")
    else:
        assert_golden_close(enc["json-base64"], pix["json-png"], f"{name}: file bytes vs decoded pixels")
    # The fixtures have objects; a test of all-empty results would prove nothing.
    assert enc["json-base64"]["predictions"], f"{name}: no predictions at all"


def test_exif_orientation_is_applied(server):
    """The EXIF-6 JPEG stores 480x640 pixels; the answer is in the 640x480 display frame
    and its boxes match the same pixels sent upright as PNG."""
    name = "11_multi_640x480_exif6.jpg"
    data = (DEV_IMAGES / name).read_bytes()
    res = infer_ok(server, SHAPES, img_b64(data), **REF_PARAMS)
    assert (res["image"]["width"], res["image"]["height"]) == (640, 480)
    upright = infer_ok(server, SHAPES, img_b64(png_bytes(decode_rgb(data))), **REF_PARAMS)
    assert_golden_close(res, upright, name)
    assert len(res["predictions"]) >= 2


def test_fortran_order_numpy(server):
    """A Fortran-ordered array pickles with is_fortran=True and column-major data.
    The server must read it correctly or refuse it with 400 — never misread it."""
    bgr = rgb_to_bgr(decode_rgb(DEV_IMAGES / "13_multi_300x200.png"))
    ref = infer_ok(server, SHAPES, img_numpy(b64(pickle.dumps(bgr, protocol=2))), **REF_PARAMS)
    for proto in (2, 5):
        f = np.asfortranarray(bgr)
        assert f.flags.f_contiguous and not f.flags.c_contiguous
        r = requests.post(f"{server}/infer/object_detection", timeout=HTTP_TIMEOUT, json={
            "model_id": SHAPES, "image": img_numpy(b64(pickle.dumps(f, protocol=proto))), **REF_PARAMS})
        if r.status_code == 400:
            continue
        assert_same(ref, check_ok(r), f"fortran-order pickle p{proto}")


def test_batch_equals_singles(server, image_server):
    """A list of 4 mixed images answers a JSON array, in order, each equal to the
    single request."""
    jpg = (DEV_IMAGES / "01_multi_320x320.jpg").read_bytes()
    png_rgb = decode_rgb(DEV_IMAGES / "06_multi_517x333.png")
    images = [
        img_b64(jpg),
        img_numpy(b64(pickle.dumps(rgb_to_bgr(png_rgb)))),
        img_url(f"{image_server}/dev/04_multi_160x120.jpg"),
        img_b64((DEV_IMAGES / "13_multi_300x200.png").read_bytes()),
    ]
    r = requests.post(f"{server}/infer/object_detection", timeout=HTTP_TIMEOUT,
                      json={"model_id": SHAPES, "image": images, **REF_PARAMS})
    assert r.status_code == 200, r.text[:1000]
    batch = r.json()
    assert isinstance(batch, list) and len(batch) == 4, str(batch)[:500]
    for i, (img, got) in enumerate(zip(images, batch)):
        single = infer_ok(server, SHAPES, img, **REF_PARAMS)
        assert_same(single, got, f"batch item {i}")
    sizes = [(b["image"]["width"], b["image"]["height"]) for b in batch]
    assert sizes == [(320, 320), (517, 333), (160, 120), (300, 200)], sizes


def test_single_element_list_is_a_list(server):
    data = (DEV_IMAGES / "01_multi_320x320.jpg").read_bytes()
    out = infer_ok(server, SHAPES, [img_b64(data)], **REF_PARAMS)
    assert isinstance(out, list) and len(out) == 1


# --------------------------------------------------------------------------- parameters

def _img(name="05_multi_333x517.jpg"):
    return img_b64((DEV_IMAGES / name).read_bytes())


def test_inference_id_echo_and_unknown_fields(server):
    r = requests.post(f"{server}/infer/object_detection", timeout=HTTP_TIMEOUT, json={
        "model_id": SHAPES, "image": _img(), "id": "my-request-42", "api_key": "whatever",
        "visualize_predictions": False, "disable_active_learning": False, "some_future_field": {"a": [1]},
        **REF_PARAMS})
    out = check_ok(r)
    assert out["inference_id"] == "my-request-42"


def test_default_confidence_is_0_4(server):
    default = infer_ok(server, SHAPES, _img())
    explicit = infer_ok(server, SHAPES, _img(), confidence=0.4)
    low = infer_ok(server, SHAPES, _img(), confidence=0.25)
    assert all(p["confidence"] >= 0.4 for p in default["predictions"])
    assert_same(default, explicit, "default vs confidence=0.4")
    assert len(low["predictions"]) > len(default["predictions"]), \
        "fixture sanity: 05_multi has detections between 0.25 and 0.4"


def test_confidence_filters(server):
    full = infer_ok(server, SHAPES, _img(), **REF_PARAMS)["predictions"]
    high = infer_ok(server, SHAPES, _img(), **{**REF_PARAMS, "confidence": 0.7})["predictions"]
    assert all(p["confidence"] >= 0.7 for p in high)
    # NMS only lets higher-scored boxes suppress lower ones, so the survivors above
    # 0.7 are the same whatever the threshold.
    expected = [p for p in full if p["confidence"] > 0.7]
    assert 0 < len(high) < len(full)
    assert not same_predictions(expected, high, 333, 517), same_predictions(expected, high, 333, 517)


def test_max_detections(server):
    full = infer_ok(server, SHAPES, _img(), **REF_PARAMS)["predictions"]
    assert len(full) > 2
    top = infer_ok(server, SHAPES, _img(), **{**REF_PARAMS, "max_detections": 2})["predictions"]
    assert len(top) == 2
    best = sorted(full, key=lambda p: -p["confidence"])[:2]
    assert sorted(round(p["confidence"], 5) for p in top) == sorted(round(p["confidence"], 5) for p in best)


def test_class_filter(server):
    full = infer_ok(server, SHAPES, _img(), **REF_PARAMS)["predictions"]
    only = infer_ok(server, SHAPES, _img(), **{**REF_PARAMS, "class_filter": ["triangle"]})["predictions"]
    assert only and all(p["class"] == "triangle" for p in only)
    assert len(only) < len(full)
    expected = [p for p in full if p["class"] == "triangle"]
    assert not same_predictions(expected, only, 333, 517), same_predictions(expected, only, 333, 517)


def _max_pair_iou(preds, same_class_only):
    worst = 0.0
    for i in range(len(preds)):
        for j in range(i + 1, len(preds)):
            if same_class_only and preds[i]["class"] != preds[j]["class"]:
                continue
            worst = max(worst, iou(pred_xyxy(preds[i]), pred_xyxy(preds[j])))
    return worst


@pytest.mark.parametrize("name", ["05_multi_333x517.jpg", "19_single_224x224.jpg"])
def test_nms_modes(server, name):
    aware = infer_ok(server, SHAPES, _img(name), **REF_PARAMS)["predictions"]
    agnostic = infer_ok(server, SHAPES, _img(name), **REF_PARAMS, class_agnostic_nms=True)["predictions"]
    assert _max_pair_iou(aware, True) <= 0.45 + 1e-6
    assert _max_pair_iou(aware, False) > 0.45, "fixture sanity: overlapping boxes of different classes"
    assert _max_pair_iou(agnostic, False) <= 0.45 + 1e-6
    assert 0 < len(agnostic) < len(aware)
    top = max(aware, key=lambda p: p["confidence"])
    assert abs(max(p["confidence"] for p in agnostic) - top["confidence"]) < 1e-6
