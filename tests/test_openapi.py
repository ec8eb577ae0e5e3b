"""The OpenAPI document at /openapi.json describes the server as it is.

- schemathesis fuzzes every documented operation from the document: no 5xx, every status
  code, content type, header and body as documented (fuzzed bodies rarely hold a real image,
  so this mostly exercises the documented 4xx);
- real successful responses of every task (and of the legacy route) validate against their
  operation's schema, which fuzzing cannot reach;
- the Swagger UI (/docs) and ReDoc (/redoc) pages are served by the server itself."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from helpers import DEV_IMAGES, HTTP_TIMEOUT, img_b64

IMG = DEV_IMAGES / "01_multi_320x320.jpg"
MULTI_LABEL = "openapi-cls-ml/1"


@pytest.fixture(scope="session")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server}/openapi.json", timeout=HTTP_TIMEOUT)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _schemathesis_node_id(request):
    """schemathesis 4.32 reads `node._nodeid`, which pytest 9.2 no longer has (it names its
    subtests with it): give it the node id it expects."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
def test_fuzzed_requests_get_documented_answers(case):
    case.call_and_validate(checks=CHECKS, timeout=60)


def test_document_names_every_route(server):
    doc = requests.get(f"{server}/openapi.json", timeout=HTTP_TIMEOUT).json()
    assert doc["openapi"].startswith("3.")
    expected = {
        ("post", "/infer/object_detection"), ("post", "/infer/instance_segmentation"),
        ("post", "/infer/segmentation"), ("post", "/infer/classification"),
        ("post", "/infer/keypoints_detection"), ("get", "/{dataset}/{version}"),
        ("post", "/{dataset}/{version}"), ("get", "/model/registry"), ("post", "/model/add"),
        ("post", "/model/remove"), ("post", "/model/clear"), ("get", "/info"), ("get", "/healthz"),
        ("get", "/readiness"), ("get", "/metrics"),
    }
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert expected <= documented, expected - documented
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                assert "x-request-id" in response.get("headers", {}), (method, path, status)
                if status.startswith(("4", "5")) and path not in ("/metrics", "/readiness"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorBody", (method, path, status, ref)
    for path in ("/infer/object_detection", "/{dataset}/{version}"):
        op = doc["paths"][path]["post"]
        assert {"400", "404", "413", "422", "500", "503", "504"} <= set(op["responses"]), path


def _validate(api_schema, method: str, path: str, r: requests.Response):
    assert r.status_code == 200, f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}"
    api_schema[path][method].validate_response(r)


def _infer(server, route, model_id, image, **params):
    return requests.post(f"{server}{route}", json={"model_id": model_id, "image": image, **params},
                         timeout=HTTP_TIMEOUT)


@pytest.fixture(scope="module")
def multi_label_model(models_dir):
    """A multi-label classifier (MULTICLASS), added to the shared server's models directory."""
    dest = models_dir / MULTI_LABEL
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(models_dir / "shapes-cls/1/weights.onnx", dest / "weights.onnx")
    (dest / "environment.json").write_text(json.dumps({"MULTICLASS": True}))
    return MULTI_LABEL


@pytest.mark.parametrize("route, model_id, params", [
    ("/infer/object_detection", "shapes-detect/1", {"confidence": 0.25}),
    ("/infer/instance_segmentation", "shapes-seg/1", {}),
    ("/infer/instance_segmentation", "shapes-seg/1", {"response_mask_format": "rle"}),
    ("/infer/segmentation", "shapes-seg/1", {}),
    ("/infer/keypoints_detection", "shapes-pose/1", {}),
    ("/infer/classification", "shapes-cls/1", {"confidence": 0.1}),
    ("/infer/classification", "shapes-cls/1", {"confidence": 0.9999}),  # no class passes: empty predictions
    ("/infer/object_detection", "shapes-detect/1", {"visualize_predictions": True, "visualization_labels": True}),
    ("/infer/instance_segmentation", "shapes-seg/1", {"visualize_predictions": True}),
    ("/infer/keypoints_detection", "shapes-pose/1", {"visualize_predictions": True}),
    ("/infer/classification", "shapes-cls/1", {"confidence": 0.1, "visualize_predictions": True}),
])
def test_task_responses_match_schema(server, api_schema, route, model_id, params):
    image = img_b64(IMG.read_bytes())
    one = _infer(server, route, model_id, image, **params)
    _validate(api_schema, "POST", route, one)
    many = _infer(server, route, model_id, [image, image], **params)
    _validate(api_schema, "POST", route, many)
    assert isinstance(many.json(), list) and len(many.json()) == 2


