"""Many replicas, one service (issue 14): three real servers on loopback ports behind HAProxy
(Debian's `haproxy`: health checks on /readiness, retries on connection failure), one Redis
(`redis-server`) as the shared quota store, the moto S3 server as the shared model store, and one
shared cache directory. Every part is started and stopped here.

The scenarios run in file order on one fleet (module scope), each under a small steady load
(a few client threads: the machine may have 2 cores):
* the first request for a model on all replicas at once downloads it from S3 once;
* a tenant limited to R/s (burst B) gets R×t + B accepted across the fleet, the rest 429;
* a tenant limited to C in flight never has more than C running across the fleet;
* Redis stopped: fail-open serves with each replica's own limits; Redis back: shared again;
* kill -9 of a replica: every request answered 200 or a clean 503, none lost; it rejoins;
* a rolling restart (SIGTERM, one at a time; it also switches the fleet to fail-closed): zero
  failed requests, each replica drained and exited 0;
* Redis stopped with fail-closed: limited tenants get 503 + Retry-After; back: served again.

Figures (requests, statuses, accuracy, drain times) are printed in the terminal summary."""

from __future__ import annotations

import collections
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import _free_port, _tail
from helpers import FIXTURES, REPO, SUMMARY_LINES, img_b64, img_url, key_sha as sha
from roboflow_double import FIXTURE_MODELS, SHAPES_ENVIRONMENT
from s3_server import S3Server

pytestmark = pytest.mark.timeout(300)

RELEASE = REPO / "target" / "release"
BUCKET, PREFIX = "fleet", "models"
MODEL = "fleet-shapes/1"
FILES = {"weights.onnx": (FIXTURE_MODELS / "shapes-detect.onnx").read_bytes(),
         "environment.json": json.dumps(SHAPES_ENVIRONMENT).encode()}
IMAGE_BYTES = (FIXTURES / "images" / "dev" / "04_multi_160x120.jpg").read_bytes()
IMAGE = img_b64(IMAGE_BYTES)
REPLICAS = 3
DRAIN_GRACE_S = 1.5
SHUTDOWN_TIMEOUT_S = 10
# The rate-limited tenant: R requests/s, burst B; the concurrency-limited one: C in flight.
R, B, C = 4, 4, 2
KEYS = {"load": "load-secret", "rated": "rated-secret", "narrow": "narrow-secret", "ops": "ops-secret"}
# No request may take longer than this (a hang counts as lost).
REQUEST_TIMEOUT = 20


TENANTS = f"""
[[tenant]]
name = "load"
api_keys = ["{sha(KEYS['load'])}"]
models = ["*"]
plugins = ["*"]

[[tenant]]
name = "rated"
api_keys = ["{sha(KEYS['rated'])}"]
models = ["*"]
plugins = ["*"]
[tenant.limits]
requests_per_second = {R}
burst = {B}

[[tenant]]
name = "narrow"
api_keys = ["{sha(KEYS['narrow'])}"]
models = ["*"]
plugins = ["*"]
[tenant.limits]
max_concurrent = {C}

[[tenant]]
name = "ops"
api_keys = ["{sha(KEYS['ops'])}"]
models = ["*"]
plugins = ["*"]
admin = true
"""


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.access(f"/usr/sbin/{binary}", os.X_OK) else None)
    if not path:
        pytest.fail(f"{binary} is missing: apt-get install haproxy redis-server (scripts/test does)", pytrace=False)
    return path


