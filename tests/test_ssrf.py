"""URL images must not turn the server into a proxy into its own network: by default only
https, only public addresses (checked after DNS resolution, pinned for the connection, and
re-checked on every redirect hop)."""

from __future__ import annotations

import http.server
import threading

import pytest
import requests

from helpers import FIXTURES, assert_error, img_b64, img_url, infer

JPEG = (FIXTURES / "images" / "dev" / "01_multi_320x320.jpg").read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):  # noqa: N802 (http.server API)
        if self.path == "/image.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)
        else:
            self.send_response(302)
            self.send_header("Location", self.target)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web():
    """An image server on 127.0.0.2 whose other paths redirect to 127.0.0.1."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Handler)
    port = httpd.server_address[1]
    _Handler.target = f"http://127.0.0.1:{port}/image.jpg"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def strict(start_server):
    return start_server().url


@pytest.fixture(scope="module")
def listed(start_server):
    """Plain http allowed and 127.0.0.2 explicitly allowed: everything else stays refused."""
    return start_server(["--allow-http-urls", "--url-allow-hosts", "127.0.0.2"]).url


def refused(url: str, image_url: str, *words: str) -> str:
    message = assert_error(infer(url, "shapes-detect/1", img_url(image_url)), 400)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def test_defaults_refuse_non_public_and_plain_http(strict, web):
    port = web.rsplit(":", 1)[1]
    refused(strict, f"{web}/image.jpg", "https only")
    refused(strict, f"https://127.0.0.1:{port}/image.jpg", "not public")
    refused(strict, f"https://[::1]:{port}/image.jpg", "not public")
    refused(strict, "https://169.254.169.254/latest/meta-data/", "not public")
    refused(strict, "https://2130706433/", "not public")
    refused(strict, f"https://localhost:{port}/image.jpg", "not public")
    refused(strict, "file:///etc/passwd", "not allowed")
    # The legacy route's ?image= goes through the same checks.
    r = requests.get(f"{strict}/shapes-detect/1", params={"image": f"https://127.0.0.1:{port}/image.jpg"}, timeout=30)
    assert "not public" in assert_error(r, 400)
    assert requests.get(f"{strict}/healthz", timeout=5).status_code == 200


def test_allowed_host_works_but_its_redirect_to_loopback_does_not(listed, web):
    ok = infer(listed, "shapes-detect/1", img_url(f"{web}/image.jpg"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["predictions"], "the allowed host's image must be served"
    refused(listed, f"{web}/redirect", "redirect", "127.0.0.1", "not public")
    refused(listed, f"http://localhost:{web.rsplit(':', 1)[1]}/image.jpg", "not public")
    # The same image as base64 is of course fine.
    assert infer(listed, "shapes-detect/1", img_b64(JPEG)).status_code == 200
