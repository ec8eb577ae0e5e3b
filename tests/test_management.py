"""Service and model-management routes. Runs on its own server so that
loading/unloading does not disturb the other tests."""

import pytest
import requests

from helpers import (DEV_IMAGES, HTTP_TIMEOUT, NUDENET, REF_PARAMS, SHAPES, SHAPES_STATIC, assert_error,
                     img_b64, infer_ok)

IMG = DEV_IMAGES / "01_multi_320x320.jpg"


@pytest.fixture(scope="module")
def mgmt(start_server):
    return start_server()


def get_json(url):
    r = requests.get(url, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"{url}: HTTP {r.status_code}: {r.text[:500]}"
    assert "json" in r.headers.get("content-type", ""), r.headers
    return r.json()


def post_json(url, body=None):
    r = requests.post(url, json=body, timeout=HTTP_TIMEOUT) if body is not None else \
        requests.post(url, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"{url}: HTTP {r.status_code}: {r.text[:500]}"
    return r.json()


def registry(base):
    data = get_json(f"{base}/model/registry")
    check_descriptions(data)
    return {m["model_id"]: m for m in data["models"]}


def check_descriptions(data):
    assert isinstance(data, dict) and isinstance(data.get("models"), list), data
    for m in data["models"]:
        for key in ("model_id", "task_type", "batch_size", "input_height", "input_width"):
            assert key in m, f"registry entry lacks {key!r}: {m}"


def test_info(mgmt):
    info = get_json(f"{mgmt.url}/info")
    for key in ("name", "version", "uuid"):
        assert isinstance(info.get(key), str) and info[key], info


def test_health_and_readiness(mgmt):
    assert get_json(f"{mgmt.url}/healthz") == {"status": "healthy"}
    assert get_json(f"{mgmt.url}/readiness") == {"status": "ready"}


def test_registry_lists_model_after_use(mgmt):
    post_json(f"{mgmt.url}/model/clear")
    assert registry(mgmt.url) == {}
    infer_ok(mgmt.url, SHAPES, img_b64(IMG.read_bytes()), **REF_PARAMS)
    reg = registry(mgmt.url)
    assert set(reg) == {SHAPES}
    m = reg[SHAPES]
    assert m["task_type"] == "object-detection"
    assert (m["input_height"], m["input_width"]) == (320, 320)
    assert m["batch_size"] is None or (isinstance(m["batch_size"], int) and m["batch_size"] >= 1), m


def test_static_model_reports_batch_1(mgmt):
    body = post_json(f"{mgmt.url}/model/add", {"model_id": SHAPES_STATIC, "api_key": "x"})
    check_descriptions(body)
    m = {d["model_id"]: d for d in body["models"]}[SHAPES_STATIC]
    assert m["batch_size"] == 1, m
    assert (m["input_height"], m["input_width"]) == (320, 320)


def test_add_remove_clear(mgmt, models_dir):
    base = mgmt.url
    post_json(f"{base}/model/clear")
    body = post_json(f"{base}/model/add", {"model_id": NUDENET})
    check_descriptions(body)
    assert NUDENET in {m["model_id"] for m in body["models"]}
    assert registry(base)[NUDENET]["task_type"] == "object-detection"
    # Adding twice is harmless.
    post_json(f"{base}/model/add", {"model_id": NUDENET, "api_key": "x"})
    assert list(registry(base)).count(NUDENET) == 1
    post_json(f"{base}/model/add", {"model_id": SHAPES})
    assert set(registry(base)) == {NUDENET, SHAPES}

    body = post_json(f"{base}/model/remove", {"model_id": NUDENET})
    check_descriptions(body)
    assert NUDENET not in {m["model_id"] for m in body["models"]}
    assert set(registry(base)) == {SHAPES}
    assert (models_dir / NUDENET / "weights.onnx").is_file(), "remove must not delete weights from disk"

    # A request after remove loads the model again.
    out = infer_ok(base, NUDENET, img_b64((DEV_IMAGES.parent / "photos" / "astronaut.png").read_bytes()),
                   **REF_PARAMS)
    assert [p["class"] for p in out["predictions"]] == ["FACE_FEMALE"]
    assert NUDENET in registry(base)

    body = post_json(f"{base}/model/clear")
    check_descriptions(body)
    assert body["models"] == []
    assert registry(base) == {}
    assert (models_dir / SHAPES / "weights.onnx").is_file()
    # And again usable after clear.
    infer_ok(base, SHAPES, img_b64(IMG.read_bytes()), **REF_PARAMS)
    assert set(registry(base)) == {SHAPES}


def test_add_errors(mgmt):
    assert_error(requests.post(f"{mgmt.url}/model/add", json={"model_id": "nope/1"}, timeout=HTTP_TIMEOUT), 404)
    assert_error(requests.post(f"{mgmt.url}/model/add", json={"model_id": "../x/1"}, timeout=HTTP_TIMEOUT), 400)
    assert_error(requests.post(f"{mgmt.url}/model/add", json={}, timeout=HTTP_TIMEOUT), 422, allow_detail=True)
    assert_error(requests.post(f"{mgmt.url}/model/add", data=b"{x", headers={"Content-Type": "application/json"},
                               timeout=HTTP_TIMEOUT), 422, allow_detail=True)
    assert "nope/1" not in registry(mgmt.url)
    assert get_json(f"{mgmt.url}/healthz") == {"status": "healthy"}