def wait_for(what: str, check, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, OSError, ValueError, KeyError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Redis:
    def __init__(self, workdir: Path):
        self.binary = need("redis-server")
        self.port = _free_port()
        self.workdir = workdir
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for("redis", lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() or True)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class SlowImages(http.server.ThreadingHTTPServer):
    """Serves the image after a delay, counting the fetches in progress: a request of the
    concurrency-limited tenant is in flight (admitted) while its image is fetched."""

    daemon_threads = True

    def __init__(self, delay: float):
        self.lock = threading.Lock()
        self.now = self.peak = self.total = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.now += 1
                    outer.total += 1
                    outer.peak = max(outer.peak, outer.now)
                try:
                    time.sleep(delay)
                    self.send_response(200)
                    self.send_header("content-type", "image/jpeg")
                    self.send_header("content-length", str(len(IMAGE_BYTES)))
                    self.end_headers()
                    self.wfile.write(IMAGE_BYTES)
                finally:
                    with outer.lock:
                        outer.now -= 1

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/image.jpg"


class Replica:
    def __init__(self, index: int, fleet: "Fleet"):
        self.index = index
        self.fleet = fleet
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.starts = 0

    def start(self, failure: str = "fail-open"):
        f = self.fleet
        self.starts += 1
        self.log_path = f.root / f"replica-{self.index}-{self.starts}.log"
        self.log = open(self.log_path, "wb")
        self.cmd = [str(RELEASE / "inference"), "server", "start", "--foreground", "--host", "127.0.0.1",
                    "--port", str(self.port), "--models-dir", str(f.models), "--plugins-dir", str(f.plugins),
                    "--cache-dir", str(f.cache), "--model-store", f"s3://{BUCKET}/{PREFIX}",
                    "--tenants", str(f.tenants), "--quota-store", f.redis.url, "--quota-store-failure", failure,
                    "--drain-grace", str(DRAIN_GRACE_S), "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S),
                    "--allow-http-urls", "--allow-private-urls", "--threads", "1", "--sessions-per-model", "1"]
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **f.s3.env()})

    def wait_ready(self, timeout: float = 120):
        def ready():
            assert self.proc.poll() is None, f"replica {self.index} exited:\n{_tail(self.log_path)}"
            return requests.get(f"{self.url}/readiness", timeout=2).status_code == 200
        wait_for(f"replica {self.index} ready", ready, timeout)

    def readiness(self) -> dict:
        r = requests.get(f"{self.url}/readiness", timeout=2)
        return {"http": r.status_code, **r.json()}

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {KEYS['ops']}"},
                            timeout=5).text

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()

    def terminate(self) -> tuple[int, float, int]:
        """SIGTERM: returns (exit code, seconds to exit, /readiness status right after)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            after = requests.get(f"{self.url}/readiness", timeout=2).status_code
        except requests.RequestException:
            after = -1
        code = self.proc.wait(SHUTDOWN_TIMEOUT_S + 10)
        self.log.close()
        return code, time.monotonic() - t0, after

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc:
            self.log.close()


class HAProxy:
    def __init__(self, root: Path, replicas: list[Replica]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"  server r{r.index} 127.0.0.1:{r.port} check" for r in replicas)
        # Health checks every 250 ms on /readiness (a draining replica answers 503 at once and is
        # out within one check); a failed connection, or a server that closes without answering
        # (killed), is retried on another server.
        config = f"""
global
  maxconn 256
  tune.bufsize 65536

defaults
  mode http
  timeout connect 500ms
  timeout client 30s
  timeout server 30s
  timeout queue 10s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
  # Retries resend the request: it must be buffered whole (our bodies fit in tune.bufsize).
  option http-buffer-request

frontend front
  bind 127.0.0.1:{self.port}
  default_backend replicas

backend replicas
  balance roundrobin
  option httpchk GET /readiness
  http-check expect status 200
  default-server inter 250ms fall 1 rise 2
{servers}
"""
        (root / "haproxy.cfg").write_text(config)
        self.log = open(root / "haproxy.log", "wb")
        self.proc = subprocess.Popen([need("haproxy"), "-f", str(root / "haproxy.cfg"), "-db"], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for("haproxy", lambda: requests.get(f"{self.url}/readiness", timeout=2).status_code == 200)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class Fleet:
    def __init__(self, root: Path):
        self.root = root
        self.s3 = self.redis = self.slow = self.lb = None
        self.replicas: list[Replica] = []
        self.figures: dict = {}
        try:
            self._start()
        except BaseException:
            self.stop()  # a failed start leaves no process behind
            raise

    def _start(self):
        root = self.root
        self.models = root / "models"
        self.models.mkdir()
        self.cache = root / "cache"
        self.plugins = root / "plugins"
        self.plugins.mkdir()
        # One plugin: less to compile at each start.
        for ext in ("wasm", "toml"):
            shutil.copy(RELEASE / "plugins" / f"object-detection.{ext}", self.plugins / f"object-detection.{ext}")
        self.tenants = root / "tenants.toml"
        self.tenants.write_text(TENANTS)
        self.s3 = S3Server()
        self.s3.client.create_bucket(Bucket=BUCKET)
        self.s3.add_model(BUCKET, PREFIX, MODEL, FILES)
        self.redis = Redis(root)
        self.slow = SlowImages(0.6)
        self.replicas = [Replica(i, self) for i in range(REPLICAS)]
        # The first start compiles the plugin into the shared cache; the others find it there.
        self.replicas[0].start()
        self.replicas[0].wait_ready()
        for r in self.replicas[1:]:
            r.start()
        for r in self.replicas[1:]:
            r.wait_ready()
        self.lb = HAProxy(root, self.replicas)

    def stop(self):
        for part in [self.lb, *self.replicas, self.redis, self.s3]:
            try:
                if part is not None:
                    part.stop()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        if self.slow is not None:
            self.slow.shutdown()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    need("haproxy")
    need("redis-server")
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    yield f
    f.stop()
    SUMMARY_LINES.append("fleet (tests/test_fleet.py): " + json.dumps(f.figures))


# --------------------------------------------------------------------------- load

def detect(session: requests.Session, base: str, key: str, image=IMAGE, model=MODEL) -> requests.Response:
    return session.post(f"{base}/infer/object_detection", json={"model_id": model, "image": image},
                        headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT)


def registry(session: requests.Session, base: str, key: str) -> requests.Response:
    # A cheap authenticated request: counted against the tenant's quota like any other.
    return session.get(f"{base}/model/registry", headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT)


class Load:
    """`workers` client threads sending `send(session)` back to back (or every `interval` s each)
    until stopped; every outcome is kept: (sent at, seconds, status or 'lost: …', Retry-After)."""

    def __init__(self, send, workers: int = 3, interval: float = 0.0):
        self.send, self.interval = send, interval
        self.results: list = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _run(self):
        session = requests.Session()
        while not self.stopping.is_set():
            t0 = time.monotonic()
            try:
                r = self.send(session)
                outcome = (t0, time.monotonic() - t0, r.status_code, r.headers.get("retry-after"))
            except requests.RequestException as e:
                outcome = (t0, time.monotonic() - t0, f"lost: {type(e).__name__}", None)
            with self.lock:
                self.results.append(outcome)
            if self.interval:
                time.sleep(max(0.0, self.interval - (time.monotonic() - t0)))

    def stop(self) -> list:
        self.stopping.set()
        for t in self.threads:
            t.join(REQUEST_TIMEOUT + 5)
        return self.results


def by_status(results) -> dict:
    return dict(collections.Counter(str(s) for _, _, s, _ in results))


def rate_window(fleet: Fleet, seconds: float, per_second: float = 16, workers: int = 4):
    """The rated tenant's requests at `per_second` for `seconds`: (results, window seconds)."""
    load = Load(lambda s: registry(s, fleet.lb.url, KEYS["rated"]), workers, interval=workers / per_second)
    time.sleep(seconds)
    results = load.stop()
    sent = [t for t, _, _, _ in results]
    return results, max(sent) - min(sent)


