"""Model directories in Roboflow's layout (environment.json, class_names.txt) and image file
formats beyond JPEG/PNG."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image

from helpers import FIXTURES, b64, img_b64, infer_ok, same_predictions

IMAGE = FIXTURES / "images" / "dev" / "07_multi_640x640.png"


@pytest.fixture(scope="module")
def roboflow_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rf-models")
    weights = FIXTURES / "models" / "shapes-detect.onnx"
    for name in ("renamed", "stretched", "listed"):
        (root / name / "1").mkdir(parents=True)
        shutil.copyfile(weights, root / name / "1" / "weights.onnx")
    # CLASS_MAP overrides the ONNX metadata's names.
    (root / "renamed" / "1" / "environment.json").write_text(json.dumps(
        {"CLASS_MAP": {"0": "ball", "1": "box", "2": "wedge"}}))
    # PREPROCESSING as a JSON-encoded string, as Roboflow stores it.
    (root / "stretched" / "1" / "environment.json").write_text(json.dumps({
        "PREPROCESSING": json.dumps({"resize": {"enabled": True, "width": 320, "height": 320,
                                                "format": "Stretch to"}})}))
    (root / "listed" / "1" / "class_names.txt").write_text("c0\nc1\nc2\n")
    return root


@pytest.fixture(scope="module")
def rf_server(start_server, roboflow_models):
    return start_server(models=roboflow_models).url


def test_class_names_come_from_roboflow_files(rf_server, server):
    image = img_b64(IMAGE.read_bytes())
    base = infer_ok(server, "shapes-detect/1", image, confidence=0.25)
    renamed = infer_ok(rf_server, "renamed/1", image, confidence=0.25)
    listed = infer_ok(rf_server, "listed/1", image, confidence=0.25)
    mapping = {"circle": "ball", "square": "box", "triangle": "wedge"}
    assert base["predictions"], "the fixture image must have detections"
    assert [mapping[p["class"]] for p in base["predictions"]] == [p["class"] for p in renamed["predictions"]]
    assert [f"c{p['class_id']}" for p in base["predictions"]] == [p["class"] for p in listed["predictions"]]


def test_stretch_resize_changes_the_geometry(rf_server, server):
    # 640x640 → 320x320 is the same with either resize; a 2:1 image is not.
    wide = Image.open(FIXTURES / "images" / "dev" / "03_multi_1280x720.jpg").convert("RGB")
    buf = io.BytesIO()
    wide.save(buf, format="PNG")
    image = img_b64(buf.getvalue())
    letterboxed = infer_ok(server, "shapes-detect/1", image, confidence=0.25)
    stretched = infer_ok(rf_server, "stretched/1", image, confidence=0.25)
    assert stretched["image"] == {"width": 1280, "height": 720}
    assert stretched["predictions"]
    assert same_predictions(letterboxed["predictions"], stretched["predictions"], 1280, 720), "stretch had no effect"


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "GIF", "TIFF"])
def test_other_image_formats(server, fmt):
    rgb = Image.open(IMAGE).convert("RGB")
    reference = io.BytesIO()
    rgb.save(reference, format="PNG")
    encoded = io.BytesIO()
    if fmt == "GIF":
        # GIF is palette-based: compare against the same palette image as PNG.
        rgb = rgb.quantize(colors=256).convert("RGB")
        reference = io.BytesIO()
        rgb.save(reference, format="PNG")
    rgb.save(encoded, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    want = infer_ok(server, "shapes-detect/1", img_b64(reference.getvalue()), confidence=0.25)
    got = infer_ok(server, "shapes-detect/1", img_b64(encoded.getvalue()), confidence=0.25)
    assert got["image"] == want["image"] == {"width": 640, "height": 640}
    diffs = same_predictions(want["predictions"], got["predictions"], 640, 640)
    assert not diffs, f"{fmt}: {diffs}"
