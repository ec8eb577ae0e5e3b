"""Roboflow Workflows against the server: each fixture workflow's response compared with
Roboflow 1.8.3's own (tests/fixtures/workflows, recorded on nudenet-320n with bus.jpg and
zidane.jpg), each invalid definition's status and error type, the other workflow routes, and
the official client's run_workflow (a definition and a stored workflow, one image and a batch).

Comparison (`compare`): same output names in the same order and nesting; detections matched
by class with box IoU >= 0.95 and |dconfidence| <= 0.01, image sizes equal, parent_ids equal
(UUIDs: both UUIDs), crop origins within 1 px; pictures decode to the right size; scalars equal."""

import base64
import copy
import io
import json
import re

import pytest
import requests
from PIL import Image

from helpers import HTTP_TIMEOUT, PHOTOS, SUMMARY_LINES, iou, pred_xyxy

FIX = __import__("pathlib").Path(__file__).resolve().parent / "fixtures" / "workflows"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
IMAGES = {name: base64.b64encode((PHOTOS / name).read_bytes()).decode() for name in ("bus.jpg", "zidane.jpg")}
STATS = {}


def definition(name):
    return json.loads((FIX / f"{name}.json").read_text())


def golden(name):
    return json.loads((FIX / f"roboflow_{name}.json").read_text())


def fill(value):
    """The recorded request with the image files put back."""
    if isinstance(value, dict):
        if set(value) == {"file"}:
            return IMAGES[value["file"]]
        return {k: fill(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v) for v in value]
    return value


def request_of(case, spec):
    body = fill(copy.deepcopy(case["http_request"]["body"]))
    if "specification" in body:
        body["specification"] = spec
    path = "/" + case["http_request"]["url"].split("/", 3)[3]
    return path, body


@pytest.fixture(scope="module")
def wf_server(start_server, roboflow_stub, tmp_path_factory):
    store = tmp_path_factory.mktemp("workflows")
    (store / "ws").mkdir()
    (store / "ws" / "detect.json").write_text(json.dumps(definition("01_detect")))
    (store / "ws" / "crops.json").write_text(json.dumps({"specification": definition("03_crop_nested")}))
    h = start_server(["--workflows-dir", str(store), "--roboflow-api-url", roboflow_stub.url,
                      "--cache-dir", str(tmp_path_factory.mktemp("cache"))])
    return h.url


def post(base, path, body):
    return requests.post(base + path, json=body, timeout=HTTP_TIMEOUT)


def is_detections(v):
    return isinstance(v, dict) and set(v) == {"image", "predictions"}


def same_id(ours, theirs, where):
    if isinstance(theirs, str) and UUID.match(theirs):
        assert isinstance(ours, str) and UUID.match(ours), f"{where}: expected a UUID, got {ours!r}"
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def close_origin(ours, theirs, where):
    assert set(ours) == set(theirs), where
    for k in theirs:
        assert abs(ours[k] - theirs[k]) <= 1, f"{where}.{k}: {ours[k]} vs {theirs[k]}"


def compare_detections(ours, theirs, where, stats):
    assert is_detections(ours), f"{where}: expected detections, got {str(ours)[:300]}"
    assert ours["image"] == theirs["image"], f"{where}: image {ours['image']} vs {theirs['image']}"
    cands = []
    for i, t in enumerate(theirs["predictions"]):
        for j, o in enumerate(ours["predictions"]):
            if o["class"] == t["class"] and abs(o["confidence"] - t["confidence"]) <= 0.01:
                v = iou(pred_xyxy(o), pred_xyxy(t))
                if v >= 0.95:
                    cands.append((v, i, j))
    cands.sort(reverse=True)
    used_t, used_o = set(), set()
    for v, i, j in cands:
        if i in used_t or j in used_o:
            continue
        used_t.add(i)
        used_o.add(j)
        t, o = theirs["predictions"][i], ours["predictions"][j]
        assert list(o) == list(t), f"{where}: prediction keys {list(o)} vs {list(t)}"
        same_id(o["parent_id"], t["parent_id"], f"{where}.parent_id")
        if "parent_origin" in t:
            close_origin(o["parent_origin"], t["parent_origin"], f"{where}.parent_origin")
            close_origin(o["root_parent_origin"], t["root_parent_origin"], f"{where}.root_parent_origin")
            same_id(o["root_parent_id"], t["root_parent_id"], f"{where}.root_parent_id")
    stats["theirs"] += len(theirs["predictions"])
    stats["ours"] += len(ours["predictions"])
    stats["matched"] += len(used_t)
    missing = [theirs["predictions"][i] for i in range(len(theirs["predictions"])) if i not in used_t]
    extra = [ours["predictions"][j] for j in range(len(ours["predictions"])) if j not in used_o]
    assert not missing and not extra, f"{where}: unmatched Roboflow {missing}, ours {extra}"


