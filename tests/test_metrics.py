"""Operations: every response carries an x-request-id (the client's own, else a UUID) that the
request's log line also carries, and GET /metrics exposes Prometheus metrics that move with
the traffic, labelled by route template (never raw paths)."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import requests

from helpers import DEV_IMAGES, HTTP_TIMEOUT, img_b64

IMG = DEV_IMAGES / "01_multi_320x320.jpg"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    r = requests.get(f"{base}/metrics", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    samples = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples


def value(samples, name: str, **labels) -> float:
    """The sum of `name` over the series whose labels include `labels` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def label_values(samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls), _ in samples.items() if n == name and label in dict(ls)}


def is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
        return True
    except ValueError:
        return False


def test_request_id_is_generated_or_echoed(server):
    ids = set()
    for method, path, kwargs, status in [
        ("GET", "/healthz", {}, 200),
        ("GET", "/no/such/route/here", {}, 404),
        ("POST", "/infer/object_detection", {"data": b"not json"}, 422),
        ("DELETE", "/healthz", {}, 405),
        ("GET", "/metrics", {}, 200),
    ]:
        r = requests.request(method, f"{server}{path}", timeout=HTTP_TIMEOUT, **kwargs)
        assert r.status_code == status, (path, r.status_code, r.text[:200])
        rid = r.headers.get("x-request-id")
        assert rid and is_uuid(rid), (path, r.headers)
        ids.add(rid)
        mine = f"client-{uuid.uuid4().hex}"
        r = requests.request(method, f"{server}{path}", headers={"X-Request-Id": mine}, timeout=HTTP_TIMEOUT,
                             **kwargs)
        assert r.headers.get("x-request-id") == mine, (path, r.headers)
    assert len(ids) == 5, "request ids are not fresh per request"


