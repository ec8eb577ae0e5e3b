"""`inference infer <path|url|folder> --model <id>`: a client of a running server. JSON on
stdout (one object for an image, JSON lines for a folder), annotated pictures with --out,
progress on stderr for folders, clear errors and a non-zero exit when things go wrong."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import numpy as np
from PIL import Image

from conftest import _free_port
from helpers import CLS, DEV_IMAGES, POSE, SEG, SHAPES, check_cls_response, check_kp_response, check_od_response

IMG = DEV_IMAGES / "02_multi_640x480.jpg"


def infer(bin_path, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("INFERENCE_API_URL", "ROBOFLOW_API_KEY")}
    return subprocess.run([str(bin_path), "infer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_one_image_prints_its_json(inference_bin, server):
    r = infer(inference_bin, IMG, "--model", SHAPES, "--api-url", server, "--confidence", 0.5)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    check_od_response(data)
    assert data["predictions"] and all(p["confidence"] >= 0.5 for p in data["predictions"])
    assert data["image"] == {"width": 640, "height": 480}
    assert "visualization" not in data


def test_the_task_follows_the_model(inference_bin, server):
    """The legacy route answers with each model's own task."""
    for model, check in ((CLS, check_cls_response), (POSE, check_kp_response)):
        r = infer(inference_bin, DEV_IMAGES / "16_pose_640x480.jpg", "--model", model, "--api-url", server)
        assert r.returncode == 0, r.stderr
        check(json.loads(r.stdout))
    r = infer(inference_bin, IMG, "--model", SEG, "--api-url", server)
    assert r.returncode == 0 and all("points" in p for p in json.loads(r.stdout)["predictions"]), r.stderr


def test_out_writes_the_annotated_picture(inference_bin, server, tmp_path):
    out = tmp_path / "annotated.jpg"
    r = infer(inference_bin, IMG, "--model", SHAPES, "--api-url", server, "--out", out, "--labels", "--stroke", 3)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["predictions"] and "visualization" not in data, "the picture goes to the file, not stdout"
    picture = Image.open(out)
    assert picture.format == "JPEG" and picture.size == (640, 480)
    original = np.asarray(Image.open(IMG).convert("RGB")).astype(int)
    assert np.abs(np.asarray(picture.convert("RGB")).astype(int) - original).max() > 100, "nothing was drawn"


def test_folder_json_lines_progress_and_pictures(inference_bin, server, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    names = ["02_multi_640x480.jpg", "13_multi_300x200.png", "21_single_500x375.jpg"]
    for name in names:
        shutil.copyfile(DEV_IMAGES / name, folder / name)
    (folder / "notes.txt").write_text("not an image, and not named like one: skipped")
    out = tmp_path / "pictures"
    r = infer(inference_bin, folder, "--model", SHAPES, "--api-url", server, "--out", out)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [os.path.basename(line["file"]) for line in lines] == sorted(names)
    for line in lines:
        check_od_response(line["response"])
    progress = [line for line in r.stderr.splitlines() if line.startswith("[")]
    assert [p.split("]")[0] for p in progress] == ["[1/3", "[2/3", "[3/3"], r.stderr
    assert all("images/s" in p for p in progress)
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"02_multi_640x480.jpg": (640, 480), "13_multi_300x200.png.jpg": (300, 200),
                     "21_single_500x375.jpg": (500, 375)}


def test_url_input(inference_bin, server, image_server):
    r = infer(inference_bin, f"{image_server}/dev/{IMG.name}", "--model", SHAPES, "--api-url", server)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["image"] == {"width": 640, "height": 480}


def test_server_unreachable(inference_bin):
    url = f"http://127.0.0.1:{_free_port()}"
    r = infer(inference_bin, IMG, "--model", SHAPES, "--api-url", url)
    assert r.returncode != 0 and r.stdout == ""
    assert "cannot reach the inference server" in r.stderr and url in r.stderr, r.stderr
    assert "panicked" not in r.stderr


def test_unknown_model(inference_bin, server):
    r = infer(inference_bin, IMG, "--model", "no-such-model/7", "--api-url", server)
    assert r.returncode != 0 and r.stdout == ""
    assert "no-such-model/7" in r.stderr and "404" in r.stderr, r.stderr


def test_not_an_image(inference_bin, server, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("hello, I am text")
    r = infer(inference_bin, fake, "--model", SHAPES, "--api-url", server)
    assert r.returncode != 0 and "photo.jpg" in r.stderr and "not an image" in r.stderr, r.stderr
    # In a folder, the bad file fails alone: the good one is still answered.
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copyfile(fake, folder / "bad.png")
    shutil.copyfile(IMG, folder / "good.jpg")
    r = infer(inference_bin, folder, "--model", SHAPES, "--api-url", server)
    assert r.returncode != 0 and "bad.png" in r.stderr and "1 of 2 images failed" in r.stderr, r.stderr
    assert [os.path.basename(json.loads(line)["file"]) for line in r.stdout.splitlines()] == ["good.jpg"]


def test_bad_arguments(inference_bin, server, tmp_path):
    r = infer(inference_bin, IMG, "--model", "just-a-name", "--api-url", server)
    assert r.returncode != 0 and "<project>/<version>" in r.stderr
    r = infer(inference_bin, tmp_path / "missing.jpg", "--model", SHAPES, "--api-url", server)
    assert r.returncode != 0 and "missing.jpg" in r.stderr
    r = infer(inference_bin, IMG, "--model", SHAPES, "--api-url", server, "--out", tmp_path / "a.jpg",
              "--stroke", 0)
    assert r.returncode != 0 and "stroke" in r.stderr, r.stderr
