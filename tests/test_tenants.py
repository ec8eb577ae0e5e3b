"""Multi-tenant hosting (`--tenants`): API keys (hashed in the file, from api_key in the query
or JSON body, or Authorization: Bearer), model namespaces and plugins per tenant, rate and
concurrency quotas, input caps, and the refusal to serve open on a non-loopback address.

Tenants of the server under test:
* acme: models `shapes-*`, plugins object-detection + object-counts, generous quotas;
* beta: models `nudenet`, plugin object-detection, 1 image per request, small pixel and body caps;
* slow: models `*`, plugins `*`, 1 request at a time (for the concurrency cap);
* tight: models `*`, 1 request/s with a burst of 2 (for the rate limit);
* ops: admin (may read /metrics), models `rf-*` downloaded from Roboflow with its own Roboflow key.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import FIXTURES, REPO, SHAPES, NUDENET, assert_error, img_b64, img_url, png_bytes, key_sha as sha
from roboflow_double import RoboflowDouble

RELEASE = REPO / "target" / "release"
IMAGE_BYTES = (FIXTURES / "images" / "dev" / "01_multi_320x320.jpg").read_bytes()
IMAGE = img_b64(IMAGE_BYTES)
KEYS = {"acme": "acme-secret-1", "beta": "beta-secret", "slow": "slow-secret", "tight": "tight-secret",
        "ops": "ops-secret"}
RF_KEY = "roboflow-key-of-ops"


def tenants_toml() -> str:
    return f"""
[defaults]
requests_per_second = 1000
max_concurrent = 16

[[tenant]]
name = "acme"
api_keys = ["{sha(KEYS['acme'])}", "{sha('acme-secret-2')}"]
models = ["shapes-*"]
plugins = ["object-detection", "object-counts"]

[[tenant]]
name = "beta"
api_keys = ["{sha(KEYS['beta'])}"]
models = ["nudenet"]
plugins = ["object-detection"]
[tenant.limits]
max_batch = 1
max_image_pixels = 200000
max_body_bytes = 200000

[[tenant]]
name = "slow"
api_keys = ["{sha(KEYS['slow'])}"]
models = ["*"]
plugins = ["*"]
[tenant.limits]
max_concurrent = 1

[[tenant]]
name = "tight"
api_keys = ["{sha(KEYS['tight'])}"]
models = ["*"]
plugins = ["*"]
[tenant.limits]
requests_per_second = 1
burst = 2

