"""Fixtures for the black-box tests of the inference server.

The server binary comes from $INFERENCE_BIN (default <repo>/target/release/inference).
Every server a test starts gets its own free port, a log file in a temp dir, and
is stopped (SIGTERM, then SIGKILL) at the end of the session."""

from __future__ import annotations

import functools
import http.server
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

from helpers import FIXTURES, REPO, SUMMARY_LINES

START_TIMEOUT = float(os.environ.get("INFERENCE_START_TIMEOUT", "120"))
STOP_TIMEOUT = 15.0

MODEL_FILES = {
    "shapes-detect/1": "shapes-detect.onnx",
    "shapes-detect-static/1": "shapes-detect-static.onnx",
    "nudenet/1": "nudenet-320n.onnx",
}
# The other tasks' models (tests/test_tasks_*.py).
MODEL_FILES.update({
    "shapes-seg/1": "shapes-seg.onnx",
    "shapes-pose/1": "shapes-pose.onnx",
    "shapes-cls/1": "shapes-cls.onnx",
})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<no log: {e}>"
    return "\n".join(lines[-n:])


def _exited_early(h, grace: float = 1.0) -> bool:
    try:
        h.proc.wait(timeout=grace)
        return True
    except subprocess.TimeoutExpired:
        return False


class ServerHandle:
    def __init__(self, binary: Path, args: list, log_path: Path, env: dict | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cmd = [str(binary), "server", "start", "--foreground",
                    "--host", "127.0.0.1", "--port", str(self.port), *args]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"server exited with code {self.proc.returncode} before becoming ready")
            try:
                r = requests.get(f"{self.url}/readiness", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "ready":
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except (requests.ConnectionError, requests.Timeout, ValueError) as e:
                last = repr(e)[:200]
            time.sleep(0.2)
        self.stop()
        self.fail(f"server not ready after {timeout:.0f}s (last: {last})")

    def fail(self, why: str):
        pytest.fail(f"{why}\ncommand: {' '.join(self.cmd)}\n--- log tail ({self.log_path}) ---\n"
                    f"{_tail(self.log_path)}", pytrace=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        return _tail(self.log_path, n)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._log.close()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def inference_bin(repo) -> Path:
    path = Path(os.environ.get("INFERENCE_BIN", repo / "target" / "release" / "inference"))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"server binary {path} not found or not executable: build it "
                    f"(cargo build --release) or set INFERENCE_BIN", pytrace=False)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, fixtures_dir) -> Path:
    """<tmp>/models/<project>/<version>/weights.onnx, copied from the fixtures."""
    root = tmp_path_factory.mktemp("models")
    for model_id, fname in MODEL_FILES.items():
        dest = root / model_id / "weights.onnx"
        dest.parent.mkdir(parents=True)
        shutil.copyfile(fixtures_dir / "models" / fname, dest)
    return root


@pytest.fixture(scope="session")
def start_server(inference_bin, models_dir, tmp_path_factory):
    """Factory: start_server(extra_args=[...], models_dir=None, env=None) -> ServerHandle (ready);
    `env` adds environment variables.
    All servers are stopped at the end of the session."""
    handles = []

    def start(extra_args=(), models=None, env=None) -> ServerHandle:
        args = ["--models-dir", str(models or models_dir), *extra_args]
        for attempt in range(3):
            logdir = tmp_path_factory.mktemp("server-log")
            h = ServerHandle(inference_bin, args, logdir / "server.log", env=env)
            handles.append(h)
            # Retry only the rare race where the chosen free port got taken.
            if attempt < 2 and _exited_early(h) and "in use" in h.log_tail().lower():
                continue
            h.wait_ready()
            return h

    yield start
    for h in handles:
        h.stop()


@pytest.fixture(scope="session")
def server_handle(start_server, roboflow_stub, tmp_path_factory) -> ServerHandle:
    # The URL-input tests fetch from a local http server: allow what the defaults refuse
    # (test_ssrf.py checks the defaults). Requests with an api_key for a model the server
    # lacks ask Roboflow: here a test double that knows no model (404), never the internet.
    return start_server(["--allow-http-urls", "--allow-private-urls", "--roboflow-api-url", roboflow_stub.url,
                         "--cache-dir", str(tmp_path_factory.mktemp("cache"))])


@pytest.fixture(scope="session")
def roboflow_stub():
    """A test double of Roboflow's API that takes any api key and knows no model
    (tests/roboflow_double.py)."""
    from roboflow_double import RoboflowDouble

    with RoboflowDouble(keys=None) as double:
        yield double


@pytest.fixture(scope="session")
def server(server_handle) -> str:
    """Base URL of the shared server (default flags)."""
    return server_handle.url


@pytest.fixture(autouse=True)
def _report_dead_server(request):
    """After each test, fail it if the shared server (when used) has died."""
    yield
    if "server_handle" in request.fixturenames or "server" in request.fixturenames:
        h = request.getfixturevalue("server_handle")
        if not h.alive():
            h.fail(f"the server died during {request.node.nodeid}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="session")
def image_server(fixtures_dir):
    """Base URL of a local HTTP server serving tests/fixtures/images
    (e.g. <url>/dev/01_multi_320x320.jpg)."""
    handler = functools.partial(_QuietHandler, directory=str(fixtures_dir / "images"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def pytest_terminal_summary(terminalreporter):
    if SUMMARY_LINES:
        terminalreporter.section("golden match rates")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)
