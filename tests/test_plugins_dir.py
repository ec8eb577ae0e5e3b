"""Drop-in plugins: a plugin is `<name>.wasm` + `<name>.toml` in the plugins directory; adding,
replacing or removing one takes effect on a running server within seconds, a broken one is
refused while the others carry on. Uses the example plugin users can copy
(examples/plugins/object-counts, a custom-task world served at /infer/object_counts)."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import requests

from helpers import FIXTURES, REPO, assert_error, img_b64, infer, install_plugin, wait_for

RELEASE = REPO / "target" / "release"
IMAGE = img_b64((FIXTURES / "images" / "dev" / "01_multi_320x320.jpg").read_bytes())


@pytest.fixture()
def live(start_server, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    install_plugin(RELEASE / "plugins", "object-detection", plugins)
    server = start_server(["--plugins-dir", str(plugins)])
    return server, plugins


def counts(url, **params):
    return requests.post(f"{url}/infer/object_counts", json={"model_id": "shapes-detect/1", "image": IMAGE, **params},
                         timeout=60)


def plugin_names(url):
    return {p["name"]: p for p in requests.get(f"{url}/plugins", timeout=10).json()["plugins"]}


def test_drop_in_replace_and_remove(live):
    server, plugins = live
    assert set(plugin_names(server.url)) == {"object-detection"}
    assert_error(counts(server.url), 404)

    install_plugin(RELEASE / "example-plugins", "object-counts", plugins)
    wait_for(lambda: counts(server.url).status_code == 200, "the dropped-in plugin serves /infer/object_counts")
    listed = plugin_names(server.url)["object-counts"]
    assert listed["route"] == "/infer/object_counts" and listed["world"] == "custom-task"
    assert listed["limits"]["timeout_ms"] == 10000 and listed["limits"]["output_kib"] == 64

    # Its answer agrees with the object-detection plugin on the same model and image.
    detections = infer(server.url, "shapes-detect/1", IMAGE, confidence=0.25, iou_threshold=0.45).json()["predictions"]
    r = counts(server.url, confidence=0.25, iou_threshold=0.45)
    body = r.json()
    assert body["plugin"] == "object-counts" and body["images"] == [{"width": 320, "height": 320}]
    want = Counter(p["class"] for p in detections)
    assert body["result"]["counts"] == dict(want) and body["result"]["total"] == len(detections)
    # Its own parameter: only objects whose centre is in the region.
    region = [0, 0, 160, 320]
    inside = Counter(p["class"] for p in detections if p["x"] <= 160)
    r = counts(server.url, confidence=0.25, iou_threshold=0.45, region=region)
    assert r.json()["result"]["counts"] == dict(inside) and 0 < sum(inside.values()) < len(detections)

    # Replacing the manifest (a new version with a tiny output limit) takes effect too.
    manifest = (plugins / "object-counts.toml").read_text()
    (plugins / "object-counts.toml").write_text(manifest.replace('version = "0.1.0"', 'version = "0.2.0"')
                                                .replace("output_kib = 64", "output_kib = 0"))
    wait_for(lambda: plugin_names(server.url)["object-counts"]["version"] == "0.2.0", "the new version is listed")
    message = assert_error(counts(server.url), 500)
    assert "object-counts" in message and "output limit" in message

    (plugins / "object-counts.wasm").unlink()
    (plugins / "object-counts.toml").unlink()
    wait_for(lambda: counts(server.url).status_code == 404, "the removed plugin's route is gone")
    assert infer(server.url, "shapes-detect/1", IMAGE).status_code == 200


def test_broken_plugins_are_refused_and_the_others_keep_serving(live):
    server, plugins = live
    (plugins / "garbage.wasm").write_bytes(b"\0asm this is not a component")
    (plugins / "garbage.toml").write_text('name = "garbage"\nversion = "1"\nworld = "custom-task"\nroute = "garbage"\n')
    # A real component in the wrong world: the trapping detector claiming to be a classifier.
    shutil.copy(RELEASE / "test-plugins" / "trapping-detector.wasm", plugins / "liar.wasm")
    (plugins / "liar.toml").write_text('name = "liar"\nversion = "1"\nworld = "classification"\n')
    # A manifest that does not parse.
    shutil.copy(RELEASE / "example-plugins" / "object-counts.wasm", plugins / "typo.wasm")
    (plugins / "typo.toml").write_text('name = "typo"\nversoin = "1"\nworld = "custom-task"\nroute = "typo"\n')
    wait_for(lambda: server.log_tail(400).count("plugin refused") >= 3, "three 'plugin refused' log lines")
    log = server.log_tail(400)
    assert "garbage" in log and "liar" in log and "typo" in log
    assert set(plugin_names(server.url)) == {"object-detection"}
    assert infer(server.url, "shapes-detect/1", IMAGE).status_code == 200
    assert_error(requests.post(f"{server.url}/infer/garbage", json={"model_id": "shapes-detect/1", "image": IMAGE},
                               timeout=30), 404)
    assert server.alive()
