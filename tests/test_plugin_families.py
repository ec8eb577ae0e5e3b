"""Plugins chosen per model family: a plugin's manifest claims models (by architecture name or by
the outputs it decodes); for each model the server picks the plugin the model pins, else the most
specific claim, else the world's default, and reports the choice. Installing a plugin for a new
family needs no restart, and the YOLO models stay with the built-in plugin.

Uses the test plugin `made-up-detector` (tests/plugins/made-up-detector): the YOLO decoding, run
on the real model, with every class name marked `madeup:`."""

from __future__ import annotations

import json
import shutil

import pytest
import requests

from helpers import (
    DEV_IMAGES, HTTP_TIMEOUT, REPO, REF_PARAMS, assert_error, img_b64, infer, same_predictions,
    install_plugin, wait_for, key_sha as sha,
)

RELEASE = REPO / "target" / "release"
FAMILY = RELEASE / "test-plugins" / "families"
IMAGE = img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())
MARK = "madeup:"


def model_dir(root, model_id, weights, files=None):
    """<root>/<model_id>/weights.onnx and the given side files (name → text)."""
    d = root / model_id
    d.mkdir(parents=True)
    shutil.copyfile(weights, d / "weights.onnx")
    for name, text in (files or {}).items():
        (d / name).write_text(text)
    return d


MADEUP_TYPE = {"model_type.json": json.dumps({"project_task_type": "object-detection", "model_type": "madeup-v1"})}


@pytest.fixture()
def families(start_server, models_dir, tmp_path):
    """A server with only the built-in object-detection plugin, and models of several families."""
    if not (FAMILY / "made-up-detector.wasm").is_file():
        pytest.fail("test plugin missing: run scripts/setup", pytrace=False)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    install_plugin(RELEASE / "plugins", "object-detection", plugins)
    models = tmp_path / "models"
    weights = models_dir / "shapes-detect/1/weights.onnx"
    model_dir(models, "shapes-detect/1", weights)
    model_dir(models, "madeup-shapes/1", weights, MADEUP_TYPE)
    model_dir(models, "pinned/1", weights, {"model.toml": 'plugin = "made-up-detector"\n'})
    model_dir(models, "pinned-missing/1", weights, {"model.toml": 'plugin = "not-installed"\n'})
    model_dir(models, "static/1", models_dir / "shapes-detect-static/1/weights.onnx")
    server = start_server(["--plugins-dir", str(plugins)], models=models)
    return server, plugins


def registry(url):
    return {m["model_id"]: m for m in requests.get(f"{url}/model/registry", timeout=HTTP_TIMEOUT).json()["models"]}


def classes(r):
    assert r.status_code == 200, r.text[:500]
    return [p["class"] for p in r.json()["predictions"]]


def test_a_family_plugin_dropped_in_serves_its_models_only(families):
    server, plugins = families
    url = server.url
    # Before: the made-up model is served by the world's default, like any model.
    before = infer(url, "madeup-shapes/1", IMAGE, **REF_PARAMS)
    assert before.status_code == 200 and not any(c.startswith(MARK) for c in classes(before))
    entry = registry(url)["madeup-shapes/1"]
    assert (entry["plugin"], entry["plugin_reason"], entry["architecture"]) == ("object-detection", "default", "madeup-v1")

    install_plugin(FAMILY, "made-up-detector", plugins)
    wait_for(lambda: registry(url)["madeup-shapes/1"]["plugin"] == "made-up-detector",
             "the dropped-in plugin claims the made-up model")
    assert registry(url)["madeup-shapes/1"]["plugin_reason"] == "architecture"
    after = infer(url, "madeup-shapes/1", IMAGE, **REF_PARAMS)
    names = classes(after)
    assert names and all(c.startswith(MARK) for c in names), names
    # The same model output, decoded the same way: the same boxes.
    unmarked = [{**p, "class": p["class"][len(MARK):]} for p in after.json()["predictions"]]
    same_predictions(before.json()["predictions"], unmarked, 320, 320)
    # It pre-processes in WebAssembly, the default plugin with the host's imaging: bit-identical.
    exact = lambda ps: [{k: v for k, v in p.items() if k != "detection_id"} for p in ps]
    assert exact(unmarked) == exact(before.json()["predictions"])

    # The YOLO model stays with the built-in plugin.
    yolo = infer(url, "shapes-detect/1", IMAGE, **REF_PARAMS)
    assert classes(yolo) and not any(c.startswith(MARK) for c in classes(yolo))
    assert registry(url)["shapes-detect/1"]["plugin"] == "object-detection"

    # /plugins reports what the plugin claims.
    listed = {p["name"]: p for p in requests.get(f"{url}/plugins", timeout=HTTP_TIMEOUT).json()["plugins"]}
    assert listed["made-up-detector"]["models"]["architectures"] == ["madeup-*"]
    assert listed["object-detection"]["models"] is None
    # GET /models reports the plugin of loaded models.
    on_disk = {m["model_id"]: m for m in requests.get(f"{url}/models", timeout=HTTP_TIMEOUT).json()["models"]}
    assert on_disk["madeup-shapes/1"]["plugin"] == "made-up-detector"
    assert on_disk["shapes-detect/1"]["plugin"] == "object-detection"
    assert "plugin for model madeup-shapes/1" in server.log_tail(200)

    # Removed again: the default serves the family.
    (plugins / "made-up-detector.wasm").unlink()
    (plugins / "made-up-detector.toml").unlink()
    wait_for(lambda: registry(url)["madeup-shapes/1"]["plugin"] == "object-detection", "the default is back")


