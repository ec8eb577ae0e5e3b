"""Plugins built against the WIT's 0.1.0 (images as records, their pixels copied into the plugin)
still run beside 0.2.0 ones (images as host handles, pre-processed by the host's imaging): the
0.1.0 object-detection plugin and zone-counter block (tests/fixtures/plugins/wit-0.1.0, built at an
earlier commit) answer exactly as today's builds of the same code do, on several images at once."""

from __future__ import annotations

import pytest
import requests

from helpers import DEV_IMAGES, FIXTURES, HTTP_TIMEOUT, REPO, SHAPES, img_b64, infer, install_plugin

RELEASE = REPO / "target" / "release"
V010 = FIXTURES / "plugins" / "wit-0.1.0"
IMAGES = [img_b64(p.read_bytes()) for p in sorted(DEV_IMAGES.glob("*.jpg"))[:4]]
PHOTO = img_b64((FIXTURES / "images" / "photos" / "bus.jpg").read_bytes())


def server_with(start_server, root, source):
    d = root / "plugins"
    d.mkdir()
    install_plugin(source, "object-detection", d)
    install_plugin(source if source == V010 else RELEASE / "example-plugins", "zone-counter", d)
    return start_server(["--plugins-dir", str(d)])


@pytest.fixture(scope="module")
def servers(start_server, tmp_path_factory):
    old = server_with(start_server, tmp_path_factory.mktemp("wit-0.1.0"), V010)
    new = server_with(start_server, tmp_path_factory.mktemp("wit-0.2.0"), RELEASE / "plugins")
    return old, new


def predictions(url, image, **params):
    r = infer(url, SHAPES, image, confidence=0.2, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    # Everything but the detections' ids, which are fresh UUIDs per answer.
    strip = lambda ps: [{k: v for k, v in p.items() if k != "detection_id"} for p in ps]
    return [strip(b["predictions"]) for b in body] if isinstance(body, list) else strip(body["predictions"])


def test_a_0_1_0_task_plugin_answers_as_the_current_one(servers):
    old, new = servers
    for image in [*IMAGES, PHOTO]:
        want = predictions(new.url, image)
        assert predictions(old.url, image) == want
    # A list request: several images in one call, each answered in order.
    batch = predictions(old.url, IMAGES)
    assert len(batch) == len(IMAGES) and batch == predictions(new.url, IMAGES)
    assert any(batch), "the fixtures must have detections"
    # Parameters still reach it (class filter, max detections).
    first_class = next(p for ps in batch for p in ps)["class"]
    filtered = predictions(old.url, IMAGES[0], class_filter=[first_class], max_detections=1)
    assert filtered == predictions(new.url, IMAGES[0], class_filter=[first_class], max_detections=1)


def test_a_0_1_0_workflow_block_runs_as_the_current_one(servers):
    spec = {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {"type": "ObjectDetectionModel", "name": "det", "images": "$inputs.image", "model_id": SHAPES},
            {"type": "examples/zone_counter@v1", "name": "zone", "predictions": "$steps.det.predictions",
             "zone": [0, 0, 160, 320]},
        ],
        "outputs": [
            {"type": "JsonField", "name": "counts", "selector": "$steps.zone.counts"},
            {"type": "JsonField", "name": "total", "selector": "$steps.zone.total"},
        ],
    }
    answers = []
    for server in servers:
        r = requests.post(f"{server.url}/workflows/run", json={"specification": spec, "inputs": {"image": IMAGES}},
                          timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        answers.append(r.json()["outputs"])
    assert answers[0] == answers[1] and len(answers[0]) == len(IMAGES)
    assert sum(o["total"] for o in answers[0]) > 0


def test_plugins_say_which_wit_they_were_built_against(servers):
    for server, version in zip(servers, ["0.1.0", "0.2.0"]):
        r = requests.get(f"{server.url}/plugins", timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        listed = {p["name"]: p["wit"] for p in r.json()["plugins"]}
        assert listed["object-detection"] == version
        # The example block is built with today's WIT on the new server, taken from 0.1.0 on the old.
        assert listed["zone-counter"] == version