def compare_image(ours, theirs, where):
    assert isinstance(ours, dict) and ours.get("type") == "base64", f"{where}: not an image: {str(ours)[:200]}"
    assert list(ours) == list(theirs), f"{where}: keys {list(ours)} vs {list(theirs)}"
    value = fill(theirs["value"])
    if isinstance(value, str):  # an input echoed
        assert ours["value"] == value, f"{where}: the input is not echoed as it came"
    else:
        im = Image.open(io.BytesIO(base64.b64decode(ours["value"])))
        assert im.size == (value["width"], value["height"]), f"{where}: picture {im.size} vs {value}"
    assert list(ours["video_metadata"]) == list(theirs["video_metadata"]), where
    same_id(ours["video_metadata"]["video_identifier"], theirs["video_metadata"]["video_identifier"], where)
    for k in ("parent_origin", "root_parent_origin"):
        if k in theirs:
            close_origin(ours[k], theirs[k], f"{where}.{k}")
    for k in ("parent_id", "root_parent_id"):
        if k in theirs:
            same_id(ours[k], theirs[k], f"{where}.{k}")


def compare(ours, theirs, where, stats):
    if is_detections(theirs):
        compare_detections(ours, theirs, where, stats)
    elif isinstance(theirs, dict) and theirs.get("type") == "base64":
        compare_image(ours, theirs, where)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), \
            f"{where}: keys {list(ours) if isinstance(ours, dict) else ours!r} vs {list(theirs)}"
        for k in theirs:
            compare(ours[k], theirs[k], f"{where}.{k}", stats)
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), \
            f"{where}: {len(ours) if isinstance(ours, list) else ours!r} items vs {len(theirs)}"
        for i, (o, t) in enumerate(zip(ours, theirs)):
            compare(o, t, f"{where}[{i}]", stats)
    elif isinstance(theirs, float):
        assert isinstance(ours, (int, float)) and abs(ours - theirs) <= 1e-6, f"{where}: {ours!r} vs {theirs!r}"
    else:
        same_id(ours, theirs, where)


GOLDEN_CASES = [(name, c["label"]) for name in ("01_detect", "02_filter_count", "03_crop_nested", "04_visualize")
                for c in golden(name)["cases"] if c["http_response"]["status"] == 200]


@pytest.mark.parametrize("name,label", GOLDEN_CASES)
def test_fixture_workflow_matches_roboflow(wf_server, name, label):
    g = golden(name)
    case = next(c for c in g["cases"] if c["label"] == label)
    path, body = request_of(case, definition(name))
    r = post(wf_server, path, body)
    assert r.status_code == 200, r.text[:2000]
    stats = STATS.setdefault(name, {"theirs": 0, "ours": 0, "matched": 0, "cases": 0})
    compare(r.json(), case["http_response"]["body"], f"{name}/{label}", stats)
    stats["cases"] += 1


def test_fixture_match_figures():
    """Reports the per-fixture figures (runs after the comparisons above)."""
    for name, s in sorted(STATS.items()):
        SUMMARY_LINES.append(f"workflows {name}: {s['cases']} cases, {s['matched']}/{s['theirs']} Roboflow "
                             f"detections matched (ours {s['ours']})")


ERROR_CASES = [c["label"] for c in golden("06_invalid")["cases"] if c["http_response"]["status"] != 200]


