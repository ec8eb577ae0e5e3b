"""inference-sdk and supervision with classification, instance segmentation and
keypoint models.

InferenceHTTPClient.infer() (v1 mode, inference_sdk/http/client.py,
_prepare_infer_from_api_v1_request_data) calls get_model_description(), which
reads GET /model/registry (POST /model/add first if the model is not listed), and
posts to NEW_INFERENCE_ENDPOINTS[task_type]: object-detection ->
/infer/object_detection, instance-segmentation -> /infer/instance_segmentation,
classification -> /infer/classification, keypoint-detection ->
/infer/keypoints_detection. So the registry's task_type alone decides the route."""

import numpy as np
import pytest
import supervision as sv
from inference_sdk import InferenceConfiguration, InferenceHTTPClient

from helpers import (CLS, CLS_NAMES, DEV_IMAGES, KEYPOINT_NAMES, POSE, REF_PARAMS, SEG, check_cls_response,
                     check_kp_response, check_seg_response, cls_ok, img_b64, kp_ok, mask_iou, polygon_mask,
                     pred_xyxy, rle_decode, same_cls, same_kp, same_seg, seg_ok)

IMG_SEG = DEV_IMAGES / "02_multi_640x480.jpg"
IMG_SEG2 = DEV_IMAGES / "13_multi_300x200.png"
IMG_POSE = DEV_IMAGES / "16_pose_640x480.jpg"
IMG_CLS = DEV_IMAGES / "21_single_500x375.jpg"
IMG_CLS2 = DEV_IMAGES / "22_single_256x384.jpg"


def config(**kw):
    return InferenceConfiguration(confidence_threshold=0.25, iou_threshold=0.45, max_detections=300,
                                  api_key_transport="legacy", **kw)


def client_for(server, **kw):
    return InferenceHTTPClient(api_url=server, api_key="test").configure(config(**kw))


@pytest.fixture
def client(server):
    return client_for(server)


def test_sdk_picks_the_route_from_the_registry(server, client):
    for model_id, task in [(SEG, "instance-segmentation"), (CLS, "classification"),
                           (POSE, "keypoint-detection")]:
        desc = client.get_model_description(model_id)
        assert desc.task_type == task, (model_id, desc)


def test_sdk_segmentation(server, client):
    res = client.infer(str(IMG_SEG), model_id=SEG)
    assert isinstance(res, dict)
    check_seg_response(res, "polygon")
    assert res["predictions"]
    same_seg(seg_ok(server, SEG, img_b64(IMG_SEG.read_bytes()), **REF_PARAMS), res, "sdk segmentation",
             iou_min=0.999)


def test_sdk_classification(server, client):
    res = client.infer(str(IMG_CLS), model_id=CLS)
    assert isinstance(res, dict)
    check_cls_response(res)
    assert res["top"] in CLS_NAMES.values()
    same_cls(cls_ok(server, CLS, img_b64(IMG_CLS.read_bytes()), confidence=0.25), res, "sdk classification")


def test_sdk_keypoints(server, client):
    res = client.infer(str(IMG_POSE), model_id=POSE)
    assert isinstance(res, dict)
    check_kp_response(res)
    assert res["predictions"]
    same_kp(kp_ok(server, POSE, img_b64(IMG_POSE.read_bytes()), **REF_PARAMS), res, "sdk keypoints")


@pytest.mark.parametrize("batch", [1, 3])
def test_sdk_lists(server, batch):
    """Lists of images through the SDK, one request per image or batched."""
    client = client_for(server, max_batch_size=batch)
    paths = [IMG_CLS, IMG_CLS2, IMG_SEG]
    res = client.infer([str(p) for p in paths], model_id=CLS)
    assert isinstance(res, list) and len(res) == 3
    for p, r in zip(paths, res):
        same_cls(cls_ok(server, CLS, img_b64(p.read_bytes()), confidence=0.25), r, f"sdk cls list {p.name}")
    paths = [IMG_SEG, IMG_SEG2]
    res = client.infer([str(p) for p in paths], model_id=SEG)
    assert isinstance(res, list) and len(res) == 2
    for p, r in zip(paths, res):
        same_seg(seg_ok(server, SEG, img_b64(p.read_bytes()), **REF_PARAMS), r, f"sdk seg list {p.name}",
                 iou_min=0.999)
    res = client.infer([str(IMG_POSE), str(IMG_SEG)], model_id=POSE)
    assert isinstance(res, list) and len(res) == 2
    for p, r in zip([IMG_POSE, IMG_SEG], res):
        same_kp(kp_ok(server, POSE, img_b64(p.read_bytes()), **REF_PARAMS), r, f"sdk kp list {p.name}")


