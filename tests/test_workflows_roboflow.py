"""Stored workflows fetched from Roboflow's API (issue 13 item 1): a workflow not in
--workflows-dir is fetched with the caller's Roboflow key by Roboflow's protocol
(`GET {API_BASE_URL}/{workspace}/workflows/{workflow_id}?api_key=…` answering
`{"workflow": {"config": "<json>"}}`, served here by tests/roboflow_double.py), cached in memory and
on disk per key, served from the disk copy while the API cannot be reached, and never served from
the cache to a caller with another key (a tenant Roboflow does not entitle to it).

Keys at the double: rf-acme (workspace acme: may have every workflow), rf-other (valid, another
workspace: 403 for acme's workflows)."""

from __future__ import annotations

import hashlib

import pytest
import requests

from helpers import HTTP_TIMEOUT, PHOTOS, key_sha as sha
from roboflow_double import RoboflowDouble
from test_workflows import IMAGES, compare, definition, golden

KEY, OTHER = "rf-acme", "rf-other"
DETECT = "/acme/workflows/detect"


def stats():
    return {"theirs": 0, "ours": 0, "matched": 0}


def body(key, image="bus.jpg", **extra):
    return {"api_key": key, "inputs": {"image": {"type": "base64", "value": IMAGES[image]}}, **extra}


def post(base, path, payload):
    return requests.post(base + path, json=payload, timeout=HTTP_TIMEOUT)


def dead_url():
    """The URL of an API that is down (connection refused)."""
    double = RoboflowDouble()
    url = double.url
    double.stop()
    return url


@pytest.fixture(scope="module")
def roboflow():
    grants = {"acme/detect": {KEY}, "acme/crops": {KEY}, "acme/filter": {KEY}}
    with RoboflowDouble(keys=(KEY, OTHER), grants=grants) as double:
        double.add_workflow("acme", "detect", definition("01_detect"))
        double.add_workflow("acme", "crops", definition("03_crop_nested"))
        double.add_workflow("acme", "filter", definition("01_detect"), versions={"2": definition("02_filter_count")})
        yield double


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("wf-cache")


@pytest.fixture(scope="module")
def server(start_server, roboflow, cache_dir):
    return start_server(["--roboflow-api-url", roboflow.url, "--cache-dir", str(cache_dir)]).url


def test_official_client_runs_a_workflow_roboflow_serves(server, roboflow, cache_dir):
    from inference_sdk import InferenceHTTPClient

    client = InferenceHTTPClient(api_url=server, api_key=KEY)
    recorded = {c["label"]: c["sdk_return"] for c in golden("01_detect")["cases"] if c.get("sdk_return")}
    one = client.run_workflow(workspace_name="acme", workflow_id="detect", images={"image": str(PHOTOS / "bus.jpg")})
    compare(one, recorded["bus"], "roboflow/one", stats())
    batch = client.run_workflow(workspace_name="acme", workflow_id="detect",
                                images={"image": [str(PHOTOS / "bus.jpg"), str(PHOTOS / "zidane.jpg")]})
    assert len(batch) == 2
    compare(batch, recorded["batch_bus_zidane"], "roboflow/batch", stats())
    # Fetched once, with the caller's key, then served from the cache.
    assert roboflow.counts[DETECT] == 1
    assert [q for p, q in roboflow.queries if p == DETECT] == [{"api_key": KEY}]
    # The disk copy is named by the key's hash, never the key.
    files = [p.name for p in (cache_dir / "workflows" / "acme").iterdir()]
    assert files == [f"detect.{hashlib.sha256(KEY.encode()).hexdigest()}.json"]
    assert KEY not in (cache_dir / "workflows" / "acme" / files[0]).read_text()
    # The legacy route and a two-stage workflow (crop -> second model) from Roboflow too.
    r = post(server, "/infer/workflows/acme/crops", body(KEY))
    assert r.status_code == 200, r.text
    compare(r.json(), golden("03_crop_nested")["cases"][0]["http_response"]["body"], "roboflow/crops", stats())


def test_use_cache_false_and_versions(server, roboflow):
    before = roboflow.counts[DETECT]
    r = post(server, DETECT, body(KEY, use_cache=False))
    assert r.status_code == 200, r.text
    assert roboflow.counts[DETECT] == before + 1
    # A pinned version is asked for by Roboflow's `workflow_version` and cached on its own.
    r = post(server, "/acme/workflows/filter", body(KEY, image="zidane.jpg", workflow_version_id="2"))
    assert r.status_code == 200, r.text
    assert "face_count" in r.json()["outputs"][0]
    assert {"api_key": KEY, "workflow_version": "2"} in [q for p, q in roboflow.queries if p == "/acme/workflows/filter"]
    r = post(server, "/acme/workflows/filter", body(KEY, image="zidane.jpg"))
    assert r.status_code == 200 and "face_count" not in r.json()["outputs"][0]
    r = post(server, "/acme/workflows/filter", body(KEY, workflow_version_id="9"))
    assert r.status_code == 404