@pytest.mark.parametrize("label", ERROR_CASES)
def test_invalid_definitions_get_roboflows_errors(wf_server, label):
    g = golden("06_invalid")
    case = next(c for c in g["cases"] if c["label"] == label)
    # The input probes ran on 01_detect's definition (the fixture's own fails to compile).
    spec = case.get("definition_override") or (g["definition"] if label in ("bus", "zidane") else definition("01_detect"))
    path, body = request_of(case, spec)
    if "specification" not in body:
        body["specification"] = spec
    if label.startswith("body_without_inputs"):
        body.pop("inputs", None)
    r = post(wf_server, path, body)
    want = case["http_response"]
    assert r.status_code == want["status"], r.text[:1500]
    ours, theirs = r.json(), want["body"]
    if "detail" in theirs:  # FastAPI's 422 (ours also carries a `message`)
        assert ours["detail"][0]["loc"] == theirs["detail"][0]["loc"]
        return
    assert list(ours) == list(theirs), f"keys {list(ours)} vs {list(theirs)}"
    assert ours["error_type"] == theirs["error_type"], ours
    assert ours["context"] == theirs["context"], ours
    if theirs["error_type"] in ("InvalidReferenceTargetError",):
        assert ours == theirs
    if theirs.get("blocks_errors"):
        assert [(b["block_id"], b["property_name"]) for b in ours["blocks_errors"]] == \
            [(b["block_id"], b["property_name"]) for b in theirs["blocks_errors"]]


def base_request(spec, image="zidane.jpg", **extra):
    return {"api_key": "k", "inputs": {"image": {"type": "base64", "value": IMAGES[image]}, **extra},
            "specification": spec}


def test_more_definition_errors(wf_server):
    probes = golden("input_probes")
    spec = definition("01_detect")
    no_version = {k: v for k, v in spec.items() if k != "version"}
    r = post(wf_server, "/workflows/run", base_request(no_version))
    assert r.status_code == 400 and r.json() == probes["definition_without_version"]["body"] | {
        "inner_error_message": r.json()["inner_error_message"]}
    assert "version\n  Field required" in r.json()["inner_error_message"]
    dup = copy.deepcopy(spec)
    dup["steps"].append(dup["steps"][0])
    r = post(wf_server, "/workflows/run", base_request(dup))
    assert r.status_code == 400 and r.json() == probes["duplicated_step_name"]["body"]
    cyc = copy.deepcopy(definition("02_filter_count"))
    cyc["steps"][1]["predictions"] = "$steps.faces.predictions"
    r = post(wf_server, "/workflows/run", base_request(cyc))
    assert r.status_code == 400 and r.json()["error_type"] == "ExecutionGraphStructureError", r.text
    mismatch = copy.deepcopy(spec)
    mismatch["steps"][0]["images"] = "$steps.det.predictions"
    r = post(wf_server, "/workflows/run", base_request(mismatch))
    assert r.status_code == 400 and r.json()["error_type"] in ("ReferenceTypeError", "ExecutionGraphStructureError"), r.text


def test_custom_python_blocks_are_refused_for_webassembly(wf_server):
    case = golden("07_dynamic_block")["cases"][0]
    path, body = request_of(case, definition("07_dynamic_block"))
    r = post(wf_server, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["error_type"] == "DynamicBlockError"
    assert "WebAssembly" in r.json()["message"] and "Python" in r.json()["message"]


def gated_definition():
    """A parameter with a default and an override, and continue_if (the probes' definition)."""
    return {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"},
                   {"type": "WorkflowParameter", "name": "confidence", "default_value": 0.5}],
        "steps": [
            {"type": "ObjectDetectionModel", "name": "det", "images": "$inputs.image", "model_id": "nudenet/1",
             "confidence": "$inputs.confidence"},
            {"type": "PropertyDefinition", "name": "count", "data": "$steps.det.predictions",
             "operations": [{"type": "SequenceLength"}]},
            {"type": "roboflow_core/continue_if@v1", "name": "gate", "next_steps": ["$steps.classes"],
             "condition_statement": {"type": "StatementGroup", "statements": [
                 {"type": "BinaryStatement", "left_operand": {"type": "DynamicOperand", "operand_name": "n"},
                  "comparator": {"type": "(Number) >="}, "right_operand": {"type": "StaticOperand", "value": 3}}]},
             "evaluation_parameters": {"n": "$steps.count.output"}},
            {"type": "roboflow_core/property_definition@v1", "name": "classes", "data": "$steps.det.predictions",
             "operations": [{"type": "DetectionsPropertyExtract", "property_name": "class_name"}]},
        ],
        "outputs": [
            {"type": "JsonField", "name": "confidence_used", "selector": "$inputs.confidence"},
            {"type": "JsonField", "name": "predictions", "selector": "$steps.det.predictions"},
            {"type": "JsonField", "name": "count", "selector": "$steps.count.output"},
            {"type": "JsonField", "name": "classes_if_at_least_3", "selector": "$steps.classes.output"},
        ],
    }


