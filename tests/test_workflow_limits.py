"""Workflow run limits (issue 13 item 5), per tenant and server-wide, with the real nudenet model:
a whole-run deadline (504), the images a run holds — inputs plus the crops, slices and pictures
its steps make — (413), and the size of the response (413). Every refusal is Roboflow's
`RuntimeLimitsCausedStepExecutionError` body naming the limit (and the step, when one is to blame).

Tenants: `quick` (workflow_timeout_ms = 1), `few` (workflow_max_images = 3), `terse`
(workflow_max_output_bytes = 4000), `loose` (workflow_max_images = 100000, above the server's
--workflow-max-images 20: a tenant only tightens)."""

from __future__ import annotations

import hashlib

import pytest
import requests

from helpers import HTTP_TIMEOUT
from test_workflows import IMAGES, definition, sahi_definition

TENANTS = {
    "quick": "workflow_timeout_ms = 1",
    "few": "workflow_max_images = 3",
    "terse": "workflow_max_output_bytes = 4000",
    "loose": "workflow_max_images = 100000",
    "plain": "",
}


def key(name):
    return f"{name}-secret"


def run(server, tenant, spec, images=("bus.jpg",), **extra):
    image = [{"type": "base64", "value": IMAGES[i]} for i in images]
    payload = {"api_key": key(tenant), "inputs": {"image": image[0] if len(image) == 1 else image},
               "specification": spec, **extra}
    return requests.post(server + "/workflows/run", json=payload, timeout=HTTP_TIMEOUT)


def refused(r, status, limit, step=None):
    assert r.status_code == status, r.text[:1000]
    e = r.json()
    assert e["error_type"] == "RuntimeLimitsCausedStepExecutionError", e
    assert limit in e["message"], e["message"]
    if step is not None:
        assert [b["block_id"] for b in e["blocks_errors"]] == [step], e["blocks_errors"]
    return e


@pytest.fixture(scope="module")
def server(start_server, tmp_path_factory):
    text = []
    for name, limits in TENANTS.items():
        digest = hashlib.sha256(key(name).encode()).hexdigest()
        text.append(f'[[tenant]]\nname = "{name}"\napi_keys = ["sha256:{digest}"]\nmodels = ["*"]\nplugins = ["*"]\n'
                    f'[tenant.limits]\n{limits}\n')
    path = tmp_path_factory.mktemp("wf-limits") / "tenants.toml"
    path.write_text("\n".join(text))
    return start_server(["--tenants", str(path), "--workflow-max-images", "20"]).url


def test_whole_run_deadline(server):
    r = run(server, "quick", definition("03_crop_nested"), images=("bus.jpg", "zidane.jpg"))
    refused(r, 504, "workflow_timeout_ms")
    # The same run without that limit finishes.
    assert run(server, "plain", definition("03_crop_nested"), images=("bus.jpg", "zidane.jpg")).status_code == 200


def test_images_inputs_and_crops(server):
    # Four input images: refused before any is decoded.
    e = refused(run(server, "few", definition("01_detect"), images=("bus.jpg",) * 4), 413, "workflow_max_images")
    assert "4 images in its inputs" in e["message"] and e["blocks_errors"] == []
    # One image and three crops of it (bus: 3 detections at 0.2): the crop step is over the limit,
    # so the second model never runs on the crops.
    e = refused(run(server, "few", definition("03_crop_nested")), 413, "limit of 3", step="crop")
    assert "4 images after step crop" in e["message"]
    # Under the limit: zidane has fewer detections.
    r = run(server, "few", definition("01_detect"), images=("zidane.jpg",))
    assert r.status_code == 200, r.text


def test_images_server_limit_is_not_loosened_by_a_tenant(server):
    # SAHI on bus: 1 input + 12 slices + 1 picture = 14 images, under the server's 20.
    assert run(server, "loose", sahi_definition()).status_code == 200
    # Two images: 2 + 24 slices: over the server's 20, whatever the tenant's own limit says.
    refused(run(server, "loose", sahi_definition(), images=("bus.jpg", "bus.jpg")), 413, "limit of 20", step="slicer")


def test_response_size(server):
    spec = definition("04_visualize")
    refused(run(server, "terse", spec), 413, "workflow_max_output_bytes")
    # Without the pictures it fits.
    r = run(server, "terse", spec, excluded_fields=["visualization", "input_echo"])
    assert r.status_code == 200, r.text
    assert len(r.content) <= 4000 and set(r.json()["outputs"][0]) == {"predictions"}


def test_server_wide_limits_apply_on_an_open_server(start_server):
    h = start_server(["--workflow-max-images", "3", "--workflow-max-output-bytes", "3000"])
    spec = definition("01_detect")
    r = requests.post(h.url + "/workflows/run", timeout=HTTP_TIMEOUT, json={
        "inputs": {"image": [IMAGES["bus.jpg"]] * 4}, "specification": spec})
    refused(r, 413, "limit of 3")
    # 04_visualize holds 3 images (the input and two pictures): within 3, but its answer is not.
    r = requests.post(h.url + "/workflows/run", timeout=HTTP_TIMEOUT, json={
        "inputs": {"image": IMAGES["bus.jpg"]}, "specification": definition("04_visualize")})
    refused(r, 413, "limit of 3000 bytes")
    h.stop()
