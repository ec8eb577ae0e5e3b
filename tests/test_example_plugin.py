"""The example plugin builds on its own: `examples/plugins/object-counts`, copied out of the
repository into an empty folder with only its guest-crate dependency line pointed at this
checkout (as the README tells users to), builds with `cargo build --release --target
wasm32-wasip2`, and the component it makes is served when dropped into a server's plugins
directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
import requests

from helpers import DEV_IMAGES, HTTP_TIMEOUT, REPO, img_b64

EXAMPLE = REPO / "examples" / "plugins" / "object-counts"
IMAGE = img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())


def test_the_example_builds_outside_the_repository_and_serves(start_server, tmp_path):
    copy = tmp_path / "my-plugin"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("target"))
    manifest = (copy / "Cargo.toml").read_text()
    line = re.compile(r'^inference-guest = \{ path = "[^"]*" \}$', re.M)
    assert len(line.findall(manifest)) == 1, "the guest crate is reached by one dependency line"
    (copy / "Cargo.toml").write_text(line.sub(f'inference-guest = {{ path = "{REPO / "plugins" / "guest"}" }}', manifest))
    env = {**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")}
    build = subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2"], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    wasm = tmp_path / "target" / "wasm32-wasip2" / "release" / "object_counts.wasm"
    assert wasm.is_file()

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(REPO / "target" / "release" / "plugins" / "object-detection.wasm", plugins)
    shutil.copy(REPO / "target" / "release" / "plugins" / "object-detection.toml", plugins)
    shutil.copy(wasm, plugins / "object-counts.wasm")
    shutil.copy(copy / "plugin.toml", plugins / "object-counts.toml")
    server = start_server(["--plugins-dir", str(plugins)])
    body = {"model_id": "shapes-detect/1", "image": IMAGE, "confidence": 0.25, "iou_threshold": 0.45}
    deadline = time.monotonic() + 30
    while True:
        r = requests.post(f"{server.url}/infer/object_counts", json=body, timeout=HTTP_TIMEOUT)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text[:500]
    detected = requests.post(f"{server.url}/infer/object_detection", json=body, timeout=HTTP_TIMEOUT).json()
    assert r.json()["result"]["total"] == len(detected["predictions"]) > 0