def test_parameters_defaults_overrides_and_continue_if(wf_server):
    probes = golden("input_probes")
    routes = golden("other_routes")
    spec = gated_definition()
    # The default (0.5) on the legacy route with excluded_fields: Roboflow's recorded answer.
    body = base_request(spec)
    body["excluded_fields"] = ["predictions"]
    r = post(wf_server, "/infer/workflows", body)
    assert r.status_code == 200, r.text
    assert r.json() == routes["legacy_infer_workflows_route"]["http_response"]["body"]
    # A string override is taken and echoed as it came.
    r = post(wf_server, "/workflows/run", base_request(spec, confidence="0.2"))
    assert r.status_code == 200, r.text
    stats = {"theirs": 0, "ours": 0, "matched": 0}
    compare(r.json(), probes["parameter_override_string (confidence='0.2')"]["body"], "override", stats)
    # An override out of range: Roboflow's RuntimeInputError.
    r = post(wf_server, "/workflows/run", base_request(spec, confidence=1.5))
    want = probes["parameter_override_out_of_range (confidence=1.5)"]["body"]
    assert r.status_code == 400 and (r.json()["error_type"], r.json()["message"]) == (want["error_type"], want["message"])
    # The gate open: at least 3 detections on bus at 0.2.
    r = post(wf_server, "/workflows/run", base_request(spec, image="bus.jpg", confidence=0.2))
    out = r.json()["outputs"][0]
    assert out["count"] == 3 and sorted(out["classes_if_at_least_3"]) == ["FACE_FEMALE", "FEET_COVERED", "FEET_COVERED"]


def test_image_input_forms(wf_server):
    probes = golden("input_probes")
    spec = definition("01_detect")
    for form in (IMAGES["zidane.jpg"], {"type": "numpy", "value": IMAGES["zidane.jpg"]},
                 {"type": "base64", "value": "data:image/jpeg;base64," + IMAGES["zidane.jpg"]}):
        r = post(wf_server, "/workflows/run", {"inputs": {"image": form, "unknown": 1}, "specification": spec})
        assert r.status_code == 200, r.text
        compare(r.json()["outputs"][0]["predictions"], probes["no_api_key"]["body"]["outputs"][0]["predictions"],
                "form", {"theirs": 0, "ours": 0, "matched": 0})
    r = post(wf_server, "/workflows/run", {"inputs": {"image": {"type": "file", "value": "/etc/passwd"}},
                                           "specification": spec})
    assert r.status_code == 400 and r.json()["error_type"] == "RuntimeInputError"


