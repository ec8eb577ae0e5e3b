"""Model stores in S3: a real S3-compatible server (moto's server mode, tests/s3_server.py) runs on
loopback; the server under test reaches it through the standard AWS environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import _free_port
from helpers import assert_same, error_message
from roboflow_double import FIXTURE_MODELS, SHAPES_ENVIRONMENT
from s3_server import S3Server
from test_model_sources import detect, files_in, ok

BUCKET, PREFIX = "models-bucket", "team/prod"
WEIGHTS = (FIXTURE_MODELS / "shapes-detect.onnx").read_bytes()
FILES = {"weights.onnx": WEIGHTS, "environment.json": json.dumps(SHAPES_ENVIRONMENT).encode()}


@pytest.fixture
def s3():
    server = S3Server()
    try:
        server.client.create_bucket(Bucket=BUCKET)
        server.add_model(BUCKET, PREFIX, "shapes-s3/1", FILES)
        yield server
    finally:
        server.stop()


@pytest.fixture
def empty_models(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    return d


def s3_server(start_server, s3, cache, models, env=None):
    return start_server(["--cache-dir", str(cache), "--model-store", f"s3://{BUCKET}/{PREFIX}"], models=models,
                        env=env or s3.env())


def test_s3_first_request_downloads_then_cache_then_restart(start_server, s3, empty_models, tmp_path, server):
    reference = ok(detect(server, "shapes-detect/1"))
    cache = tmp_path / "cache"
    h = s3_server(start_server, s3, cache, empty_models)
    assert s3.gets(BUCKET) == 0
    t0 = time.perf_counter()
    first = ok(detect(h.url, "shapes-s3/1"))
    first_s = time.perf_counter() - t0
    assert_same(reference, first, "downloaded from S3 vs local copy")
    key = f"/{BUCKET}/{PREFIX}/shapes-s3/1/weights.onnx"
    assert s3.requests[("GET", key)] == 1, s3.requests
    fetched = s3.gets(BUCKET)

    t0 = time.perf_counter()
    assert_same(first, ok(detect(h.url, "shapes-s3/1")), "second request")
    cached_s = time.perf_counter() - t0
    assert s3.gets(BUCKET) == fetched, f"the second request touched S3: {s3.requests}"
    model_dir = cache / "models" / "shapes-s3" / "1"
    assert files_in(model_dir) == {"weights.onnx", "environment.json", ".verified"}
    h.stop()
    assert f"s3://{BUCKET}/{PREFIX}" in h.log_path.read_text(errors="replace")

    # S3 gone: a restart serves from the cache.
    s3.stop()
    again = s3_server(start_server, s3, cache, empty_models)
    t0 = time.perf_counter()
    assert_same(first, ok(detect(again.url, "shapes-s3/1")), "after restart, from the cache")
    restart_s = time.perf_counter() - t0
    print(f"\nshapes-detect from S3 (moto): first request {first_s * 1e3:.0f} ms, cached {cached_s * 1e3:.0f} ms, "
          f"after restart {restart_s * 1e3:.0f} ms")


def test_s3_absent_model_is_404(start_server, s3, empty_models, tmp_path):
    h = s3_server(start_server, s3, tmp_path / "cache", empty_models)
    r = detect(h.url, "not-in-bucket/1")
    assert r.status_code == 404, f"HTTP {r.status_code}: {error_message(r)}"


def test_s3_tampered_object_is_502_and_deleted(start_server, s3, empty_models, tmp_path):
    tampered = bytearray(WEIGHTS)
    tampered[len(tampered) // 2] ^= 0xFF
    # The manifest describes the real file; the bucket holds an altered copy.
    s3.add_model(BUCKET, PREFIX, "shapes-bad/1", {"weights.onnx": WEIGHTS})
    s3.client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/shapes-bad/1/weights.onnx", Body=bytes(tampered))
    cache = tmp_path / "cache"
    h = s3_server(start_server, s3, cache, empty_models)
    r = detect(h.url, "shapes-bad/1")
    msg = error_message(r)
    assert r.status_code == 502, f"HTTP {r.status_code}: {msg}"
    assert "shapes-bad/1" in msg and "weights.onnx" in msg and "sha256" in msg, msg
    assert not (cache / "models" / "shapes-bad" / "1").exists()


def test_s3_unreachable_is_503_with_retry_after(start_server, s3, empty_models, tmp_path):
    dead = {**s3.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
    h = s3_server(start_server, s3, tmp_path / "cache", empty_models, env=dead)
    r = detect(h.url, "shapes-s3/1")
    msg = error_message(r)
    assert r.status_code == 503 and r.headers.get("Retry-After"), f"HTTP {r.status_code}: {msg}"
    assert "could be reached" in msg, msg


def test_cli_pull_from_s3_then_serve_offline(inference_bin, start_server, s3, empty_models, tmp_path):
    cache = tmp_path / "cache"

    def pull(*store):
        return subprocess.run([str(inference_bin), "models", "pull", "shapes-s3/1", "--cache-dir", str(cache),
                               *store], capture_output=True, text=True, timeout=120, env={**os.environ, **s3.env()},
                              stdin=subprocess.DEVNULL)

    r = pull("--model-store", f"s3://{BUCKET}/{PREFIX}")
    assert r.returncode == 0, r.stderr
    assert "weights.onnx" in r.stderr and "/s)" in r.stderr, r.stderr
    assert s3.requests[("GET", f"/{BUCKET}/{PREFIX}/shapes-s3/1/weights.onnx")] == 1
    bad = pull("--model-store", "ftp://x/y")
    assert bad.returncode != 0 and "unsupported scheme" in bad.stderr, bad.stderr
    off = start_server(["--cache-dir", str(cache), "--offline"], models=empty_models)
    ok(detect(off.url, "shapes-s3/1"))
