"""Custom workflow blocks: WebAssembly components of the `workflow-block` world, installed as plugins
(`<name>.wasm` + `<name>.toml` with a `[block]`). The example block (examples/blocks/zone-counter:
detections whose centre lies in a zone, counted per class) inside real workflows on shapes-detect, its
outputs computed independently from the model's detections; definitions validated against its
manifest; the hostile block (tests/plugins/hostile-block) contained by the plugin limits while other
workflows are served; a block dropped into a running server's plugins directory; a tenant seeing only
the blocks of the plugins it may use."""

from __future__ import annotations

import concurrent.futures
import copy
import shutil
import time
from collections import Counter

import pytest
import requests

from helpers import (
    DEV_IMAGES, HTTP_TIMEOUT, REPO, SHAPES, assert_error, img_b64, infer, install_plugin, wait_for,
    key_sha as sha,
)

RELEASE = REPO / "target" / "release"
EXAMPLES = RELEASE / "example-plugins"
HOSTILE = RELEASE / "test-plugins" / "blocks"
IMAGE = img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())
OTHER = img_b64((DEV_IMAGES / "04_multi_160x120.jpg").read_bytes())
ZONE = [0, 0, 160, 320]
ZONE_TYPE = "examples/zone_counter@v1"


def plugins_dir(root, *blocks):
    d = root / "plugins"
    d.mkdir()
    install_plugin(RELEASE / "plugins", "object-detection", d)
    for src, name in blocks:
        install_plugin(src, name, d)
    return d


@pytest.fixture(scope="module")
def blocks_server(start_server, tmp_path_factory):
    d = plugins_dir(tmp_path_factory.mktemp("blocks"), (EXAMPLES, "zone-counter"), (HOSTILE, "hostile-block"))
    return start_server(["--plugins-dir", str(d), "--plugin-timeout-ms", "1000", "--plugin-memory-mib", "64"])


def zone_definition(zone=ZONE, confidence=0.25):
    counter = {"type": ZONE_TYPE, "name": "zone", "predictions": "$steps.det.predictions"}
    if zone is not None:
        counter["zone"] = zone
    return {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {"type": "ObjectDetectionModel", "name": "det", "images": "$inputs.image", "model_id": SHAPES,
             "confidence": confidence},
            counter,
        ],
        "outputs": [
            {"type": "JsonField", "name": "detections", "selector": "$steps.det.predictions"},
            {"type": "JsonField", "name": "in_zone", "selector": "$steps.zone.predictions"},
            {"type": "JsonField", "name": "counts", "selector": "$steps.zone.counts"},
            {"type": "JsonField", "name": "total", "selector": "$steps.zone.total"},
        ],
    }


def hostile_definition():
    return {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"},
                   {"type": "WorkflowParameter", "name": "mode", "default_value": "ok"}],
        "steps": [{"type": "tests/hostile@v1", "name": "hostile", "mode": "$inputs.mode"}],
        "outputs": [{"type": "JsonField", "name": "result", "selector": "$steps.hostile.result"}],
    }


def run(url, spec, headers=None, **inputs):
    body = {"specification": spec, "inputs": {"image": IMAGE, **inputs}}
    return requests.post(f"{url}/workflows/run", json=body, headers=headers, timeout=HTTP_TIMEOUT)


def in_zone(p, zone=ZONE):
    x1, y1, x2, y2 = zone
    return x1 <= p["x"] <= x2 and y1 <= p["y"] <= y2