def wait_store(fleet: Fleet, state: str):
    wait_for(f"every replica to see the quota store {state}",
             lambda: all(r.readiness()["quota_store"]["state"] == state for r in fleet.replicas), timeout=15)


# --------------------------------------------------------------------------- scenarios

def test_first_request_on_all_replicas_downloads_once(fleet):
    key = f"/{BUCKET}/{PREFIX}/{MODEL}/weights.onnx"
    assert fleet.s3.requests[("GET", key)] == 0
    barrier = threading.Barrier(REPLICAS * 2)
    answers = []

    def first(base):
        barrier.wait()
        r = detect(requests.Session(), base, KEYS["load"])
        answers.append(r.status_code if r.status_code == 200 else (r.status_code, r.text[:300]))

    threads = [threading.Thread(target=first, args=(r.url,)) for r in fleet.replicas for _ in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [200] * len(threads), answers
    downloads = fleet.s3.requests[("GET", key)]
    fleet.figures["first_request"] = {"replicas": REPLICAS, "requests": len(threads), "s3_downloads": downloads,
                                      "seconds": round(time.monotonic() - t0, 2)}
    assert downloads == 1, fleet.s3.requests
    assert not list(fleet.cache.rglob("*.part")), "no download left behind"


def check_rate(results, window: float, label: str) -> dict:
    accepted = sum(1 for _, _, s, _ in results if s == 200)
    refused = [(s, ra) for _, _, s, ra in results if s != 200]
    assert all(s == 429 and ra and int(ra) >= 1 for s, ra in refused), refused[:5]
    expected = R * window + B
    # The bucket refills continuously; requests are sent in discrete steps and the window is
    # measured on the client: ± 10 % (at least 2).
    tolerance = max(2.0, 0.1 * expected)
    figures = {"sent": len(results), "accepted": accepted, "expected": round(expected, 1),
               "tolerance": round(tolerance, 1), "window_s": round(window, 2), "429": len(refused)}
    assert abs(accepted - expected) <= tolerance, (label, figures)
    return figures


def test_rate_limit_is_shared_by_the_fleet(fleet):
    # The tenants file changes mid-window (every replica reloads it within 2 s): the shared
    # quota carries on, it does not start afresh.
    reload = threading.Timer(1.0, lambda: fleet.tenants.write_text(TENANTS + "\n# reloaded\n"))
    reload.start()
    results, window = rate_window(fleet, 5.0)
    reload.join()
    assert all("tenants file reloaded" in r.log_path.read_text() for r in fleet.replicas)
    fleet.figures["rate_shared"] = check_rate(results, window, "shared")
    # The refusals came from every replica: each one counted against the one shared bucket.
    refusing = [r.index for r in fleet.replicas if 'status="429"' in r.metrics()]
    assert len(refusing) == REPLICAS, refusing


def test_concurrency_limit_is_shared_by_the_fleet(fleet):
    fleet.slow.peak = 0
    load = Load(lambda s: detect(s, fleet.lb.url, KEYS["narrow"], image=img_url(fleet.slow.url)), workers=6,
                interval=0.2)
    time.sleep(4)
    results = load.stop()
    statuses = by_status(results)
    fleet.figures["concurrency"] = {"limit": C, "peak_in_flight": fleet.slow.peak, **statuses}
    assert set(statuses) <= {"200", "429"}, statuses
    assert fleet.slow.peak <= C, fleet.figures["concurrency"]
    assert fleet.slow.peak == C and statuses.get("429", 0) > 0, "the limit was reached"


def test_redis_down_fail_open_then_back(fleet):
    fleet.redis.stop()
    wait_store(fleet, "down")
    ready = fleet.replicas[0].readiness()
    assert ready["http"] == 200 and ready["quota_store"]["failure_mode"] == "fail-open", ready
    assert "inference_quota_store_up 0" in fleet.replicas[0].metrics()
    results, window = rate_window(fleet, 3.0)
    statuses = by_status(results)
    accepted = statuses.get("200", 0)
    # Each replica applies the tenant's limits on its own: up to REPLICAS times the shared figure.
    shared = R * window + B
    fleet.figures["redis_down_fail_open"] = {**statuses, "shared_would_be": round(shared, 1),
                                             "local_at_most": round(REPLICAS * shared, 1)}
    assert set(statuses) <= {"200", "429"}, statuses
    assert shared + 2 < accepted <= REPLICAS * shared + 2, fleet.figures["redis_down_fail_open"]
    t0 = time.monotonic()
    fleet.redis.start()
    wait_store(fleet, "up")
    fleet.figures["redis_back_rejoin_s"] = round(time.monotonic() - t0, 2)
    results, window = rate_window(fleet, 3.0)
    fleet.figures["rate_after_redis_back"] = check_rate(results, window, "after redis back")


def test_kill_9_one_replica_under_load(fleet):
    load = Load(lambda s: detect(s, fleet.lb.url, KEYS["load"]), workers=3)
    time.sleep(2)
    victim = fleet.replicas[1]
    victim.kill()
    time.sleep(2)
    victim.start()
    victim.wait_ready()
    time.sleep(2.5)
    results = load.stop()
    statuses = by_status(results)
    slowest = max(d for _, d, _, _ in results)
    fleet.figures["kill_9"] = {"sent": len(results), **statuses, "slowest_s": round(slowest, 2)}
    assert set(statuses) <= {"200", "503"}, statuses
    assert slowest < REQUEST_TIMEOUT
    # It rejoined: HAProxy sends it requests again (its metrics are the new process's).
    assert 'route="/infer/object_detection"' in victim.metrics()


def test_rolling_restart_has_zero_failed_requests(fleet):
    load = Load(lambda s: detect(s, fleet.lb.url, KEYS["load"]), workers=3)
    time.sleep(1)
    drains = []
    for r in fleet.replicas:
        code, seconds, readiness_after = r.terminate()
        drains.append(round(seconds, 2))
        assert code == 0, f"replica {r.index} exited {code}:\n{_tail(r.log_path)}"
        assert readiness_after in (503, -1), readiness_after
        # The new version of the fleet refuses limited tenants while the quota store is down.
        r.start(failure="fail-closed")
        r.wait_ready()
        # Let HAProxy's checks see it up (rise 2 × 250 ms) before taking the next one out.
        time.sleep(1.0)
    results = load.stop()
    statuses = by_status(results)
    fleet.figures["rolling_restart"] = {"sent": len(results), **statuses, "drain_s": drains,
                                        "drain_grace_s": DRAIN_GRACE_S}
    assert statuses == {"200": len(results)}, statuses
    assert not list(fleet.cache.rglob("*.part"))


def test_redis_down_fail_closed_then_back(fleet):
    fleet.redis.stop()
    wait_store(fleet, "down")
    s = requests.Session()
    limited = [registry(s, fleet.lb.url, KEYS["rated"]) for _ in range(6)]
    unlimited = [detect(s, fleet.lb.url, KEYS["load"]).status_code for _ in range(3)]
    fleet.figures["redis_down_fail_closed"] = {
        "limited": by_status([(0, 0, r.status_code, None) for r in limited]),
        "unlimited": dict(collections.Counter(map(str, unlimited)))}
    assert all(r.status_code == 503 and int(r.headers["retry-after"]) >= 1 for r in limited), \
        [(r.status_code, r.text[:200]) for r in limited]
    assert "quota store" in limited[0].json()["message"]
    # A tenant without limits needs no quota store.
    assert unlimited == [200] * 3
    fleet.redis.start()
    wait_store(fleet, "up")
    results, window = rate_window(fleet, 3.0)
    fleet.figures["rate_after_redis_back_fail_closed"] = check_rate(results, window, "after redis back")