def test_other_routes(wf_server):
    routes = golden("other_routes")
    for key in ("validate_ok", "validate_invalid"):
        case = routes[key]
        r = post(wf_server, "/workflows/validate", case["http_request"]["body"])
        assert (r.status_code, r.json()) == (case["http_response"]["status"], case["http_response"]["body"]), r.text
    for key, name in (("describe_interface_02", "02_filter_count"), ("describe_interface_03", "03_crop_nested")):
        r = post(wf_server, "/workflows/describe_interface", {"api_key": "k", "specification": definition(name)})
        want = routes[key]["http_response"]["body"]
        assert r.status_code == 200 and r.json()["inputs"] == want["inputs"] and r.json()["outputs"] == want["outputs"]
    r = requests.get(wf_server + "/workflows/execution_engine/versions", timeout=HTTP_TIMEOUT)
    assert r.json() == routes["ee_versions"]["body"]
    r = requests.get(wf_server + "/workflows/blocks/describe", timeout=HTTP_TIMEOUT)
    ids = {b["manifest_type_identifier"] for b in r.json()["blocks"]}
    aliases = {a for b in r.json()["blocks"] for a in b["manifest_type_identifier_aliases"]}
    for needed in ("roboflow_core/roboflow_object_detection_model@v1", "roboflow_core/roboflow_object_detection_model@v2",
                   "roboflow_core/roboflow_instance_segmentation_model@v2", "roboflow_core/roboflow_keypoint_detection_model@v2",
                   "roboflow_core/roboflow_classification_model@v2", "roboflow_core/dynamic_crop@v1",
                   "roboflow_core/detections_filter@v1", "roboflow_core/detections_transformation@v1",
                   "roboflow_core/property_definition@v1", "roboflow_core/expression@v1", "roboflow_core/continue_if@v1",
                   "roboflow_core/detections_consensus@v1", "roboflow_core/bounding_box_visualization@v1",
                   "roboflow_core/label_visualization@v1", "roboflow_core/polygon_visualization@v1",
                   "roboflow_core/image_slicer@v2", "roboflow_core/detections_stitch@v1"):
        assert needed in ids, needed
    assert {"ObjectDetectionModel", "DynamicCrop", "Crop", "DetectionsFilter"} <= aliases
    r = requests.post(wf_server + "/workflows/blocks/describe", json={"dynamic_blocks_definitions": [{"x": 1}]},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and r.json()["error_type"] == "DynamicBlockError"
    doc = requests.get(wf_server + "/openapi.json", timeout=HTTP_TIMEOUT).json()
    for p in ("/workflows/run", "/{workspace}/workflows/{workflow_id}", "/workflows/validate",
              "/workflows/describe_interface", "/workflows/blocks/describe"):
        assert p in doc["paths"], p


def test_stored_workflows(wf_server, server):
    body = {"api_key": "k", "inputs": {"image": {"type": "base64", "value": IMAGES["bus.jpg"]}}}
    want = golden("03_crop_nested")["cases"][0]["http_response"]["body"]
    for path in ("/ws/workflows/crops", "/infer/workflows/ws/crops"):
        r = post(wf_server, path, body)
        assert r.status_code == 200, r.text
        compare(r.json(), want, path, {"theirs": 0, "ours": 0, "matched": 0})
    # Not in the directory: asked of Roboflow's API with the key (here a double that has none).
    r = post(wf_server, "/ws/workflows/missing", body)
    assert r.status_code == 404 and "not found" in r.json()["message"]
    r = post(server, "/someworkspace/workflows/some-workflow", body)
    assert r.status_code == 404 and "Roboflow resource not found" in r.json()["message"]
    # Without a key there is nothing to ask Roboflow with (tests/test_workflows_roboflow.py has the rest).
    r = post(server, "/someworkspace/workflows/some-workflow", {"inputs": body["inputs"]})
    assert r.status_code == 404 and "api_key" in r.json()["message"]


def sahi_definition():
    return {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {"type": "roboflow_core/image_slicer@v2", "name": "slicer", "image": "$inputs.image",
             "slice_width": 320, "slice_height": 320},
            {"type": "roboflow_core/roboflow_object_detection_model@v1", "name": "det", "images": "$steps.slicer.slices",
             "model_id": "nudenet/1", "confidence": 0.2},
            {"type": "roboflow_core/detections_stitch@v1", "name": "stitch", "reference_image": "$inputs.image",
             "predictions": "$steps.det.predictions"},
            {"type": "roboflow_core/detections_transformation@v1", "name": "sorted", "predictions": "$steps.stitch.predictions",
             "operations": [{"type": "SortDetections", "mode": "confidence", "ascending": False}]},
            {"type": "roboflow_core/detections_consensus@v1", "name": "vote", "required_votes": 2,
             "predictions_batches": ["$steps.stitch.predictions", "$steps.sorted.predictions"]},
            {"type": "roboflow_core/bounding_box_visualization@v1", "name": "boxes", "image": "$inputs.image",
             "predictions": "$steps.vote.predictions"},
        ],
        "outputs": [
            {"type": "JsonField", "name": "slices", "selector": "$steps.slicer.slices"},
            {"type": "JsonField", "name": "stitched", "selector": "$steps.sorted.predictions"},
            {"type": "JsonField", "name": "vote", "selector": "$steps.vote.*"},
            {"type": "JsonField", "name": "picture", "selector": "$steps.boxes.image"},
        ],
    }


def test_sahi_transformation_consensus(wf_server):
    r = post(wf_server, "/workflows/run", base_request(sahi_definition(), image="bus.jpg"))
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert len(out["slices"]) == 12  # 810x1080 in 320-px slices with 20% overlap: 3 x 4
    assert all(s["root_parent_id"] == "image" for s in out["slices"])
    stitched = out["stitched"]
    confs = [p["confidence"] for p in stitched["predictions"]]
    assert confs == sorted(confs, reverse=True)
    for p in stitched["predictions"]:
        assert p["parent_id"] == "image" and 0 <= p["x"] <= 810 and 0 <= p["y"] <= 1080
    assert len(out["vote"]["predictions"]["predictions"]) == len(confs)
    assert out["vote"]["object_present"] is bool(confs)
    im = Image.open(io.BytesIO(base64.b64decode(out["picture"]["value"])))
    assert im.size == (810, 1080)