def test_multi_label_responses_match_schema(server, api_schema, multi_label_model):
    image = img_b64(IMG.read_bytes())
    r = _infer(server, "/infer/classification", multi_label_model, image, confidence=0.1)
    _validate(api_schema, "POST", "/infer/classification", r)
    assert "predicted_classes" in r.json()
    r = _infer(server, "/infer/classification", multi_label_model, [image], confidence=0.1)
    _validate(api_schema, "POST", "/infer/classification", r)


@pytest.mark.parametrize("model_id", ["shapes-detect/1", "shapes-seg/1", "shapes-pose/1", "shapes-cls/1"])
def test_legacy_responses_match_schema(server, api_schema, image_server, model_id):
    path = "/{dataset}/{version}"
    r = requests.post(f"{server}/{model_id}", files={"file": ("a.jpg", IMG.read_bytes())}, timeout=HTTP_TIMEOUT)
    _validate(api_schema, "POST", path, r)
    r = requests.get(f"{server}/{model_id}", params={"image": f"{image_server}/dev/{IMG.name}"},
                     timeout=HTTP_TIMEOUT)
    _validate(api_schema, "GET", path, r)
    for fmt, content_type in (("image", "image/jpeg"), ("image_and_json", "application/json")):
        r = requests.post(f"{server}/{model_id}", params={"format": fmt},
                          files={"file": ("a.jpg", IMG.read_bytes())}, timeout=HTTP_TIMEOUT)
        _validate(api_schema, "POST", path, r)
        assert r.headers["content-type"] == content_type


def test_management_responses_match_schema(server, api_schema):
    r = requests.post(f"{server}/model/add", json={"model_id": "shapes-detect/1"}, timeout=HTTP_TIMEOUT)
    _validate(api_schema, "POST", "/model/add", r)
    assert any(m["model_id"] == "shapes-detect/1" for m in r.json()["models"])
    for method, path in [("GET", "/model/registry"), ("GET", "/info"), ("GET", "/healthz"),
                         ("GET", "/readiness"), ("GET", "/metrics")]:
        _validate(api_schema, method, path, requests.request(method, f"{server}{path}", timeout=HTTP_TIMEOUT))


def test_swagger_ui_is_served_without_cdn(server):
    r = requests.get(f"{server}/docs", timeout=HTTP_TIMEOUT)  # redirects to /docs/
    assert r.status_code == 200 and "text/html" in r.headers["content-type"], r.text[:300]
    assert "swagger-ui" in r.text
    init = requests.get(f"{server}/docs/swagger-initializer.js", timeout=HTTP_TIMEOUT)
    assert init.status_code == 200 and "/openapi.json" in init.text, init.text[:500]
    for asset in re.findall(r'(?:src|href)="\./([^"]+)"', r.text):
        a = requests.get(f"{server}/docs/{asset}", timeout=HTTP_TIMEOUT)
        assert a.status_code == 200, asset
    assert not re.search(r'(?:src|href)="(?:https?:)?//', r.text), "the page loads something from elsewhere"


def test_redoc_is_served_without_cdn(server):
    page = requests.get(f"{server}/redoc", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<redoc" in page.text and "openapi.json" in page.text
    assert not re.search(r"https?://", page.text), page.text
    assert "default-src 'self'" in page.headers.get("content-security-policy", "")
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert scripts == ["redoc/redoc.standalone.js"], scripts
    js = requests.get(f"{server}/{scripts[0]}", timeout=HTTP_TIMEOUT)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert len(js.content) > 500_000 and b"Redoc" in js.content[:1000]
