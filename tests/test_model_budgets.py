"""Budgets and lifecycle of models: --cache-max-bytes (LRU eviction of cached files),
--max-loaded-models (LRU unloading), --preload (pinned, readiness waits for it), /model/remove and
/model/clear with ?purge=true, and loading one model never holding up requests for another."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from conftest import ServerHandle
from helpers import HTTP_TIMEOUT, assert_same, error_message
from roboflow_double import ModelStoreDouble, SHAPES_ENVIRONMENT
from test_model_sources import detect, files_in, ok

IDS = ("shapes-a/1", "shapes-b/1")


@pytest.fixture
def store():
    with ModelStoreDouble() as double:
        for model_id in IDS:
            double.add(model_id, environment=SHAPES_ENVIRONMENT)
        yield double


@pytest.fixture
def empty_models(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    return d


def model_bytes(store, model_id):
    return sum(len(data) for data in store.models[model_id].values())


def loaded(url):
    reg = requests.get(f"{url}/model/registry", timeout=HTTP_TIMEOUT).json()
    return {m["model_id"] for m in reg["models"]}


def test_cache_budget_evicts_least_recently_used_and_keeps_answering(start_server, store, empty_models, tmp_path,
                                                                     server):
    reference = ok(detect(server, "shapes-detect/1"))
    cache = tmp_path / "cache"
    budget = model_bytes(store, "shapes-a/1") * 3 // 2  # room for one model, not two
    h = start_server(["--cache-dir", str(cache), "--model-store", store.store_url, "--max-loaded-models", "1",
                      "--cache-max-bytes", str(budget)], models=empty_models)
    dirs = {m: cache / "models" / m for m in IDS}
    for round_ in range(2):
        for model_id, other in (IDS, IDS[::-1]):
            assert_same(reference, ok(detect(h.url, model_id)), f"{model_id}, round {round_}")
            assert ".verified" in files_in(dirs[model_id])
            assert not dirs[other].exists(), f"{other} not evicted: {files_in(dirs[other])}"
            assert loaded(h.url) == {model_id}
    # Each model was downloaded once per round: evicted files are fetched again.
    weights = [store.counts[store.file_path(m, "weights.onnx")] for m in IDS]
    assert weights == [2, 2], store.counts
    log = h.log_path.read_text(errors="replace")
    assert "evicted" in log and "unloaded" in log


def test_loaded_budget_unloads_least_recently_used_but_never_pinned(start_server):
    h = start_server(["--max-loaded-models", "2", "--preload", "shapes-seg/1"])
    assert loaded(h.url) == {"shapes-seg/1"}
    ok(detect(h.url, "shapes-detect/1"))
    assert loaded(h.url) == {"shapes-seg/1", "shapes-detect/1"}
    ok(detect(h.url, "shapes-detect-static/1"))
    # shapes-seg/1 is older but pinned: shapes-detect/1 goes.
    assert loaded(h.url) == {"shapes-seg/1", "shapes-detect-static/1"}
    ok(detect(h.url, "shapes-detect/1"))
    assert loaded(h.url) == {"shapes-seg/1", "shapes-detect/1"}


def test_readiness_waits_for_preload_and_slow_load_blocks_no_other_model(inference_bin, models_dir, store,
                                                                         tmp_path):
    """A trickling download of a preloaded model B: /readiness says 503 meanwhile, and requests for
    model A (local) keep answering fast."""
    weights_path = store.file_path("shapes-b/1", "weights.onnx")
    store.trickle[weights_path] = 6.0
    h = ServerHandle(inference_bin, ["--models-dir", str(models_dir), "--cache-dir", str(tmp_path / "cache"),
                                     "--model-store", store.store_url, "--preload", "shapes-b/1"],
                     tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 60
        while store.counts[weights_path] == 0:
            assert time.monotonic() < deadline and h.alive(), h.log_tail()
            time.sleep(0.05)
        r = requests.get(f"{h.url}/readiness", timeout=HTTP_TIMEOUT)
        assert r.status_code == 503 and r.json()["status"] == "not ready", r.text
        ok(detect(h.url, "shapes-detect/1"))  # load A
        times = []
        while h.alive() and requests.get(f"{h.url}/readiness", timeout=HTTP_TIMEOUT).status_code == 503:
            t0 = time.perf_counter()
            ok(detect(h.url, "shapes-detect/1"))
            times.append(time.perf_counter() - t0)
            assert time.monotonic() < deadline, h.log_tail()
        assert len(times) >= 5, f"the preload finished too soon to tell ({len(times)} requests)"
        assert max(times) < 1.0, f"requests for a loaded model waited for another model's load: {times}"
        assert loaded(h.url) == {"shapes-detect/1", "shapes-b/1"}
        assert "model download progress" in h.log_path.read_text(errors="replace")
    finally:
        h.stop()


def test_remove_keeps_files_purge_deletes_cache_only(start_server, store, models_dir, tmp_path):
    cache = tmp_path / "cache"
    h = start_server(["--cache-dir", str(cache), "--model-store", store.store_url], models=models_dir)
    model_dir = cache / "models" / "shapes-a" / "1"
    ok(detect(h.url, "shapes-a/1"))
    post = lambda path, **kw: requests.post(f"{h.url}{path}", timeout=HTTP_TIMEOUT, **kw)  # noqa: E731
    assert post("/model/remove", json={"model_id": "shapes-a/1"}).status_code == 200
    assert "shapes-a/1" not in loaded(h.url) and ".verified" in files_in(model_dir)
    ok(detect(h.url, "shapes-a/1"))
    assert store.counts[store.file_path("shapes-a/1", "weights.onnx")] == 1  # from the cache
    r = post("/model/remove", params={"purge": "true"}, json={"model_id": "shapes-a/1"})
    assert r.status_code == 200, r.text
    assert not model_dir.exists()
    # Purging a models-directory model unloads it and leaves its file alone.
    ok(detect(h.url, "shapes-detect/1"))
    assert post("/model/remove", params={"purge": "true"}, json={"model_id": "shapes-detect/1"}).status_code == 200
    assert (models_dir / "shapes-detect" / "1" / "weights.onnx").is_file()
    # clear?purge=true: every loaded model unloaded, downloaded ones deleted.
    ok(detect(h.url, "shapes-a/1"))
    ok(detect(h.url, "shapes-b/1"))
    ok(detect(h.url, "shapes-detect/1"))
    r = post("/model/clear", params={"purge": "true"})
    assert r.status_code == 200 and r.json()["models"] == [], r.text
    assert not (cache / "models" / "shapes-b" / "1").exists() and not model_dir.exists()
    assert (models_dir / "shapes-detect" / "1" / "weights.onnx").is_file()
    r = post("/model/clear", params={"purge": "maybe"})
    assert r.status_code == 400 and "purge" in error_message(r), r.text


def test_cache_budget_applies_at_start_up_oldest_first(start_server, store, empty_models, tmp_path):
    cache = tmp_path / "cache"
    h = start_server(["--cache-dir", str(cache), "--model-store", store.store_url], models=empty_models)
    ok(detect(h.url, "shapes-a/1"))
    ok(detect(h.url, "shapes-b/1"))
    h.stop()
    budget = model_bytes(store, "shapes-a/1") * 3 // 2
    again = start_server(["--cache-dir", str(cache), "--offline", "--cache-max-bytes", str(budget)],
                         models=empty_models)
    assert not (cache / "models" / "shapes-a" / "1").exists()  # least recently used
    ok(detect(again.url, "shapes-b/1"))