[[tenant]]
name = "ops"
api_keys = ["{sha(KEYS['ops'])}"]
models = ["rf-*"]
plugins = ["*"]
admin = true
roboflow_api_key = "{RF_KEY}"
"""


class SlowImages(http.server.ThreadingHTTPServer):
    """Serves the fixture image after a delay, so a request stays in flight."""

    def __init__(self, delay: float):
        delay_s = delay

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                time.sleep(delay_s)
                self.send_response(200)
                self.send_header("content-type", "image/jpeg")
                self.send_header("content-length", str(len(IMAGE_BYTES)))
                self.end_headers()
                self.wfile.write(IMAGE_BYTES)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/image.jpg"


@pytest.fixture(scope="module")
def roboflow():
    with RoboflowDouble(keys=(RF_KEY,)) as double:
        double.add_shapes("rf-shapes/1")
        yield double


@pytest.fixture(scope="module")
def tenant_server(start_server, tmp_path_factory, roboflow):
    root = tmp_path_factory.mktemp("tenants")
    plugins = root / "plugins"
    plugins.mkdir()
    for src, name in [(RELEASE / "plugins", "object-detection"), (RELEASE / "plugins", "keypoint-detection"),
                      (RELEASE / "example-plugins", "object-counts")]:
        for ext in ("wasm", "toml"):
            shutil.copy(src / f"{name}.{ext}", plugins / f"{name}.{ext}")
    (root / "tenants.toml").write_text(tenants_toml())
    return start_server(["--tenants", str(root / "tenants.toml"), "--plugins-dir", str(plugins),
                         "--allow-http-urls", "--allow-private-urls", "--roboflow-api-url", roboflow.url,
                         "--cache-dir", str(root / "cache")])


def post(server, path, body=None, key=None, how="body", **kw):
    body = dict(body or {})
    headers = {}
    params = {}
    if key is not None:
        if how == "body":
            body["api_key"] = key
        elif how == "query":
            params["api_key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    return requests.post(f"{server.url}{path}", json=body, params=params, headers=headers, timeout=60, **kw)


def detect(server, model=SHAPES, key=KEYS["acme"], how="body", **params):
    return post(server, "/infer/object_detection", {"model_id": model, "image": IMAGE, **params}, key=key, how=how)


def test_a_valid_key_is_required(tenant_server):
    for key in (None, "", "wrong", KEYS["acme"] + "x", KEYS["acme"].upper()):
        r = detect(tenant_server, key=key)
        assert_error(r, 401)
        assert r.headers.get("www-authenticate") == "Bearer"
    for path in ("/model/registry", "/plugins", "/metrics"):
        assert_error(requests.get(f"{tenant_server.url}{path}", timeout=10), 401)
    # The legacy route too, with its key in the query like Roboflow's clients send it.
    r = requests.post(f"{tenant_server.url}/shapes-detect/1", params={"api_key": "nope"},
                      data=IMAGE["value"], timeout=30)
    assert_error(r, 401)
    # Liveness, readiness, identity and the docs stay public (probes and browsers have no key).
    for path in ("/healthz", "/readiness", "/info", "/openapi.json"):
        assert requests.get(f"{tenant_server.url}{path}", timeout=10).status_code == 200, path


@pytest.mark.parametrize("how", ["body", "query", "bearer"])
def test_keys_are_accepted_where_clients_send_them(tenant_server, how):
    r = detect(tenant_server, how=how)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]
    # A tenant may hold several keys.
    assert detect(tenant_server, key="acme-secret-2", how=how).status_code == 200


def test_legacy_route_with_query_key(tenant_server):
    r = requests.post(f"{tenant_server.url}/shapes-detect/1", params={"api_key": KEYS["acme"]},
                      data=IMAGE["value"], headers={"Content-Type": "application/x-www-form-urlencoded"},
                      timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]


def test_other_tenants_models_do_not_exist(tenant_server):
    # acme may not use nudenet: the same 404 as for a model that exists nowhere.
    hidden = detect(tenant_server, model=NUDENET)
    absent = detect(tenant_server, model="shapes-nowhere/1")
    assert_error(hidden, 404)
    assert_error(absent, 404)
    assert hidden.json()["message"] == absent.json()["message"].replace("shapes-nowhere/1", NUDENET)
    # beta may: it is served to beta, and beta in turn cannot see acme's.
    assert detect(tenant_server, model=NUDENET, key=KEYS["beta"]).status_code == 200
    assert_error(detect(tenant_server, key=KEYS["beta"]), 404)
    assert_error(post(tenant_server, "/model/add", {"model_id": SHAPES}, key=KEYS["beta"]), 404)
    assert_error(post(tenant_server, "/model/remove", {"model_id": SHAPES}, key=KEYS["beta"]), 404)
    registry = lambda key: {m["model_id"] for m in requests.get(  # noqa: E731
        f"{tenant_server.url}/model/registry", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["models"]}
    assert SHAPES in registry(KEYS["acme"]) and NUDENET not in registry(KEYS["acme"])
    assert NUDENET in registry(KEYS["beta"]) and SHAPES not in registry(KEYS["beta"])
    # beta clearing its models leaves acme's loaded.
    assert post(tenant_server, "/model/clear", key=KEYS["beta"]).status_code == 200
    assert SHAPES in registry(KEYS["acme"]) and NUDENET not in registry(KEYS["beta"])


def test_models_on_disk_per_tenant_and_the_page_is_public(tenant_server):
    assert_error(requests.get(f"{tenant_server.url}/models", timeout=10), 401)
    listed = lambda key: {m["model_id"] for m in requests.get(  # noqa: E731
        f"{tenant_server.url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["models"]}
    acme = listed(KEYS["acme"])
    assert SHAPES in acme and all(m.startswith("shapes-") for m in acme), acme
    assert listed(KEYS["beta"]) == {NUDENET}
    # The page and its files load without a key; its API calls carry the user's.
    for path in ("/", "/static/page/app.js", "/static/page/style.css"):
        assert requests.get(f"{tenant_server.url}{path}", timeout=10).status_code == 200, path


def test_plugins_per_tenant(tenant_server):
    listed = lambda key: {p["name"] for p in requests.get(  # noqa: E731
        f"{tenant_server.url}/plugins", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["plugins"]}
    assert listed(KEYS["acme"]) == {"object-detection", "object-counts"}
    assert listed(KEYS["beta"]) == {"object-detection"}
    assert listed(KEYS["slow"]) == {"object-detection", "keypoint-detection", "object-counts"}
    counts = {"model_id": SHAPES, "image": IMAGE}
    ok = post(tenant_server, "/infer/object_counts", counts, key=KEYS["acme"])
    assert ok.status_code == 200, ok.text
    # beta may not use object-counts: the route does not exist for it, like any unknown route.
    hidden = post(tenant_server, "/infer/object_counts", {**counts, "model_id": NUDENET}, key=KEYS["beta"])
    absent = post(tenant_server, "/infer/no_such_route", {**counts, "model_id": NUDENET}, key=KEYS["beta"])
    assert_error(hidden, 404)
    assert_error(absent, 404)
    assert hidden.json()["message"] == absent.json()["message"].replace("no_such_route", "object_counts")
    # acme may use shapes-pose (namespace) but not the keypoint plugin.
    r = post(tenant_server, "/infer/keypoints_detection", {"model_id": "shapes-pose/1", "image": IMAGE},
             key=KEYS["acme"])
    assert_error(r, 404)
    r = post(tenant_server, "/infer/keypoints_detection", {"model_id": "shapes-pose/1", "image": IMAGE},
             key=KEYS["slow"])
    assert r.status_code == 200, r.text


def test_input_caps_per_tenant(tenant_server):
    two = {"model_id": NUDENET, "image": [IMAGE, IMAGE]}
    r = post(tenant_server, "/infer/object_detection", two, key=KEYS["beta"])
    assert "too many images" in assert_error(r, 400).lower()
    # The same batch is fine for a tenant without the cap.
    r = post(tenant_server, "/infer/object_detection", {**two, "model_id": SHAPES}, key=KEYS["acme"])
    assert r.status_code == 200 and len(r.json()) == 2
    import numpy as np
    big = img_b64(png_bytes(np.zeros((500, 500, 3), np.uint8)))  # 250000 px > beta's 200000
    r = post(tenant_server, "/infer/object_detection", {"model_id": NUDENET, "image": big}, key=KEYS["beta"])
    assert "exceeds the limit" in assert_error(r, 400)
    body = {"model_id": NUDENET, "image": IMAGE, "padding": "x" * 250_000}
    for how in ("body", "bearer"):
        r = post(tenant_server, "/infer/object_detection", body, key=KEYS["beta"], how=how)
        assert_error(r, 413)


def test_rate_limit_answers_429_with_retry_after(tenant_server):
    answers = [requests.get(f"{tenant_server.url}/model/registry", params={"api_key": KEYS["tight"]}, timeout=10)
               for _ in range(4)]
    codes = [r.status_code for r in answers]
    assert codes[:2] == [200, 200], codes  # the burst
    refused = [r for r in answers if r.status_code == 429]
    assert refused, codes
    for r in refused:
        assert "rate limit" in assert_error(r, 429).lower()
        assert 1 <= int(r.headers["retry-after"]) <= 2
    # Other tenants are not slowed by tight's quota.
    assert detect(tenant_server).status_code == 200
    time.sleep(int(refused[-1].headers["retry-after"]))
    assert requests.get(f"{tenant_server.url}/model/registry", params={"api_key": KEYS["tight"]},
                        timeout=10).status_code == 200


def test_concurrency_cap_answers_429(tenant_server):
    slow_images = SlowImages(delay=2.0)
    try:
        body = {"model_id": SHAPES, "image": img_url(slow_images.url)}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, tenant_server, "/infer/object_detection", body, KEYS["slow"])
            time.sleep(0.7)  # the first is now waiting for its image
            second = post(tenant_server, "/infer/object_detection", {"model_id": SHAPES, "image": IMAGE},
                          key=KEYS["slow"])
            other = detect(tenant_server)  # another tenant is not held up
            assert first.result().status_code == 200, first.result().text
        assert "in flight" in assert_error(second, 429)
        assert second.headers["retry-after"] == "1"
        assert other.status_code == 200
        # The slot is released once the first is answered.
        assert detect(tenant_server, key=KEYS["slow"]).status_code == 200
    finally:
        slow_images.shutdown()


def test_roboflow_gets_the_tenants_roboflow_key_never_its_server_key(tenant_server, roboflow):
    r = detect(tenant_server, model="rf-shapes/1", key=KEYS["ops"])
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]
    keys_seen = set(roboflow.keys_seen)
    assert keys_seen == {RF_KEY}, keys_seen
    # The admin tenant may read the metrics (requests are labelled by tenant); others may not.
    metrics = requests.get(f"{tenant_server.url}/metrics", headers={"Authorization": f"Bearer {KEYS['ops']}"},
                           timeout=10)
    assert metrics.status_code == 200
    assert any('model="rf-shapes/1"' in line and 'tenant="ops"' in line and 'status="200"' in line
               for line in metrics.text.splitlines() if line.startswith("inference_requests_total")), metrics.text
    assert_error(requests.get(f"{tenant_server.url}/metrics", headers={"Authorization": f"Bearer {KEYS['acme']}"},
                              timeout=10), 403)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_open_mode_refuses_a_non_loopback_address(inference_bin, models_dir):
    run = subprocess.run([str(inference_bin), "server", "start", "--foreground", "--host", "0.0.0.0",
                          "--port", str(_free_port()), "--models-dir", str(models_dir)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "refusing to serve open" in run.stderr and "--tenants" in run.stderr
    # Told to, it serves open, and says so.
    port = _free_port()
    proc = subprocess.Popen([str(inference_bin), "server", "start", "--foreground", "--host", "0.0.0.0",
                             "--port", str(port), "--models-dir", str(models_dir), "--allow-open-access"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if requests.get(f"http://127.0.0.1:{port}/readiness", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{port}/model/registry", timeout=10).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "serving open" in err and "--allow-open-access" in err


def test_bad_tenants_file_is_refused_at_start(inference_bin, models_dir, tmp_path):
    bad = tmp_path / "tenants.toml"
    bad.write_text('[[tenant]]\nname = "a"\napi_keys = ["plain-text-key"]\nmodels = ["*"]\n')
    run = subprocess.run([str(inference_bin), "server", "start", "--foreground", "--port", str(_free_port()),
                          "--models-dir", str(models_dir), "--tenants", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "sha256" in run.stderr and "hash-key" in run.stderr


def test_hash_key_command(inference_bin):
    out = subprocess.run([str(inference_bin), "tenants", "hash-key"], input="acme-secret-1\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == sha("acme-secret-1")


def test_openapi_documents_the_gates_answers(tenant_server):
    doc = requests.get(f"{tenant_server.url}/openapi.json", timeout=10).json()
    for path, method in [("/infer/object_detection", "post"), ("/model/registry", "get"), ("/plugins", "get")]:
        responses = doc["paths"][path][method]["responses"]
        assert {"401", "413", "429"} <= set(responses), (path, sorted(responses))
        assert "Retry-After" in responses["429"]["headers"]
    assert "403" in doc["paths"]["/metrics"]["get"]["responses"]
    assert "401" not in doc["paths"]["/healthz"]["get"]["responses"]


def test_tenants_file_changes_apply_without_restart(start_server, tmp_path):
    path = tmp_path / "tenants.toml"
    one = (f'[[tenant]]\nname = "first"\napi_keys = ["{sha("first-key")}"]\nmodels = ["shapes-*"]\n'
           f'plugins = ["*"]\n')
    path.write_text(one)
    server = start_server(["--tenants", str(path)])

    def status(key):
        return requests.get(f"{server.url}/model/registry", params={"api_key": key}, timeout=10).status_code

    def eventually(predicate, what):
        deadline = time.monotonic() + 15
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.25)

    assert status("first-key") == 200 and status("second-key") == 401
    # A tenant added to the file can call within seconds.
    path.write_text(one + f'[[tenant]]\nname = "second"\napi_keys = ["{sha("second-key")}"]\nmodels = ["*"]\n')
    eventually(lambda: status("second-key") == 200, "the added tenant is served")
    # A broken file is refused, loudly, and the tenants in force stay.
    path.write_text(one + 'typo = true\n')
    eventually(lambda: "tenants file refused" in server.log_tail(400), "the broken file is reported")
    assert status("first-key") == 200 and status("second-key") == 200
    # A removed tenant's key stops working.
    path.write_text(one + "\n")
    eventually(lambda: status("second-key") == 401, "the removed tenant is refused")
    assert status("first-key") == 200
