"""Models on demand: downloaded on first request from an HTTP model store or Roboflow's API
(test doubles in roboflow_double.py: Roboflow cannot be reached from the tests), verified,
cached, and served from the cache afterwards, also offline and across restarts."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import _free_port
from helpers import DEV_IMAGES, HTTP_TIMEOUT, assert_same, check_od_response, error_message, img_b64, infer
from roboflow_double import ModelStoreDouble, RoboflowDouble

KEY = "rf-test-key-7c1d9e"
IMAGE = img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())
PARAMS = {"confidence": 0.25, "iou_threshold": 0.45}


def detect(base, model_id, api_key=None, headers=None, **params):
    body = {"model_id": model_id, "image": IMAGE, **PARAMS, **params}
    if api_key is not None:
        body["api_key"] = api_key
    return requests.post(f"{base}/infer/object_detection", json=body, headers=headers, timeout=HTTP_TIMEOUT)


def ok(r):
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:1000]}"
    data = r.json()
    check_od_response(data)
    return data


def files_in(directory: Path) -> set:
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


@pytest.fixture
def roboflow():
    with RoboflowDouble(keys=(KEY,)) as double:
        double.add_shapes("shapes-rf/1")
        yield double


@pytest.fixture
def store():
    with ModelStoreDouble() as double:
        double.add("shapes-store/1", environment={"CLASS_MAP": {"0": "circle", "1": "square", "2": "triangle"}})
        yield double


@pytest.fixture
def empty_models(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    return d


@pytest.fixture
def reference(server):
    """Predictions of the local copy of shapes-detect on the shared server."""
    return ok(detect(server, "shapes-detect/1"))


def rf_server(start_server, roboflow, cache, models, *extra):
    return start_server(["--cache-dir", str(cache), "--roboflow-api-url", roboflow.url, *extra], models=models)


# --------------------------------------------------------------------------- Roboflow

def test_roboflow_first_request_downloads_then_serves_from_cache(start_server, roboflow, empty_models, tmp_path,
                                                                 reference):
    cache = tmp_path / "cache"
    h = rf_server(start_server, roboflow, cache, empty_models)
    ort, weights, env = "/ort/shapes-rf/1", roboflow.model_path("shapes-rf/1"), roboflow.env_path("shapes-rf/1")

    t0 = time.perf_counter()
    first = ok(detect(h.url, "shapes-rf/1", api_key=KEY))
    first_s = time.perf_counter() - t0
    assert (roboflow.counts[ort], roboflow.counts[weights], roboflow.counts[env]) == (1, 1, 1), roboflow.counts
    # The protocol: api_key, device, nocache=true, dynamic=true.
    query = dict(roboflow.queries)[ort]
    assert query["api_key"] == KEY and query["nocache"] == "true" and query["dynamic"] == "true" and query["device"]
    assert_same(reference, first, "downloaded from Roboflow vs local copy")

    t0 = time.perf_counter()
    second = ok(detect(h.url, "shapes-rf/1", api_key=KEY))
    cached_s = time.perf_counter() - t0
    assert sum(roboflow.counts.values()) == 3, f"second request touched the network: {roboflow.counts}"
    assert_same(first, second, "second request")
    print(f"\nshapes-detect via the Roboflow double: first request {first_s * 1e3:.0f} ms, "
          f"cached {cached_s * 1e3:.0f} ms")

    model_dir = cache / "models" / "shapes-rf" / "1"
    assert files_in(model_dir) == {"weights.onnx", "environment.json", "class_names.txt", "model_type.json",
                                   "owner.json", ".verified"}
    # Who fetched it, as the sha256 of the key (never the key itself): see test_model_ownership.py.
    assert json.loads((model_dir / "owner.json").read_text()) == {
        "api_key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}
    assert (model_dir / "class_names.txt").read_text().split() == ["circle", "square", "triangle"]
    assert json.loads((model_dir / "model_type.json").read_text())["project_task_type"] == "object-detection"
    verified = json.loads((model_dir / ".verified").read_text())
    assert set(verified["files"]) == files_in(model_dir) - {".verified"}
    assert all(len(f["sha256"]) == 64 for f in verified["files"].values())
    reg = requests.get(f"{h.url}/model/registry", timeout=HTTP_TIMEOUT).json()
    assert "shapes-rf/1" in {m["model_id"] for m in reg["models"]}

    h.stop()
    log = h.log_path.read_text(errors="replace")
    assert KEY not in log, "the api key was logged"
    assert "model download" in log

    # Restart with the same cache, Roboflow gone: served from the cache, no api key needed.
    roboflow.stop()
    again = rf_server(start_server, roboflow, cache, empty_models)
    t0 = time.perf_counter()
    assert_same(first, ok(detect(again.url, "shapes-rf/1")), "after restart, from the cache")
    print(f"after a restart (verify the cache + load): {(time.perf_counter() - t0) * 1e3:.0f} ms")


def test_roboflow_key_in_query_bearer_and_model_add(start_server, roboflow, empty_models, tmp_path):
    for v in ("2", "3", "4"):
        roboflow.add_shapes(f"shapes-rf/{v}")
    h = rf_server(start_server, roboflow, tmp_path / "cache", empty_models)
    # Legacy route: ?api_key=
    r = requests.post(f"{h.url}/shapes-rf/2", params={"api_key": KEY, "confidence": 0.25},
                      data=IMAGE["value"], headers={"Content-Type": "application/x-www-form-urlencoded"},
                      timeout=HTTP_TIMEOUT)
    ok(r)
    # Authorization: Bearer
    ok(detect(h.url, "shapes-rf/3", headers={"Authorization": f"Bearer {KEY}"}))
    # /model/add {"api_key"}
    r = requests.post(f"{h.url}/model/add", json={"model_id": "shapes-rf/4", "api_key": KEY}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    assert all(roboflow.counts[f"/ort/shapes-rf/{v}"] == 1 for v in ("2", "3", "4")), roboflow.counts
    h.stop()
    assert KEY not in h.log_path.read_text(errors="replace")


def test_roboflow_401_and_404_pass_through(start_server, roboflow, empty_models, tmp_path):
    h = rf_server(start_server, roboflow, tmp_path / "cache", empty_models)
    r = detect(h.url, "shapes-rf/1", api_key="wrong-key")
    msg = error_message(r)
    assert r.status_code == 401, f"HTTP {r.status_code}: {msg}"
    assert "shapes-rf/1" in msg and "invalid api_key" in msg, msg
    assert "wrong-key" not in msg

    r = detect(h.url, "unknown-rf/1", api_key=KEY)
    msg = error_message(r)
    assert r.status_code == 404, f"HTTP {r.status_code}: {msg}"
    assert "does not exist" in msg, msg

    # Without an api key, Roboflow is not asked: plain 404.
    before = sum(roboflow.counts.values())
    r = detect(h.url, "other-rf/1")
    assert r.status_code == 404 and sum(roboflow.counts.values()) == before
    assert not (tmp_path / "cache" / "models" / "unknown-rf" / "1").exists()


def test_unreachable_source_is_503_with_retry_after(start_server, empty_models, tmp_path, store):
    dead = f"http://127.0.0.1:{_free_port()}"
    h = start_server(["--cache-dir", str(tmp_path / "cache"), "--roboflow-api-url", dead,
                      "--model-store", f"{dead}/store"], models=empty_models)
    for r in (detect(h.url, "shapes-rf/1", api_key=KEY), detect(h.url, "shapes-store/1")):
        msg = error_message(r)
        assert r.status_code == 503, f"HTTP {r.status_code}: {msg}"
        assert r.headers.get("Retry-After"), r.headers
        assert "could be reached" in msg, msg
        assert KEY not in msg
    # A reachable store after an unreachable one still serves.
    h2 = start_server(["--cache-dir", str(tmp_path / "cache2"), "--model-store", f"{dead}/store",
                       "--model-store", store.store_url], models=empty_models)
    ok(detect(h2.url, "shapes-store/1"))


def test_fifty_concurrent_first_requests_download_once(start_server, roboflow, empty_models, tmp_path):
    weights = roboflow.model_path("shapes-rf/1")
    roboflow.delay[weights] = 1.0  # keep the download open while the requests pile up
    h = rf_server(start_server, roboflow, tmp_path / "cache", empty_models)
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: detect(h.url, "shapes-rf/1", api_key=KEY), range(50)))
    assert [r.status_code for r in results] == [200] * 50, [r.text[:200] for r in results if r.status_code != 200]
    assert roboflow.counts["/ort/shapes-rf/1"] == 1 and roboflow.counts[weights] == 1, roboflow.counts


def test_killed_download_leaves_only_part_files_and_retries_cleanly(start_server, roboflow, empty_models, tmp_path):
    cache = tmp_path / "cache"
    weights = roboflow.model_path("shapes-rf/1")
    roboflow.stall.add(weights)
    h = rf_server(start_server, roboflow, cache, empty_models)
    def first_request():
        try:
            detect(h.url, "shapes-rf/1", api_key=KEY)
        except requests.ConnectionError:
            pass  # the server is killed mid-request

    pending = threading.Thread(target=first_request, daemon=True)
    pending.start()
    assert roboflow.stalled.wait(30), "the download never started"
    model_dir = cache / "models" / "shapes-rf" / "1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (model_dir / "weights.onnx.part").is_file():
        time.sleep(0.05)
    time.sleep(0.3)
    h.proc.send_signal(signal.SIGKILL)
    h.proc.wait(timeout=10)
    left = files_in(model_dir)
    assert left and all(name.endswith(".part") for name in left), left
    assert (model_dir / "weights.onnx.part").stat().st_size > 0

    roboflow.release()
    again = rf_server(start_server, roboflow, cache, empty_models)
    # Without a key the half-download is not a cached model.
    assert detect(again.url, "shapes-rf/1").status_code == 404
    ok(detect(again.url, "shapes-rf/1", api_key=KEY))
    assert roboflow.counts[weights] == 2
    assert not any(n.endswith(".part") for n in files_in(model_dir)), files_in(model_dir)
    assert ".verified" in files_in(model_dir)


# --------------------------------------------------------------------------- HTTP model store

def test_model_store_download_and_cache(start_server, store, empty_models, tmp_path, reference):
    cache = tmp_path / "cache"
    h = start_server(["--cache-dir", str(cache), "--model-store", store.store_url], models=empty_models)
    assert_same(reference, ok(detect(h.url, "shapes-store/1")), "from the model store")
    ok(detect(h.url, "shapes-store/1"))
    assert store.counts[store.file_path("shapes-store/1", "manifest.json")] == 1
    assert store.counts[store.file_path("shapes-store/1", "weights.onnx")] == 1
    assert store.counts[store.file_path("shapes-store/1", "environment.json")] == 1
    assert files_in(cache / "models" / "shapes-store" / "1") == {"weights.onnx", "environment.json", ".verified"}
    # Not in the store: 404 (the store answered 404 for the manifest).
    assert detect(h.url, "absent/1").status_code == 404


@pytest.mark.parametrize("kind", ["sha256", "truncated", "oversized"])
def test_model_store_tampered_file_is_502_deleted_never_loaded(start_server, store, empty_models, tmp_path, kind):
    real = store.models["shapes-store/1"]["weights.onnx"]
    if kind == "sha256":
        store.manifest_override["shapes-store/1"] = {"weights.onnx": {"sha256": "0" * 64}}
    elif kind == "truncated":
        store.serve_override["shapes-store/1"] = {"weights.onnx": real[: len(real) // 2]}
    else:
        store.serve_override["shapes-store/1"] = {"weights.onnx": real + b"\0" * 1024}
    cache = tmp_path / "cache"
    h = start_server(["--cache-dir", str(cache), "--model-store", store.store_url], models=empty_models)
    for _ in range(2):
        r = detect(h.url, "shapes-store/1")
        msg = error_message(r)
        assert r.status_code == 502, f"{kind}: HTTP {r.status_code}: {msg}"
        assert "shapes-store/1" in msg and "weights.onnx" in msg, msg
        assert not (cache / "models" / "shapes-store" / "1").exists(), files_in(cache / "models" / "shapes-store" / "1")
    reg = requests.get(f"{h.url}/model/registry", timeout=HTTP_TIMEOUT).json()
    assert "shapes-store/1" not in {m["model_id"] for m in reg["models"]}
    assert store.counts[store.file_path("shapes-store/1", "weights.onnx")] == 2


def test_cached_file_tampered_on_disk_is_refetched_not_loaded(start_server, store, empty_models, tmp_path):
    cache = tmp_path / "cache"
    args = ["--cache-dir", str(cache), "--model-store", store.store_url]
    h = start_server(args, models=empty_models)
    ok(detect(h.url, "shapes-store/1"))
    h.stop()
    weights = cache / "models" / "shapes-store" / "1" / "weights.onnx"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    # Offline, the tampered copy is refused (deleted), not loaded.
    off = start_server(["--cache-dir", str(cache), "--offline"], models=empty_models)
    assert detect(off.url, "shapes-store/1").status_code == 503
    assert not weights.exists()
    off.stop()
    # Online: downloaded again.
    again = start_server(args, models=empty_models)
    ok(detect(again.url, "shapes-store/1"))
    assert store.counts[store.file_path("shapes-store/1", "weights.onnx")] == 2


def test_models_route_lists_models_dir_and_cache(start_server, inference_bin, store, models_dir, tmp_path):
    """`GET /models`: what the server can serve without a download, from both places."""
    from conftest import MODEL_FILES

    cache = tmp_path / "cache"
    # A cached copy of a model that the models directory also has: the served copy is listed.
    store.add("shapes-detect/1", onnx="shapes-seg.onnx")
    pulled = cli(inference_bin, "pull", "shapes-detect/1", "--model-store", store.store_url, "--cache-dir", str(cache))
    assert pulled.returncode == 0, pulled.stderr
    h = start_server(["--cache-dir", str(cache), "--model-store", store.store_url], models=models_dir)

    def listed():
        r = requests.get(f"{h.url}/models", timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        ids = [m["model_id"] for m in r.json()["models"]]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), ids
        return {m["model_id"]: m for m in r.json()["models"]}

    models = listed()
    assert set(models) == set(MODEL_FILES)
    for model_id, fname in MODEL_FILES.items():
        assert models[model_id]["location"] == "models_dir"
        assert models[model_id]["bytes"] == (models_dir / model_id / "weights.onnx").stat().st_size
        assert models[model_id]["loaded"] is False
    detect_model = models["shapes-detect/1"]
    assert (detect_model["task_type"], detect_model["route"]) == ("object-detection", "/infer/object_detection")
    assert (models["shapes-seg/1"]["task_type"], models["shapes-seg/1"]["route"]) == \
        ("instance-segmentation", "/infer/instance_segmentation")
    assert (models["shapes-cls/1"]["task_type"], models["shapes-cls/1"]["route"]) == \
        ("classification", "/infer/classification")
    assert (models["shapes-pose/1"]["task_type"], models["shapes-pose/1"]["route"]) == \
        ("keypoint-detection", "/infer/keypoints_detection")

    # Downloaded on first use: then listed from the cache, loaded.
    ok(detect(h.url, "shapes-store/1"))
    ok(detect(h.url, "shapes-detect/1"))
    models = listed()
    store_model = models["shapes-store/1"]
    files = store.models["shapes-store/1"]
    assert store_model["location"] == "cache" and store_model["loaded"] is True
    assert store_model["bytes"] == sum(len(data) for data in files.values())
    assert (store_model["task_type"], store_model["route"]) == ("object-detection", "/infer/object_detection")
    assert models["shapes-detect/1"]["loaded"] is True and models["shapes-detect/1"]["location"] == "models_dir"


# --------------------------------------------------------------------------- offline

def test_offline_serves_cached_and_local_refuses_the_rest(start_server, roboflow, store, models_dir, tmp_path,
                                                          image_server):
    cache = tmp_path / "cache"
    online = start_server(["--cache-dir", str(cache), "--model-store", store.store_url], models=models_dir)
    ok(detect(online.url, "shapes-store/1"))
    online.stop()
    store.counts.clear()
    roboflow.counts.clear()
    off = start_server(["--cache-dir", str(cache), "--offline", "--model-store", store.store_url,
                        "--roboflow-api-url", roboflow.url, "--allow-http-urls", "--allow-private-urls"],
                       models=models_dir)
    ok(detect(off.url, "shapes-store/1"))      # cached
    ok(detect(off.url, "shapes-detect/1"))     # local
    r = detect(off.url, "shapes-rf/1", api_key=KEY)
    msg = error_message(r)
    assert r.status_code == 503 and "offline" in msg and "shapes-rf/1" in msg, f"HTTP {r.status_code}: {msg}"
    r = infer(off.url, "shapes-detect/1", {"type": "url", "value": f"{image_server}/dev/01_multi_320x320.jpg"})
    assert r.status_code == 400 and "offline" in error_message(r)
    assert sum(store.counts.values()) == 0 and sum(roboflow.counts.values()) == 0


# --------------------------------------------------------------------------- CLI

def cli(inference_bin, *args, env=None):
    return subprocess.run([str(inference_bin), "models", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_cli_pull_list_rm(inference_bin, roboflow, store, models_dir, tmp_path):
    cache = str(tmp_path / "cache")
    dirs = ["--cache-dir", cache, "--models-dir", str(models_dir)]
    r = cli(inference_bin, "pull", "shapes-rf/1", "--api-key", KEY, "--roboflow-api-url", roboflow.url, *dirs)
    assert r.returncode == 0, r.stderr
    assert "weights.onnx" in r.stderr and "/s)" in r.stderr, r.stderr  # progress: bytes and rate
    assert KEY not in r.stdout + r.stderr
    r = cli(inference_bin, "pull", "shapes-store/1", "--model-store", store.store_url, *dirs)
    assert r.returncode == 0, r.stderr
    again = cli(inference_bin, "pull", "shapes-store/1", "--model-store", store.store_url, *dirs)
    assert again.returncode == 0 and "already" in again.stderr
    assert store.counts[store.file_path("shapes-store/1", "weights.onnx")] == 1

    listing = cli(inference_bin, "list", *dirs)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert rows["shapes-rf/1"][1] == "cache" and "object-detection" in rows["shapes-rf/1"]
    assert rows["shapes-store/1"][1] == "cache" and "object-detection" in rows["shapes-store/1"]  # ONNX metadata
    assert rows["shapes-detect/1"][1] == "local"
    assert rows["shapes-seg/1"][4] == "instance-segmentation"

    assert cli(inference_bin, "rm", "shapes-rf/1", *dirs).returncode == 0
    assert cli(inference_bin, "rm", "shapes-rf/1", *dirs).returncode != 0
    gone = cli(inference_bin, "rm", "shapes-detect/1", *dirs)
    assert gone.returncode != 0 and "not in the cache" in gone.stderr
    assert (models_dir / "shapes-detect" / "1" / "weights.onnx").is_file()
    listing = cli(inference_bin, "list", *dirs).stdout
    assert "shapes-rf/1" not in listing and "shapes-store/1" in listing

    bad = cli(inference_bin, "pull", "shapes-rf/1", "--api-key", "nope", "--roboflow-api-url", roboflow.url, *dirs)
    assert bad.returncode != 0 and "401" in bad.stderr


def test_concurrent_requests_share_a_failed_download(start_server, roboflow, empty_models, tmp_path):
    """Requests queued behind a failing download get its answer instead of retrying one by one."""
    roboflow.delay["/ort/shapes-rf/1"] = 1.0
    h = rf_server(start_server, roboflow, tmp_path / "cache", empty_models)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: detect(h.url, "shapes-rf/1", api_key="wrong-key"), range(20)))
    assert [r.status_code for r in results] == [401] * 20
    assert roboflow.counts["/ort/shapes-rf/1"] == 1, roboflow.counts


def test_cli_pull_shows_a_progress_bar_on_a_terminal(inference_bin, store, tmp_path):
    """On a terminal, `models pull` draws a bar with size, rate and ETA (indicatif)."""
    import pty

    store.trickle[store.file_path("shapes-store/1", "weights.onnx")] = 1.5
    main, secondary = pty.openpty()
    proc = subprocess.Popen([str(inference_bin), "models", "pull", "shapes-store/1", "--cache-dir",
                             str(tmp_path / "cache"), "--model-store", store.store_url],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "shapes-store/1 weights.onnx" in text and "ETA" in text and "KiB/s" in text, text
    assert "[" in text and "=" in text, text  # the bar itself
