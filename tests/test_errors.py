"""Error paths: each gives its status code and a JSON body with a non-empty
`message` (422 may use FastAPI-style `detail`), never a 500, and the server keeps
answering good requests afterwards."""

import os
import pickle
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from helpers import (DEV_IMAGES, HTTP_TIMEOUT, SHAPES, assert_error, assert_same, b64, check_ok, img_b64,
                     img_numpy, img_url, infer, infer_ok, npy_bomb, png_bomb)

GOOD = DEV_IMAGES / "04_multi_160x120.jpg"
JPEG = (DEV_IMAGES / "02_multi_640x480.jpg").read_bytes()
PNG = (DEV_IMAGES / "13_multi_300x200.png").read_bytes()


def still_serving(base):
    out = infer_ok(base, SHAPES, img_b64(GOOD.read_bytes()), confidence=0.25)
    assert out["predictions"], "the good request found nothing"


def post_json_raw(base, body: bytes, ctype="application/json"):
    return requests.post(f"{base}/infer/object_detection", data=body,
                         headers={"Content-Type": ctype}, timeout=HTTP_TIMEOUT)


# --------------------------------------------------------------------------- 422: request schema

@pytest.mark.parametrize("body", [
    b"{not json",
    b"",
    b"[1, 2",
    b'"just a string"',
], ids=["broken", "empty", "truncated", "not-an-object"])
def test_invalid_json_422(server, body):
    assert_error(post_json_raw(server, body), 422, allow_detail=True)
    still_serving(server)


def test_missing_image_422(server):
    r = requests.post(f"{server}/infer/object_detection", json={"model_id": SHAPES}, timeout=HTTP_TIMEOUT)
    assert_error(r, 422, allow_detail=True)
    still_serving(server)


def test_missing_model_id_422(server):
    r = requests.post(f"{server}/infer/object_detection",
                      json={"image": img_b64(GOOD.read_bytes())}, timeout=HTTP_TIMEOUT)
    assert_error(r, 422, allow_detail=True)
    still_serving(server)


def test_image_without_type(server):
    r = infer(server, SHAPES, {"value": b64(GOOD.read_bytes())})
    assert r.status_code in (400, 422), r.text[:500]
    assert_error(r, r.status_code, allow_detail=True)
    still_serving(server)


# --------------------------------------------------------------------------- 400: bad images

