"""The plugin sandbox: a hostile object-detection plugin (tests/plugins/hostile-detector)
misbehaves on request; every case must be answered with a JSON error naming the plugin and the
limit, while normal requests keep being served."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from helpers import FIXTURES, REPO, assert_error, img_b64, infer

IMAGE = img_b64((FIXTURES / "images" / "dev" / "04_multi_160x120.jpg").read_bytes())
PLUGIN_DIR = REPO / "target" / "release" / "test-plugins" / "hostile"


@pytest.fixture(scope="module")
def hostile(start_server):
    if not (PLUGIN_DIR / "hostile-detector.wasm").is_file():
        pytest.fail(f"{PLUGIN_DIR} has no hostile plugin: run scripts/setup", pytrace=False)
    return start_server(["--plugins-dir", str(PLUGIN_DIR), "--plugin-timeout-ms", "1000",
                         "--plugin-memory-mib", "64"])


def ask(url: str, mode: str):
    return infer(url, "shapes-detect/1", IMAGE, class_filter=[mode])


def test_well_behaved_call_works(hostile):
    r = ask(hostile.url, "ok")
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["class"] == "shapes-detect/1"


@pytest.mark.parametrize("mode, status, words", [
    ("loop", 504, ["hostile-detector", "time limit", "1s"]),
    ("alloc", 500, ["hostile-detector", "memory", "64 MiB"]),
    ("flood", 500, ["hostile-detector", "memory"]),
    ("big", 500, ["hostile-detector", "output limit"]),
    ("panic", 500, ["hostile-detector", "asked to panic"]),
    ("foreign-graph", 500, ["hostile-detector", "NotFound"]),
    ("read-file", 500, ["hostile-detector", "file read refused"]),
    ("env", 500, ["hostile-detector", "environment has 0 variables"]),
    # The host's imaging makes its tensors outside the plugin's memory, within the same limit.
    ("huge-input", 400, ["hostile-detector", "8192x8192", "memory limit"]),
    ("hoard", 400, ["hostile-detector", "640x640", "memory limit"]),
    ("forged-image", 500, ["hostile-detector", "trapped"]),
])
def test_misbehaviour_is_contained(hostile, mode, status, words):
    started = time.monotonic()
    r = ask(hostile.url, mode)
    message = assert_error(r, status)
    for word in words:
        assert word in message, f"{mode}: {word!r} not in {message!r}"
    assert time.monotonic() - started < 10, f"{mode} took too long"
    assert hostile.alive()
    ok = ask(hostile.url, "ok")
    assert ok.status_code == 200, f"after {mode}: {ok.text}"


def test_normal_requests_carry_on_during_hostile_ones(hostile):
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        bad = [pool.submit(ask, hostile.url, mode) for mode in ("loop", "alloc", "loop")]
        good = [pool.submit(ask, hostile.url, "ok") for _ in range(12)]
        assert [f.result().status_code for f in good] == [200] * 12
        assert sorted(f.result().status_code for f in bad) == [500, 504, 504]