@pytest.mark.parametrize("block,model,route", [
    ("RoboflowInstanceSegmentationModel", "shapes-seg/1", "/infer/instance_segmentation"),
    ("roboflow_core/roboflow_keypoint_detection_model@v2", "shapes-pose/1", "/infer/keypoints_detection"),
    ("roboflow_core/roboflow_classification_model@v2", "shapes-cls/1", "/infer/classification"),
])
def test_other_model_blocks_match_infer(wf_server, block, model, route):
    image = (PHOTOS.parent / "dev" / "02_multi_640x480.jpg").read_bytes()
    b64 = base64.b64encode(image).decode()
    spec = {"version": "1.0", "inputs": [{"type": "WorkflowImage", "name": "image"}],
            "steps": [{"type": block, "name": "m", "images": "$inputs.image", "model_id": model, "confidence": 0.3}],
            "outputs": [{"type": "JsonField", "name": "p", "selector": "$steps.m.predictions"}]}
    if "segmentation" in route:
        spec["steps"].append({"type": "roboflow_core/polygon_visualization@v1", "name": "viz", "image": "$inputs.image",
                              "predictions": "$steps.m.predictions"})
        spec["outputs"].append({"type": "JsonField", "name": "viz", "selector": "$steps.viz.image"})
    r = post(wf_server, "/workflows/run", {"inputs": {"image": b64}, "specification": spec})
    assert r.status_code == 200, r.text
    ours = r.json()["outputs"][0]["p"]
    ref = requests.post(wf_server + route, json={"model_id": model, "image": {"type": "base64", "value": b64},
                                                 "confidence": 0.3}, timeout=HTTP_TIMEOUT).json()
    if "classification" in route:
        assert ours["top"] == ref["top"] and ours["prediction_type"] == "classification"
        assert ours["parent_id"] == "image"
        return
    assert ours["image"] == ref["image"]
    got = sorted((p["class"], round(p["confidence"], 4)) for p in ours["predictions"])
    assert got == sorted((p["class"], round(p["confidence"], 4)) for p in ref["predictions"])
    if "keypoints" in route:
        assert all("keypoints" in p for p in ours["predictions"])
    if "segmentation" in route:
        assert all(p["points"] for p in ours["predictions"])
        im = Image.open(io.BytesIO(base64.b64decode(r.json()["outputs"][0]["viz"]["value"])))
        assert im.size == (640, 480)


def test_official_client_run_workflow(wf_server):
    from inference_sdk import InferenceHTTPClient

    client = InferenceHTTPClient(api_url=wf_server, api_key="k")
    spec = definition("01_detect")
    recorded = {c["label"]: c["sdk_return"] for c in golden("01_detect")["cases"] if c.get("sdk_return")}
    stats = {"theirs": 0, "ours": 0, "matched": 0}
    one = client.run_workflow(specification=spec, images={"image": str(PHOTOS / "bus.jpg")})
    compare(one, recorded["bus"], "sdk/one", stats)
    batch = client.run_workflow(specification=spec,
                                images={"image": [str(PHOTOS / "bus.jpg"), str(PHOTOS / "zidane.jpg")]})
    assert len(batch) == 2
    compare(batch, recorded["batch_bus_zidane"], "sdk/batch", stats)
    assert batch[0]["predictions"]["predictions"][0]["parent_id"] == "image.[0]"
    stored = client.run_workflow(workspace_name="ws", workflow_id="detect", images={"image": str(PHOTOS / "zidane.jpg")})
    compare(stored, recorded["zidane"], "sdk/stored", stats)
    stored_batch = client.run_workflow(workspace_name="ws", workflow_id="detect",
                                       images={"image": [str(PHOTOS / "zidane.jpg")] * 2})
    assert len(stored_batch) == 2
    only_male = client.run_workflow(specification=definition("02_filter_count"),
                                    images={"image": str(PHOTOS / "zidane.jpg")}, parameters={"classes": ["FACE_FEMALE"]})
    assert only_male[0]["face_count"] == 0 and only_male[0]["verdict"] == "no_faces"