def test_zone_counter_counts_what_the_model_found_in_the_zone(blocks_server):
    url = blocks_server.url
    # Independently: the model's detections from /infer, filtered and counted here.
    found = infer(url, SHAPES, IMAGE, confidence=0.25).json()["predictions"]
    inside = [p for p in found if in_zone(p)]
    assert 0 < len(inside) < len(found), "the zone must split the fixture's shapes"
    r = run(url, zone_definition())
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["counts"] == dict(Counter(p["class"] for p in inside))
    assert out["total"] == len(inside)
    key = lambda p: (p["class"], round(p["x"], 3), round(p["y"], 3))
    assert sorted(map(key, out["in_zone"]["predictions"])) == sorted(map(key, inside))
    # The detections it passes on are the model step's own: ids, lineage and image size kept.
    by_id = {p["detection_id"]: p for p in out["detections"]["predictions"]}
    for p in out["in_zone"]["predictions"]:
        assert p == by_id[p["detection_id"]]
    assert out["in_zone"]["image"] == {"width": 320, "height": 320}
    # Without a zone (the field's null default): everything the model found.
    out = run(url, zone_definition(zone=None)).json()["outputs"][0]
    assert out["total"] == len(found) and out["counts"] == dict(Counter(p["class"] for p in found))


def test_zone_counter_runs_per_image_of_a_batch(blocks_server):
    url = blocks_server.url
    r = run(url, zone_definition(zone=[0, 0, 80, 120]), image=[IMAGE, OTHER])
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert len(outputs) == 2
    for image, out in zip([IMAGE, OTHER], outputs):
        found = infer(url, SHAPES, image, confidence=0.25).json()["predictions"]
        inside = [p for p in found if in_zone(p, [0, 0, 80, 120])]
        assert out["total"] == len(inside) and out["counts"] == dict(Counter(p["class"] for p in inside))


def test_zone_counter_on_crops_keeps_their_lineage(blocks_server):
    spec = {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {"type": "ObjectDetectionModel", "name": "det", "images": "$inputs.image", "model_id": SHAPES},
            {"type": "Crop", "name": "crop", "images": "$inputs.image", "predictions": "$steps.det.predictions"},
            {"type": "ObjectDetectionModel", "name": "inner", "images": "$steps.crop.crops", "model_id": SHAPES,
             "confidence": 0.01},
            {"type": ZONE_TYPE, "name": "zone", "predictions": "$steps.inner.predictions"},
        ],
        "outputs": [
            {"type": "JsonField", "name": "inner", "selector": "$steps.inner.predictions", "coordinates_system": "own"},
            {"type": "JsonField", "name": "kept", "selector": "$steps.zone.predictions", "coordinates_system": "own"},
            {"type": "JsonField", "name": "kept_in_parent", "selector": "$steps.zone.predictions"},
            {"type": "JsonField", "name": "inner_in_parent", "selector": "$steps.inner.predictions"},
            {"type": "JsonField", "name": "total", "selector": "$steps.zone.total"},
        ],
    }
    r = run(blocks_server.url, spec)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    # One item per crop; with no zone the block keeps every detection, each still on its crop.
    assert len(out["total"]) == len(out["inner"]) > 1 and sum(out["total"]) > 0
    assert out["kept"] == out["inner"] and out["kept_in_parent"] == out["inner_in_parent"]
    assert any("parent_origin" in p for crop in out["kept"] for p in crop["predictions"])


def test_definitions_are_checked_against_the_block_manifest(blocks_server):
    url = blocks_server.url

    def with_step(**fields):
        spec = zone_definition()
        spec["steps"][1].update(fields)
        return spec

    def refused(spec, status=400):
        r = run(url, spec)
        assert_error(r, status)
        return r.json()

    assert requests.post(f"{url}/workflows/validate", json=zone_definition(), timeout=HTTP_TIMEOUT).json() == {
        "status": "ok"}
    body = refused(with_step(predictions="$inputs.image"))
    assert body["error_type"] == "ReferenceTypeError" and "object_detection_prediction" in body["message"]
    body = refused(with_step(zone="left half"))
    assert body["error_type"] == "WorkflowSyntaxError"
    assert body["blocks_errors"][0]["property_name"] == "zone"
    assert "valid list" in body["blocks_errors"][0]["property_details"]
    body = refused(with_step(zon=[0, 0, 1, 1]))
    assert body["error_type"] == "WorkflowSyntaxError" and body["blocks_errors"][0]["property_name"] == "zon"
    assert "Extra inputs are not permitted" in body["inner_error_message"]
    spec = zone_definition()
    del spec["steps"][1]["predictions"]
    body = refused(spec)
    assert body["blocks_errors"][0]["property_name"] == "predictions" and "Field required" in body["inner_error_message"]
    spec = zone_definition()
    spec["outputs"][0]["selector"] = "$steps.zone.average"
    assert refused(spec)["error_type"] == "InvalidReferenceTargetError"
    # A zone the block cannot use: its own invalid-input error, as the step's 400.
    body = refused(with_step(zone=[1, 2]))
    assert body["error_type"] == "StepExecutionError" and "zone-counter" in body["message"]
    assert body["blocks_errors"][0]["block_id"] == "zone" and body["blocks_errors"][0]["block_type"] == ZONE_TYPE
    # Roboflow's Python blocks stay refused, pointing here.
    spec = zone_definition()
    spec["dynamic_blocks_definitions"] = [{"type": "DynamicBlockDefinition"}]
    body = refused(spec)
    assert body["error_type"] == "DynamicBlockError" and "workflow-block" in body["message"]