def test_refusals_keep_roboflows_statuses(server, roboflow):
    from inference_sdk import InferenceHTTPClient
    from inference_sdk.http.errors import HTTPCallErrorError

    assert post(server, DETECT, body(KEY)).status_code == 200  # cached for KEY now
    # Another key is never served KEY's cached copy: Roboflow answers for it.
    r = post(server, DETECT, body("wrong-key"))
    assert r.status_code == 401 and "Unauthorized access to roboflow API" in r.json()["message"], r.text
    assert "wrong-key" not in r.text
    r = post(server, DETECT, body(OTHER))
    assert r.status_code == 403 and "scopes" in r.json()["message"], r.text
    r = post(server, "/acme/workflows/no-such-workflow", body(KEY))
    assert r.status_code == 404 and r.json()["message"].startswith("Requested Roboflow resource not found"), r.text
    with pytest.raises(HTTPCallErrorError) as e:
        InferenceHTTPClient(api_url=server, api_key="wrong-key").run_workflow(
            workspace_name="acme", workflow_id="detect", images={"image": str(PHOTOS / "bus.jpg")})
    assert e.value.status_code == 401
    # No key: nothing to fetch with.
    r = post(server, DETECT, {"inputs": {"image": IMAGES["bus.jpg"]}})
    assert r.status_code == 404 and "api_key" in r.json()["message"], r.text
    # Names that are not one plain path segment never reach Roboflow.
    asked = sum(roboflow.counts.values())
    for path in ("/%2e%2e/workflows/detect", "/acme/workflows/..%2Fort", "/acme/workflows/a%20b"):
        assert post(server, path, body(KEY)).status_code == 404, path
    assert sum(roboflow.counts.values()) == asked


def test_cached_copy_serves_while_roboflow_is_down(start_server, cache_dir):
    assert (cache_dir / "workflows" / "acme").is_dir()  # the tests above cached acme/detect for KEY
    down = dead_url()
    # ttl 0: every run asks the API first; it cannot be reached, so the disk copy serves.
    for flags in (["--roboflow-api-url", down, "--workflow-definition-cache-ttl", "0"], ["--offline"]):
        h = start_server(flags + ["--cache-dir", str(cache_dir)])
        r = post(h.url, DETECT, body(KEY))
        assert r.status_code == 200, (flags, r.text)
        compare(r.json(), golden("01_detect")["cases"][0]["http_response"]["body"], "down", stats())
        # No copy for another key: Roboflow's offline answer.
        r = post(h.url, DETECT, body(OTHER))
        assert r.status_code == 503 and r.json()["message"] == "Internal error. Could not connect to Roboflow API."
        h.stop()


TENANTS = {"alice": ("alice-secret", KEY), "bob": ("bob-secret", OTHER), "carol": ("carol-secret", None)}


@pytest.fixture(scope="module")
def tenants_file(tmp_path_factory):
    out = []
    for name, (key, rf_key) in TENANTS.items():
        out.append(f'[[tenant]]\nname = "{name}"\napi_keys = ["{sha(key)}"]\nmodels = ["*"]\nplugins = ["*"]\n')
        if rf_key:
            out.append(f'roboflow_api_key = "{rf_key}"\n')
    path = tmp_path_factory.mktemp("wf-tenants") / "tenants.toml"
    path.write_text("\n".join(out))
    return path


def test_a_tenant_is_never_served_another_tenants_workflow(start_server, roboflow, tenants_file, tmp_path_factory):
    cache = tmp_path_factory.mktemp("wf-tenant-cache")
    h = start_server(["--tenants", str(tenants_file), "--roboflow-api-url", roboflow.url, "--cache-dir", str(cache)])
    seen = len(roboflow.keys_seen)
    r = post(h.url, DETECT, body(TENANTS["alice"][0]))
    assert r.status_code == 200, r.text
    # Bob's own Roboflow key asks (alice's cached copy is not his): Roboflow says no.
    r = post(h.url, DETECT, body(TENANTS["bob"][0]))
    assert r.status_code == 403, r.text
    # Carol has no Roboflow key: nothing is fetched for her, and alice's copy is not hers either.
    r = post(h.url, DETECT, body(TENANTS["carol"][0]))
    assert r.status_code == 404, r.text
    # The tenants' keys to this server never go to Roboflow, only their roboflow_api_keys.
    assert roboflow.keys_seen[seen:] == [KEY, OTHER]
    h.stop()
    # Roboflow down: alice still runs from her disk copy; bob has none, carol no key.
    h = start_server(["--tenants", str(tenants_file), "--roboflow-api-url", dead_url(), "--cache-dir", str(cache),
                      "--workflow-definition-cache-ttl", "0"])
    assert post(h.url, DETECT, body(TENANTS["alice"][0])).status_code == 200
    assert post(h.url, DETECT, body(TENANTS["bob"][0])).status_code == 503
    assert post(h.url, DETECT, body(TENANTS["carol"][0])).status_code == 404
    h.stop()