def test_pins_and_output_claims(families):
    server, plugins = families
    url = server.url
    # A pin to a plugin that is not installed is a clear 503, not another plugin's answer.
    message = assert_error(infer(url, "pinned-missing/1", IMAGE), 503)
    assert "not-installed" in message
    install_plugin(FAMILY, "made-up-detector", plugins)
    wait_for(lambda: infer(url, "pinned/1", IMAGE).status_code == 200
             and all(c.startswith(MARK) for c in classes(infer(url, "pinned/1", IMAGE, **REF_PARAMS))),
             "the pinned model is served by its plugin")
    assert registry(url)["pinned/1"]["plugin_reason"] == "pinned"

    # The same component claiming the static export's exact output shape instead.
    manifest = (FAMILY / "made-up-detector.toml").read_text().replace(
        'architectures = ["madeup-*"]', 'outputs = [{ name = "output0", shape = [1, 7, 2100] }]')
    install_plugin(FAMILY, "made-up-detector", plugins, manifest)
    wait_for(lambda: registry(url).get("madeup-shapes/1", {}).get("plugin") in (None, "object-detection")
             and all(c.startswith(MARK) for c in classes(infer(url, "static/1", IMAGE, **REF_PARAMS))),
             "the output claim takes the static model")
    assert registry(url)["static/1"]["plugin_reason"] == "outputs"
    # The dynamic-batch export ([-1, 7, -1]) does not fit the claim.
    assert not any(c.startswith(MARK) for c in classes(infer(url, "shapes-detect/1", IMAGE, **REF_PARAMS)))


def test_a_second_default_for_a_world_is_refused(families):
    server, plugins = families
    # The made-up component without its claims would be a second default object-detection plugin.
    manifest = 'name = "second-default"\nversion = "1"\nworld = "object-detection"\n'
    shutil.copy(FAMILY / "made-up-detector.wasm", plugins / "second-default.wasm")
    (plugins / "second-default.toml").write_text(manifest)
    wait_for(lambda: "second-default" in server.log_tail(200) and "plugin refused" in server.log_tail(200),
             "the second default is refused")
    names = {p["name"] for p in requests.get(f"{server.url}/plugins", timeout=HTTP_TIMEOUT).json()["plugins"]}
    assert names == {"object-detection"}
    assert not any(c.startswith(MARK) for c in classes(infer(server.url, "shapes-detect/1", IMAGE)))


def test_a_tenants_plugins_bound_the_choice(start_server, models_dir, tmp_path):
    """A tenant that may use only the built-in plugin gets it for the made-up model too; a tenant
    that may use every plugin gets the family's."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    install_plugin(RELEASE / "plugins", "object-detection", plugins)
    install_plugin(FAMILY, "made-up-detector", plugins)
    models = tmp_path / "models"
    model_dir(models, "madeup-shapes/1", models_dir / "shapes-detect/1/weights.onnx", MADEUP_TYPE)
    (tmp_path / "tenants.toml").write_text(f"""
[[tenant]]
name = "plain"
api_keys = ["{sha('plain-key')}"]
models = ["*"]
plugins = ["object-detection"]

[[tenant]]
name = "all"
api_keys = ["{sha('all-key')}"]
models = ["*"]
plugins = ["*"]
""")
    server = start_server(["--plugins-dir", str(plugins), "--tenants", str(tmp_path / "tenants.toml")], models=models)

    def ask(key):
        return requests.post(f"{server.url}/infer/object_detection", headers={"Authorization": f"Bearer {key}"},
                             json={"model_id": "madeup-shapes/1", "image": IMAGE, **REF_PARAMS}, timeout=HTTP_TIMEOUT)

    assert all(c.startswith(MARK) for c in classes(ask("all-key")))
    assert not any(c.startswith(MARK) for c in classes(ask("plain-key")))
    seen = requests.get(f"{server.url}/model/registry", headers={"Authorization": "Bearer plain-key"},
                        timeout=HTTP_TIMEOUT).json()["models"]
    assert [m["plugin"] for m in seen] == ["object-detection"]
