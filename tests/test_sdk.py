"""The official client (inference-sdk) and supervision against the server.

What the SDK sends (inference-sdk 1.8.3, read from inference_sdk/http/client.py):
  v1 (default for a non-Roboflow URL): GET /model/registry?api_key=..., then
     POST /model/add {"model_id","api_key"} if the model is not listed, then
     POST /infer/object_detection {"api_key","model_id","confidence",...,"image":{"type":"base64",...}}
     (one image per request unless max_batch_size > 1, then "image" is a list).
  v0 (select_api_v0()): POST /<project>/<version>?api_key=..&confidence=..&overlap=..&max_detections=..
     with the bare base64 string as body and Content-Type: application/json.
Image encoding: a file path is sent as the file's own bytes; a numpy array is
JPEG-encoded with cv2.imencode(".jpg"); a PIL image is JPEG-encoded by Pillow."""

import asyncio

import cv2
import pytest
import supervision as sv
from inference_sdk import InferenceConfiguration, InferenceHTTPClient
from inference_sdk.http.errors import HTTPCallErrorError
from inference_sdk.http.utils.encoding import pillow_image_to_base64_jpeg
from PIL import Image

from helpers import (DEV_IMAGES, REF_PARAMS, SHAPES, SHAPES_STATIC, assert_same, b64, img_b64, infer_ok,
                     pred_xyxy)

IMG_A = DEV_IMAGES / "02_multi_640x480.jpg"
IMG_B = DEV_IMAGES / "13_multi_300x200.png"
IMG_C = DEV_IMAGES / "05_multi_333x517.jpg"


def config(**kw):
    return InferenceConfiguration(confidence_threshold=0.25, iou_threshold=0.45, max_detections=300,
                                  api_key_transport="legacy", **kw)


@pytest.fixture
def client(server):
    return InferenceHTTPClient(api_url=server, api_key="test").configure(config())


def direct(server, data: bytes, model_id=SHAPES):
    return infer_ok(server, model_id, img_b64(data), **REF_PARAMS)


def test_client_mode_is_v1(client):
    assert client.client_mode.value == "v1"


def test_infer_file_path(server, client):
    res = client.infer(str(IMG_A), model_id=SHAPES)
    assert isinstance(res, dict)
    assert_same(direct(server, IMG_A.read_bytes()), res, "sdk file path")
    assert res["predictions"]


def test_infer_numpy_array(server, client):
    arr = cv2.imread(str(IMG_A))
    res = client.infer(arr, model_id=SHAPES)
    ok, jpg = cv2.imencode(".jpg", arr)  # what the SDK sends for an ndarray
    assert ok
    assert_same(direct(server, jpg.tobytes()), res, "sdk numpy (JPEG re-encoded)")


def test_infer_pil_image(server, client):
    im = Image.open(IMG_B).convert("RGB")
    res = client.infer(im, model_id=SHAPES)
    sent = pillow_image_to_base64_jpeg(im)
    ref = infer_ok(server, SHAPES, {"type": "base64", "value": sent}, **REF_PARAMS)
    assert_same(ref, res, "sdk PIL image (JPEG re-encoded)")


def test_infer_list(server, client):
    arr = cv2.imread(str(IMG_C))
    res = client.infer([str(IMG_A), str(IMG_B), arr], model_id=SHAPES)
    assert isinstance(res, list) and len(res) == 3
    assert_same(direct(server, IMG_A.read_bytes()), res[0], "sdk list item 0")
    assert_same(direct(server, IMG_B.read_bytes()), res[1], "sdk list item 1")
    assert_same(direct(server, cv2.imencode(".jpg", arr)[1].tobytes()), res[2], "sdk list item 2")


@pytest.mark.parametrize("model_id", [SHAPES, SHAPES_STATIC])
def test_infer_list_batched(server, model_id):
    """max_batch_size > 1 puts several images into one request's `image` list."""
    client = InferenceHTTPClient(api_url=server, api_key="test").configure(config(max_batch_size=3))
    paths = [IMG_A, IMG_B, IMG_C, IMG_A]
    res = client.infer([str(p) for p in paths], model_id=model_id)
    assert isinstance(res, list) and len(res) == 4
    for i, (p, r) in enumerate(zip(paths, res)):
        assert_same(direct(server, p.read_bytes(), model_id), r, f"sdk batched item {i}")


def test_infer_async(server, client):
    res = asyncio.run(client.infer_async(str(IMG_A), model_id=SHAPES))
    assert_same(direct(server, IMG_A.read_bytes()), res, "sdk async")


def test_legacy_v0_mode(server):
    client = InferenceHTTPClient(api_url=server, api_key="test").configure(config()).select_api_v0()
    assert client.client_mode.value == "v0"
    res = client.infer(str(IMG_A), model_id=SHAPES)
    assert_same(direct(server, IMG_A.read_bytes()), res, "sdk v0 file path")
    arr = cv2.imread(str(IMG_B))
    res = client.infer([arr, str(IMG_C)], model_id=SHAPES)
    assert isinstance(res, list) and len(res) == 2
    assert_same(direct(server, cv2.imencode(".jpg", arr)[1].tobytes()), res[0], "sdk v0 list item 0")
    assert_same(direct(server, IMG_C.read_bytes()), res[1], "sdk v0 list item 1")


def test_supervision_detections(client):
    res = client.infer(str(IMG_A), model_id=SHAPES)
    det = sv.Detections.from_inference(res)
    preds = res["predictions"]
    assert len(det) == len(preds) > 0
    assert list(det.data["class_name"]) == [p["class"] for p in preds]
    assert list(det.class_id) == [p["class_id"] for p in preds]
    for box, p in zip(det.xyxy, preds):
        assert all(abs(a - b) < 1e-3 for a, b in zip(box, pred_xyxy(p))), (box, p)
    assert set(det.data["class_name"]) <= {"circle", "square", "triangle"}


def test_registry_and_model_description(client):
    desc = client.get_model_description(SHAPES)
    assert desc.model_id == SHAPES
    assert desc.task_type == "object-detection"
    assert (desc.input_height, desc.input_width) == (320, 320)
    loaded = {m.model_id for m in client.list_loaded_models().models}
    assert SHAPES in loaded


def test_errors_surface_as_sdk_errors(client):
    with pytest.raises(HTTPCallErrorError) as e:
        client.infer(str(IMG_A), model_id="nope/1")
    assert e.value.status_code == 404
    assert e.value.api_message and e.value.api_message != "N/A"
    with pytest.raises(HTTPCallErrorError) as e:
        client.infer(b64(b"not an image at all"), model_id=SHAPES)
    assert e.value.status_code == 400
    assert e.value.api_message and e.value.api_message != "N/A"