BAD_IMAGES = {
    "unknown-type": {"type": "bogus", "value": "abc"},
    "bad-base64": {"type": "base64", "value": "!!!this is not base64###"},
    "empty-base64": {"type": "base64", "value": ""},
    "truncated-jpeg": img_b64(JPEG[:1000]),
    "truncated-jpeg-half": img_b64(JPEG[: len(JPEG) // 2]),
    "truncated-png-half": img_b64(PNG[: len(PNG) // 2]),
    "random-bytes": img_b64(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
    "text-not-image": img_b64(b"hello, I am definitely not an image\n" * 20),
    "numpy-garbage": img_numpy(b64(b"\x80\x04garbage that is not a pickle")),
    "numpy-not-array": img_numpy(b64(pickle.dumps({"a": 1}))),
    "numpy-wrong-shape": img_numpy(b64(pickle.dumps(np.zeros((20, 20, 7), np.uint8)))),
}


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_bad_image_400(server, kind):
    assert_error(infer(server, SHAPES, BAD_IMAGES[kind]), 400)
    still_serving(server)


def test_bad_image_in_batch_400(server):
    good = img_b64(GOOD.read_bytes())
    assert_error(infer(server, SHAPES, [good, BAD_IMAGES["truncated-jpeg"], good]), 400)
    still_serving(server)


def _peak_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("kind", ["png", "npy"])
def test_decompression_bomb_400(server, server_handle, kind):
    """A tiny file whose header declares 40000x40000 must be refused before decoding."""
    data = png_bomb() if kind == "png" else npy_bomb()
    assert len(data) < 200_000
    image = img_b64(data) if kind == "png" else img_numpy(b64(data))
    before = _peak_rss_kib(server_handle.pid)
    t0 = time.monotonic()
    r = infer(server, SHAPES, image)
    elapsed = time.monotonic() - t0
    assert_error(r, 400)
    grown_mib = (_peak_rss_kib(server_handle.pid) - before) / 1024
    assert grown_mib < 512, f"peak RSS grew by {grown_mib:.0f} MiB handling a {kind} bomb"
    assert elapsed < 10, f"{kind} bomb took {elapsed:.1f}s"
    still_serving(server)


def test_bad_urls_400(server, image_server):
    with socketless_port() as dead_port:
        urls = [
            f"{image_server}/dev/does-not-exist.jpg",          # 404 from the image server
            f"{image_server}/dev/ground_truth.json",           # not an image
            f"http://127.0.0.1:{dead_port}/x.jpg",            # connection refused
            "notaurl",
        ]
        for u in urls:
            assert_error(infer(server, SHAPES, img_url(u)), 400)
    still_serving(server)


class socketless_port:
    """A local port that nothing listens on (bound then closed)."""

    def __enter__(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- model ids

def test_unknown_model_404(server):
    assert_error(infer(server, "nope/1", img_b64(GOOD.read_bytes())), 404)
    assert_error(infer(server, "shapes-detect/99", img_b64(GOOD.read_bytes())), 404)
    still_serving(server)


@pytest.mark.parametrize("model_id", ["a/b/c", "../x/1", "/abs/1", "a/..", "../../etc/1", "shapes-detect/../1",
                                      "./shapes-detect/1", "", "/", "shapes-detect/1/"])
def test_malformed_model_id_400(server, model_id):
    assert_error(infer(server, model_id, img_b64(GOOD.read_bytes())), 400)
    still_serving(server)


@pytest.mark.parametrize("model_id", ["a\\b/1", "..\\x/1", "a/1\u0000", "~/1"])
def test_odd_model_id_is_400_or_404(server, model_id):
    """Odd but not path-shaped ids: refused (400) or simply not found (404), never a crash or a hit."""
    r = infer(server, model_id, img_b64(GOOD.read_bytes()))
    assert r.status_code in (400, 404), f"{model_id!r}: HTTP {r.status_code}: {r.text[:300]}"
    assert_error(r, r.status_code)
    still_serving(server)


# --------------------------------------------------------------------------- legacy route

def test_legacy_without_body_or_content_type_400(server):
    r = requests.post(f"{server}/{SHAPES}", params={"api_key": "x"}, timeout=HTTP_TIMEOUT)
    assert "content-type" not in {k.lower() for k in r.request.headers}
    assert_error(r, 400)
    still_serving(server)


def test_legacy_bad_bodies_400(server):
    url = f"{server}/{SHAPES}"
    cases = {
        "bad-base64": dict(data="%%%not base64%%%", headers={"Content-Type": "application/x-www-form-urlencoded"}),
        "wrong-multipart-part": dict(files={"image": ("a.jpg", JPEG, "image/jpeg")}),
        "multipart-not-image": dict(files={"file": ("a.txt", b"plain text", "text/plain")}),
        "numpy-garbage": dict(data=b"not a pickle", params_extra={"image_type": "numpy"},
                              headers={"Content-Type": "application/x-www-form-urlencoded"}),
        "bogus-image-type": dict(data=b64(JPEG), params_extra={"image_type": "bogus"},
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}),
    }
    for name, kw in cases.items():
        params = {"api_key": "x", **kw.pop("params_extra", {})}
        r = requests.post(url, params=params, timeout=HTTP_TIMEOUT, **kw)
        assert r.status_code == 400, f"{name}: HTTP {r.status_code}: {r.text[:300]}"
        assert_error(r, 400)
    still_serving(server)


def test_legacy_raw_binary_body(server):
    """Raw JPEG bytes instead of base64 on the legacy route: Roboflow answers 400
    ("payload contains raw bytes instead of a base64-encoded string"). Accepting them
    is a tolerable extension only if the result equals the base64 form."""
    url = f"{server}/{SHAPES}"
    params = {"api_key": "x", "confidence": 0.25, "overlap": 0.45}
    r = requests.post(url, params=params, data=JPEG, timeout=HTTP_TIMEOUT,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    if r.status_code == 400:
        assert_error(r, 400)
    else:
        ref = check_ok(requests.post(url, params=params, data=b64(JPEG), timeout=HTTP_TIMEOUT,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}))
        assert_same(ref, check_ok(r), "legacy raw bytes vs base64")
    still_serving(server)


def test_legacy_unknown_model_404(server):
    r = requests.post(f"{server}/nope/1", params={"api_key": "x"}, data=b64(GOOD.read_bytes()),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT)
    assert_error(r, 404)
    still_serving(server)


@pytest.mark.parametrize("path", ["/a/b/c", "/infer/object_detection/extra", "/shapes-detect/1/extra",
                                  "/model/registry/x"])
def test_unknown_route_404(server, path):
    assert_error(requests.get(server + path, timeout=HTTP_TIMEOUT), 404)
    assert_error(requests.post(server + path, json={}, timeout=HTTP_TIMEOUT), 404)


# --------------------------------------------------------------------------- pickle RCE

class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("route", ["json", "legacy"])
def test_malicious_pickle_is_refused(server, route, tmp_path):
    marker = Path("/tmp") / f"inference-pickle-rce-{uuid.uuid4().hex}"
    payload = pickle.dumps(_Evil(marker))
    assert b"system" in payload
    if route == "json":
        r = infer(server, SHAPES, img_numpy(b64(payload)))
    else:
        r = requests.post(f"{server}/{SHAPES}", params={"api_key": "x", "image_type": "numpy"}, data=payload,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT)
    try:
        assert_error(r, 400)
        time.sleep(0.3)  # a spawned shell would have created it by now
        assert not marker.exists(), "the pickle's os.system call was executed"
    finally:
        marker.unlink(missing_ok=True)
    still_serving(server)


# --------------------------------------------------------------------------- body size limit

@pytest.fixture(scope="module")
def small_body_server(start_server):
    return start_server(["--max-body-bytes", "100000"]).url


def test_body_over_limit_413(small_body_server):
    base = small_body_server
    still_serving(base)  # ~12 KB of base64 fits
    big = (DEV_IMAGES / "08_multi_800x600.jpg").read_bytes()  # 136 KB raw, 182 KB base64
    assert len(big) > 100_000
    assert_error(infer(base, SHAPES, img_b64(big)), 413)
    still_serving(base)
    r = requests.post(f"{base}/{SHAPES}", params={"api_key": "x"}, files={"file": ("a.jpg", big, "image/jpeg")},
                      timeout=HTTP_TIMEOUT)
    assert_error(r, 413)
    r = requests.post(f"{base}/{SHAPES}", params={"api_key": "x"}, data=b64(big),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=HTTP_TIMEOUT)
    assert_error(r, 413)
    still_serving(base)


def test_images_over_pixel_limit_400(start_server):
    """--max-image-pixels applies to real images too: a 640x480 JPEG (307200 px)
    is refused by a server limited to 100000 pixels; a 160x120 one is fine."""
    base = start_server(["--max-image-pixels", "100000"]).url
    still_serving(base)
    assert_error(infer(base, SHAPES, img_b64(JPEG)), 400)
    rgb = np.zeros((480, 640, 3), np.uint8)
    assert_error(infer(base, SHAPES, img_numpy(b64(pickle.dumps(rgb)))), 400)
    still_serving(base)