def test_request_log_line_carries_the_request_id(start_server):
    srv = start_server(["--log-format", "json"])
    rid = f"log-check-{uuid.uuid4().hex}"
    r = requests.get(f"{srv.url}/shapes-detect/1", params={"api_key": "secret-key", "image": "nope"},
                     headers={"x-request-id": rid}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400, r.text[:300]
    deadline = time.monotonic() + 5
    found = []
    while time.monotonic() < deadline and not found:
        lines = srv.log_tail(400).splitlines()
        found = [json.loads(line) for line in lines if rid in line]
        time.sleep(0.1)
    assert found, srv.log_tail(40)
    text = srv.log_tail(400)
    assert "secret-key" not in text, "the query string (api_key) reached the log"
    done = [e for e in found if e.get("fields", {}).get("message") == "finished processing request"]
    assert len(done) == 1, found
    entry = done[0]
    assert entry["level"] == "INFO"
    assert entry["span"]["request_id"] == rid, entry
    assert entry["span"]["route"] == "/{dataset}/{version}", entry
    assert entry["span"]["path"] == "/shapes-detect/1", entry
    assert int(entry["fields"]["status"]) == 400, entry


def test_metrics_move_after_an_inference(server):
    before = scrape(server)
    r = requests.post(f"{server}/infer/object_detection",
                      json={"model_id": "shapes-detect/1", "image": img_b64(IMG.read_bytes())}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    r = requests.post(f"{server}/shapes-detect/1", files={"file": ("a.jpg", IMG.read_bytes())}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    r = requests.get(f"{server}/not-a-model-{uuid.uuid4().hex}/1", timeout=HTTP_TIMEOUT)
    assert r.status_code in (400, 404), r.text[:300]
    after = scrape(server)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    od = {"route": "/infer/object_detection", "method": "POST", "status": "200"}
    assert delta("inference_requests_total", **od) == 1
    assert delta("inference_request_duration_seconds_count", **od) == 1
    assert delta("inference_request_duration_seconds_sum", **od) > 0
    assert delta("inference_request_duration_seconds_bucket", le="+Inf", **od) == 1
    legacy = {"route": "/{dataset}/{version}", "method": "POST", "status": "200"}
    assert delta("inference_requests_total", **legacy) == 1
    # One image per request here: each stage ran twice.
    for stage in ("inference_decode_seconds", "inference_queue_seconds"):
        assert delta(f"{stage}_count") == 2, stage
    assert delta("inference_plugin_seconds_count", model="shapes-detect/1") == 2
    assert delta("inference_model_seconds_count", model="shapes-detect/1") >= 2
    assert delta("inference_model_seconds_sum", model="shapes-detect/1") > 0
    # A plugin call split into its stages: in the guest before the run, the run, after it; together
    # no longer than the call.
    stages = {st: delta("inference_plugin_stage_seconds_sum", model="shapes-detect/1", stage=st)
              for st in ("pre", "run", "post")}
    for st in stages:
        assert delta("inference_plugin_stage_seconds_count", model="shapes-detect/1", stage=st) == 2, st
        assert stages[st] > 0, stages
    assert sum(stages.values()) <= delta("inference_plugin_seconds_sum", model="shapes-detect/1"), stages
    assert stages["run"] >= delta("inference_model_seconds_sum", model="shapes-detect/1") * 0.99, stages
    assert value(after, "inference_models_loaded") >= 1
    assert ("inference_in_flight_requests", frozenset()) in after  # this scrape itself is in flight
    # Routes are templates: no raw path (and so no unknown model id) becomes a label.
    routes = label_values(after, "inference_requests_total", "route")
    assert all(r == "unmatched" or r.startswith("/") for r in routes), routes
    assert not any("shapes-detect" in r or "not-a-model" in r for r in routes), routes
    models = label_values(after, "inference_model_seconds_count", "model") | label_values(
        after, "inference_plugin_seconds_count", "model")
    assert not any(m.startswith("not-a-model") for m in models), models
    # Requests are labelled with the model they ran; a made-up id never becomes a label.
    assert delta("inference_requests_total", model="shapes-detect/1", tenant="none", **od) == 1
    assert delta("inference_requests_total", model="shapes-detect/1", **legacy) == 1
    request_models = label_values(after, "inference_requests_total", "model")
    assert not any(m.startswith("not-a-model") for m in request_models), request_models


def test_histograms_have_buckets(server):
    text = requests.get(f"{server}/metrics", timeout=HTTP_TIMEOUT).text
    for name in ("inference_request_duration_seconds", "inference_decode_seconds", "inference_queue_seconds",
                 "inference_plugin_seconds", "inference_model_seconds"):
        assert f"# TYPE {name} histogram" in text, name


@pytest.fixture(scope="module")
def trap_server(start_server, repo):
    d = repo / "target" / "release" / "test-plugins"
    if not d.is_dir():
        pytest.fail(f"{d} does not exist: run scripts/setup (it builds the trapping test plugin)", pytrace=False)
    return start_server(["--plugins-dir", str(d)])


def test_plugin_traps_are_counted(trap_server):
    base = trap_server.url
    before = scrape(base)
    r = requests.post(f"{base}/infer/object_detection",
                      json={"model_id": "shapes-detect/1", "image": img_b64(IMG.read_bytes())}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 500, r.text[:300]
    after = scrape(base)
    traps = value(after, "inference_plugin_traps_total", kind="trap") - value(
        before, "inference_plugin_traps_total", kind="trap")
    assert traps == 1, [k for k in after if k[0] == "inference_plugin_traps_total"]
    plugins = label_values(after, "inference_plugin_traps_total", "plugin")
    assert plugins and all(p for p in plugins), plugins
    assert value(after, "inference_requests_total", route="/infer/object_detection", status="500") >= 1


def test_model_download_cache_and_eviction_metrics(start_server, tmp_path):
    """Downloads by source and outcome, bytes, seconds; cache size; evictions and unloads."""
    from roboflow_double import SHAPES_ENVIRONMENT, ModelStoreDouble

    models = tmp_path / "models"
    models.mkdir()
    with ModelStoreDouble() as store:
        for model_id in ("shapes-a/1", "shapes-b/1"):
            store.add(model_id, environment=SHAPES_ENVIRONMENT)
        store.manifest_override["shapes-bad/1"] = {"weights.onnx": {"sha256": "0" * 64}}
        store.add("shapes-bad/1")
        size = sum(len(d) for d in store.models["shapes-a/1"].values())
        h = start_server(["--cache-dir", str(tmp_path / "cache"), "--model-store", store.store_url,
                          "--max-loaded-models", "1", "--cache-max-bytes", str(size * 3 // 2)], models=models)
        body = {"image": img_b64(IMG.read_bytes()), "confidence": 0.25}

        def detect(model_id):
            return requests.post(f"{h.url}/infer/object_detection", json={"model_id": model_id, **body},
                                 timeout=HTTP_TIMEOUT)

        assert detect("shapes-a/1").status_code == 200
        after_one = scrape(h.url)
        assert value(after_one, "inference_model_downloads_total", source="http", outcome="ok") == 1
        assert value(after_one, "inference_model_download_bytes_total", source="http") == size
        assert value(after_one, "inference_model_cache_bytes") == size
        assert value(after_one, "inference_model_download_seconds_count", source="http", outcome="ok") == 1
        assert detect("shapes-b/1").status_code == 200
        assert detect("shapes-bad/1").status_code == 502
        s = scrape(h.url)
        assert value(s, "inference_model_downloads_total", source="http", outcome="ok") == 2
        assert value(s, "inference_model_downloads_total", source="http", outcome="bad") == 1
        assert value(s, "inference_model_cache_evictions_total") >= 1
        assert value(s, "inference_model_unloads_total") >= 1
        assert value(s, "inference_model_cache_bytes") == size  # only shapes-b/1 is left
        assert value(s, "inference_models_loaded") == 1