def test_describe_and_plugins_list_the_blocks(blocks_server):
    url = blocks_server.url
    blocks = {b["manifest_type_identifier"]: b for b in
              requests.get(f"{url}/workflows/blocks/describe", timeout=HTTP_TIMEOUT).json()["blocks"]}
    zone = blocks[ZONE_TYPE]
    assert zone["block_source"] == "webassembly_plugin" and zone["human_friendly_block_name"] == "Zone Counter"
    assert zone["block_schema"]["required"] == ["type", "name", "predictions"]
    assert zone["block_schema"]["properties"]["zone"]["kind"] == ["list_of_values"]
    assert [o["name"] for o in zone["outputs_manifest"]] == ["predictions", "counts", "total"]
    assert "tests/hostile@v1" in blocks and "roboflow_core/detections_filter@v1" in blocks
    plugins = {p["name"]: p for p in requests.get(f"{url}/plugins", timeout=HTTP_TIMEOUT).json()["plugins"]}
    assert plugins["zone-counter"]["world"] == "workflow-block" and plugins["zone-counter"]["route"] is None
    assert plugins["zone-counter"]["block"]["type"] == ZONE_TYPE


@pytest.mark.parametrize("mode, status, words", [
    ("loop", 504, ["hostile-block", "time limit", "1s"]),
    ("alloc", 500, ["hostile-block", "memory", "64 MiB"]),
    ("panic", 500, ["hostile-block", "asked to panic"]),
    ("big", 500, ["hostile-block", "output limit"]),
    ("wrong-kind", 500, ["hostile-block", "output `result`", "returned detections"]),
    ("missing", 500, ["hostile-block", "did not return output `result`"]),
    ("read-file", 500, ["hostile-block", "file read refused"]),
    ("invalid", 400, ["hostile-block", "mode `invalid` is invalid"]),
])
def test_hostile_block_is_contained(blocks_server, mode, status, words):
    started = time.monotonic()
    r = run(blocks_server.url, hostile_definition(), mode=mode)
    message = assert_error(r, status)
    for word in words:
        assert word in message, f"{mode}: {word!r} not in {message!r}"
    body = r.json()
    assert body["error_type"] == "StepExecutionError" and body["inner_error_type"] == "PluginError"
    assert body["blocks_errors"][0]["block_id"] == "hostile"
    assert time.monotonic() - started < 10, f"{mode} took too long"
    assert blocks_server.alive()
    ok = run(blocks_server.url, hostile_definition(), mode="ok")
    assert ok.status_code == 200 and ok.json()["outputs"][0]["result"] == "ok", ok.text


def test_other_workflows_carry_on_during_hostile_blocks(blocks_server):
    url = blocks_server.url
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        bad = [pool.submit(run, url, hostile_definition(), mode=m) for m in ("loop", "alloc", "loop")]
        good = [pool.submit(run, url, zone_definition()) for _ in range(8)]
        assert [f.result().status_code for f in good] == [200] * 8
        assert sorted(f.result().status_code for f in bad) == [500, 504, 504]