def test_sdk_segmentation_options(server):
    """mask_decode_mode / response_mask_format set through InferenceConfiguration reach the server."""
    client = client_for(server, mask_decode_mode="fast", response_mask_format="rle")
    res = client.infer(str(IMG_SEG), model_id=SEG)
    check_seg_response(res, "rle")
    direct = seg_ok(server, SEG, img_b64(IMG_SEG.read_bytes()), mask_decode_mode="fast",
                    response_mask_format="rle", **REF_PARAMS)
    same_seg(direct, res, "sdk rle/fast", iou_min=0.999)


def test_sdk_keypoint_confidence(server):
    client = client_for(server, keypoint_confidence_threshold=1.01)
    res = client.infer(str(IMG_POSE), model_id=POSE)
    check_kp_response(res)
    assert res["predictions"]
    assert all(p["keypoints"] == [] for p in res["predictions"]), "keypoint_confidence_threshold not applied"


# --------------------------------------------------------------------------- supervision

def test_supervision_segmentation_masks(client):
    res = client.infer(str(IMG_SEG), model_id=SEG)
    h, w = res["image"]["height"], res["image"]["width"]
    det = sv.Detections.from_inference(res)
    preds = res["predictions"]
    assert len(det) == len(preds) > 0
    assert det.mask is not None, "supervision found no masks in the segmentation response"
    assert det.mask.shape == (len(preds), h, w), det.mask.shape
    for m, p, box in zip(det.mask, preds, det.xyxy):
        assert all(abs(a - b) < 1e-3 for a, b in zip(box, pred_xyxy(p))), (box, p)
        assert m.any(), f"empty mask for {p['class']}"
        v = mask_iou(m, polygon_mask(p["points"], h, w))
        assert v >= 0.9, f"supervision's raster of our polygon differs from ours: IoU {v:.3f}"
    assert list(det.data["class_name"]) == [p["class"] for p in preds]


def test_supervision_rle_masks(server):
    res = client_for(server, response_mask_format="rle").infer(str(IMG_SEG), model_id=SEG)
    h, w = res["image"]["height"], res["image"]["width"]
    det = sv.Detections.from_inference(res)
    assert len(det) == len(res["predictions"]) > 0
    assert det.mask is not None, "supervision could not decode the RLE masks"
    assert det.mask.shape == (len(det), h, w), det.mask.shape
    for m, p in zip(det.mask, res["predictions"]):
        assert np.array_equal(m, rle_decode(p["rle"])), "supervision and our decoder disagree on the RLE"


def test_supervision_keypoints(client):
    res = client.infer(str(IMG_POSE), model_id=POSE)
    kp = sv.KeyPoints.from_inference(res)
    preds = res["predictions"]
    assert len(preds) > 0
    assert kp.xy.shape == (len(preds), 3, 2), kp.xy.shape
    for i, p in enumerate(preds):
        for k in p["keypoints"]:
            assert np.allclose(kp.xy[i, k["class_id"]], [k["x"], k["y"]], atol=1e-3), (kp.xy[i], k)
            conf = getattr(kp, "keypoint_confidence", None)
            if conf is not None:
                assert abs(conf[i, k["class_id"]] - k["confidence"]) < 1e-4, (conf[i], k)
    names = kp.data.get("class_name")
    if names is not None:
        assert list(names) == [p["class"] for p in preds]
    assert {k["class"] for p in preds for k in p["keypoints"]} <= set(KEYPOINT_NAMES)


def test_supervision_classification(client):
    res = client.infer(str(IMG_CLS), model_id=CLS)
    preds = res["predictions"]
    assert preds
    if hasattr(sv, "Classifications"):
        c = sv.Classifications(class_id=np.array([p["class_id"] for p in preds]),
                               confidence=np.array([p["confidence"] for p in preds]))
        ids, confs = c.get_top_k(1)
        assert CLS_NAMES[int(ids[0])] == res["top"]
        assert abs(float(confs[0]) - res["confidence"]) < 1e-6
    assert res["top"] == preds[0]["class"] and res["confidence"] == preds[0]["confidence"]
