"""The `inference server start|stop|status` CLI: background start, status, stop, and clear
failures (port taken, ONNX Runtime missing, CUDA unavailable)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import requests

from conftest import _free_port


def run(bin_path, *args, env=None, timeout=90):
    return subprocess.run([str(bin_path), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_background_start_status_stop(inference_bin, models_dir, tmp_path):
    port = str(_free_port())
    common = ["--port", port, "--state-dir", str(tmp_path)]
    started = run(inference_bin, "server", "start", "--models-dir", str(models_dir), *common)
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout and "pid" in started.stdout
        r = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert r.json() == {"status": "healthy"}

        status = run(inference_bin, "server", "status", *common)
        assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr

        again = run(inference_bin, "server", "start", "--models-dir", str(models_dir), *common)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        stopped = run(inference_bin, "server", "stop", *common)
    assert stopped.returncode == 0, stopped.stderr
    status = run(inference_bin, "server", "status", *common)
    assert status.returncode == 3 and "not running" in status.stdout
    stop_again = run(inference_bin, "server", "stop", *common)
    assert stop_again.returncode != 0 and stop_again.stderr.startswith("error:")


def test_port_taken_is_a_clear_failure(inference_bin, models_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for mode in ([], ["--foreground"]):
            r = run(inference_bin, "server", "start", *mode, "--port", port, "--models-dir", str(models_dir),
                    "--state-dir", str(tmp_path))
            assert r.returncode != 0, mode
            assert f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
            assert "panicked" not in r.stderr


def test_missing_onnx_runtime_is_a_clear_failure(inference_bin, tmp_path):
    # A copy of the binary without the library beside it, and no ORT_DYLIB_PATH.
    lonely = tmp_path / "inference"
    shutil.copy(inference_bin, lonely)
    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    r = subprocess.run([str(lonely), "server", "start", "--foreground", "--port", str(_free_port())],
                       capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert "ONNX Runtime library not found" in r.stderr, r.stderr
    bad = run(inference_bin, "server", "start", "--foreground", "--port", str(_free_port()),
              "--ort-library", str(tmp_path / "nope.so"))
    assert bad.returncode != 0 and "nope.so" in bad.stderr and "panicked" not in bad.stderr


def test_cuda_without_cuda_fails_loudly(inference_bin):
    r = run(inference_bin, "server", "start", "--foreground", "--port", str(_free_port()), "--device", "cuda")
    assert r.returncode != 0
    assert "--device cuda" in r.stderr and "panicked" not in r.stderr, r.stderr


def test_compiled_plugins_are_cached_and_a_broken_cache_is_ignored(start_server, tmp_path):
    cache = tmp_path / "cache"
    first = start_server(["--cache-dir", str(cache)])
    compiled = sorted((cache / "plugins").glob("*.cwasm"))
    assert len(compiled) >= 4, compiled
    first.stop()
    for f in compiled:
        f.write_bytes(b"not a compiled component")
    second = start_server(["--cache-dir", str(cache)])
    r = requests.get(f"{second.url}/readiness", timeout=5)
    assert r.status_code == 200
    assert "ignoring unusable compiled plugin" in second.log_tail(200)
    # Recompiled and rewritten.
    assert all(f.read_bytes() != b"not a compiled component" for f in compiled)
