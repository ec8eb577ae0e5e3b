"""The examples build on their own: `examples/plugins/object-counts` (a plugin) and
`examples/blocks/zone-counter` (a workflow block), each copied out of the repository into an empty
folder with only its guest-crate dependency line pointed at this checkout (as the README tells
users to), build with `cargo build --release --target wasm32-wasip2`, and the component each makes
is served when dropped into a server's plugins directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest
import requests

from helpers import DEV_IMAGES, HTTP_TIMEOUT, REPO, img_b64

IMAGE = img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    """One cargo target directory for both examples, so their shared dependencies build once."""
    return tmp_path_factory.mktemp("target")


def build_outside(example, name, tmp_path, target_dir):
    """Copies `example` out of the repository, points its guest-crate line at this checkout, builds
    it, and installs the component and its manifest as `<name>` in a fresh plugins directory (with
    the object-detection plugin)."""
    copy = tmp_path / "my-plugin"
    shutil.copytree(example, copy, ignore=shutil.ignore_patterns("target"))
    manifest = (copy / "Cargo.toml").read_text()
    line = re.compile(r'^inference-guest = \{ path = "[^"]*" \}$', re.M)
    assert len(line.findall(manifest)) == 1, "the guest crate is reached by one dependency line"
    (copy / "Cargo.toml").write_text(line.sub(f'inference-guest = {{ path = "{REPO / "plugins" / "guest"}" }}', manifest))
    env = {**os.environ, "CARGO_TARGET_DIR": str(target_dir)}
    build = subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2"], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    wasm = target_dir / "wasm32-wasip2" / "release" / f"{name.replace('-', '_')}.wasm"
    assert wasm.is_file()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(REPO / "target" / "release" / "plugins" / "object-detection.wasm", plugins)
    shutil.copy(REPO / "target" / "release" / "plugins" / "object-detection.toml", plugins)
    shutil.copy(wasm, plugins / f"{name}.wasm")
    shutil.copy(copy / "plugin.toml", plugins / f"{name}.toml")
    return plugins


def test_the_example_builds_outside_the_repository_and_serves(start_server, tmp_path, target_dir):
    plugins = build_outside(REPO / "examples" / "plugins" / "object-counts", "object-counts", tmp_path, target_dir)
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


def test_the_example_block_builds_outside_the_repository_and_runs(start_server, tmp_path, target_dir):
    plugins = build_outside(REPO / "examples" / "blocks" / "zone-counter", "zone-counter", tmp_path, target_dir)
    server = start_server(["--plugins-dir", str(plugins)])
    spec = {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [{"type": "ObjectDetectionModel", "name": "det", "images": "$inputs.image",
                   "model_id": "shapes-detect/1", "confidence": 0.25},
                  {"type": "examples/zone_counter@v1", "name": "zone", "predictions": "$steps.det.predictions"}],
        "outputs": [{"type": "JsonField", "name": "total", "selector": "$steps.zone.total"},
                    {"type": "JsonField", "name": "det", "selector": "$steps.det.predictions"}],
    }
    r = requests.post(f"{server.url}/workflows/run", json={"specification": spec, "inputs": {"image": IMAGE}},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    out = r.json()["outputs"][0]
    assert out["total"] == len(out["det"]["predictions"]) > 0
