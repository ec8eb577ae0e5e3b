"""A plugin that traps (panics on every call) gives a clean JSON 500 naming the
plugin, and the server stays alive. Uses <repo>/target/release/test-plugins,
where the build puts a deliberately trapping object-detection plugin."""

import re

import pytest
import requests

from helpers import DEV_IMAGES, HTTP_TIMEOUT, REF_PARAMS, SHAPES, error_message, img_b64, infer

IMG = DEV_IMAGES / "01_multi_320x320.jpg"


@pytest.fixture(scope="module")
def trap_dir(repo):
    d = repo / "target" / "release" / "test-plugins"
    if not d.is_dir():
        pytest.fail(f"{d} does not exist: run scripts/setup (it builds the trapping test plugin)", pytrace=False)
    return d


@pytest.fixture(scope="module")
def trap_server(start_server, trap_dir):
    return start_server(["--plugins-dir", str(trap_dir)])


def plugin_names(trap_dir):
    names = set()
    for p in trap_dir.iterdir():
        if p.suffix in (".wasm", ".cwasm"):
            names |= {p.stem, p.stem.replace("_", "-"), p.stem.replace("-", "_")}
    return names


def check_trap_response(r, trap_dir):
    assert r.status_code == 500, f"expected a 500, got HTTP {r.status_code}: {r.text[:500]}"
    msg = error_message(r)
    low = msg.lower()
    assert "plugin" in low, f"message does not say a plugin failed: {msg!r}"
    assert re.search(r"trap|panic", low), f"message does not say the plugin trapped/panicked: {msg!r}"
    names = plugin_names(trap_dir)
    if names:
        assert any(n.lower() in low for n in names), f"message names none of {sorted(names)}: {msg!r}"
    return msg


def test_trap_gives_clean_500_and_server_survives(trap_server, trap_dir):
    base = trap_server.url
    first = check_trap_response(infer(base, SHAPES, img_b64(IMG.read_bytes()), **REF_PARAMS), trap_dir)
    print(f"\ntrap message: {first}")
    # The server (and a fresh plugin instance) handles the next request the same way.
    check_trap_response(infer(base, SHAPES, img_b64(IMG.read_bytes()), **REF_PARAMS), trap_dir)
    r = requests.post(f"{base}/{SHAPES}", params={"api_key": "x"}, files={"file": ("a.jpg", IMG.read_bytes())},
                      timeout=HTTP_TIMEOUT)
    check_trap_response(r, trap_dir)
    r = requests.get(f"{base}/healthz", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "healthy"}, r.text
    assert requests.get(f"{base}/model/registry", timeout=HTTP_TIMEOUT).status_code == 200
    assert trap_server.alive(), trap_server.log_tail()


def test_bad_input_still_400_not_500(trap_server):
    """Request validation happens before the plugin runs: a bad image is still a 400."""
    r = infer(trap_server.url, SHAPES, {"type": "base64", "value": "!!!"})
    assert r.status_code == 400, r.text[:500]
    assert trap_server.alive()