def test_a_block_dropped_into_a_running_server(start_server, tmp_path):
    d = plugins_dir(tmp_path)
    server = start_server(["--plugins-dir", str(d)])
    body = run(server.url, zone_definition()).json()
    assert body["error_type"] == "WorkflowSyntaxError" and ZONE_TYPE in body["inner_error_message"]

    install_plugin(EXAMPLES, "zone-counter", d)
    wait_for(lambda: run(server.url, zone_definition()).status_code == 200, "the dropped-in block runs")
    assert run(server.url, zone_definition()).json()["outputs"][0]["total"] > 0

    # A new version of the block (here: a tiny output limit) replaces the one definitions were compiled with.
    manifest = (d / "zone-counter.toml").read_text()
    (d / "zone-counter.toml").write_text(manifest.replace('version = "0.1.0"', 'version = "0.2.0"')
                                         .replace("output_kib = 256", "output_kib = 0"))
    wait_for(lambda: run(server.url, zone_definition()).status_code == 500, "the new version serves")
    assert "output limit" in run(server.url, zone_definition()).json()["message"]

    # A block importing wasi:nn (here: a task plugin declared as a block) is refused; the others serve.
    shutil.copy(RELEASE / "plugins" / "object-detection.wasm", d / "sneaky.wasm")
    (d / "sneaky.toml").write_text('name = "sneaky"\nversion = "1"\nworld = "workflow-block"\n[block]\n'
                                   'type = "tests/sneaky@v1"\n[[block.outputs]]\nname = "x"\nkind = "*"\n')
    wait_for(lambda: "sneaky" in server.log_tail(200) and "plugin refused" in server.log_tail(200),
             "the block importing wasi:nn is refused")
    assert "may not import wasi:nn" in server.log_tail(200)

    (d / "zone-counter.wasm").unlink()
    (d / "zone-counter.toml").unlink()
    wait_for(lambda: run(server.url, zone_definition()).status_code == 400, "the removed block is unknown again")
    assert infer(server.url, SHAPES, IMAGE).status_code == 200


def test_a_tenant_sees_only_the_blocks_its_plugins_allow(start_server, tmp_path):
    d = plugins_dir(tmp_path, (EXAMPLES, "zone-counter"))
    (tmp_path / "tenants.toml").write_text(f"""
[[tenant]]
name = "counting"
api_keys = ["{sha('counting-key')}"]
models = ["shapes-*"]
plugins = ["object-detection", "zone-counter"]

[[tenant]]
name = "plain"
api_keys = ["{sha('plain-key')}"]
models = ["shapes-*"]
plugins = ["object-detection"]
""")
    server = start_server(["--tenants", str(tmp_path / "tenants.toml"), "--plugins-dir", str(d)])
    counting = {"Authorization": "Bearer counting-key"}
    plain = {"Authorization": "Bearer plain-key"}
    r = run(server.url, zone_definition(), headers=counting)
    assert r.status_code == 200 and r.json()["outputs"][0]["total"] > 0, r.text
    # For the other tenant the block does not exist: the same error as a block never installed.
    hidden = run(server.url, zone_definition(), headers=plain)
    missing = copy.deepcopy(zone_definition())
    missing["steps"][1]["type"] = "examples/never_installed@v1"
    unknown = run(server.url, missing, headers=plain)
    assert hidden.status_code == unknown.status_code == 400
    assert hidden.json()["error_type"] == unknown.json()["error_type"] == "WorkflowSyntaxError"
    assert hidden.json()["inner_error_message"].replace(ZONE_TYPE, "examples/never_installed@v1") == \
        unknown.json()["inner_error_message"]
    assert ZONE_TYPE not in hidden.json()["inner_error_message"].split("expected tags:")[1]
    describe = lambda h: {b["manifest_type_identifier"] for b in requests.get(
        f"{server.url}/workflows/blocks/describe", headers=h, timeout=HTTP_TIMEOUT).json()["blocks"]}
    assert ZONE_TYPE in describe(counting) and ZONE_TYPE not in describe(plain)
    r = requests.post(f"{server.url}/workflows/validate", json=zone_definition(), headers=plain, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
