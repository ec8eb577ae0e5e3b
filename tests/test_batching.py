"""Dynamic batching and bounded admission.

Concurrent requests for one model share ONNX Runtime runs (and a list request is shared between
parallel plugin calls whose runs are batched again); each request still gets exactly its own
answer, with its own parameters. Overload is a 503 with Retry-After, never a timeout or a 500,
and a flood of large images is refused by the memory budget instead of growing the server.

The servers here batch eagerly (one run slot per model, a long queue delay) so that concurrent
requests really do share runs; `/metrics` (`inference_batch_images`) proves they did."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import (CLS, DEV_IMAGES, HTTP_TIMEOUT, PHOTOS, POSE, REF_PARAMS, SEG, SHAPES, SHAPES_STATIC, NUDENET,
                     img_b64, infer, infer_route, png_bytes, same_predictions)

EAGER = ["--sessions-per-model", "1", "--batch-max-delay-us", "50000", "--batch-max-images", "8"]
PHOTO_FILES = [PHOTOS / "bus.jpg", PHOTOS / "zidane.jpg"]
DEV = sorted(DEV_IMAGES.glob("0[1-8]_*"))


@pytest.fixture(scope="module")
def eager(start_server):
    return start_server(EAGER)


def batched_runs(url: str, model: str) -> tuple[float, float]:
    """(runs, images) of `model` recorded by the batch-size histogram."""
    text = requests.get(f"{url}/metrics", timeout=HTTP_TIMEOUT).text
    def value(suffix):
        m = re.search(rf'^inference_batch_images_{suffix}{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0
    return value("count"), value("sum")


def concurrently(calls, workers=8):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda f: f(), calls))


def ok_json(r):
    assert r.status_code == 200, r.text[:500]
    return r.json()


def test_requests_batched_together_get_their_own_answers(eager):
    url = eager.url
    # Different parameters per request: each must get what it gets alone.
    variants = [
        dict(REF_PARAMS),
        {**REF_PARAMS, "confidence": 0.6},
        {**REF_PARAMS, "class_filter": ["circle"]},
        {**REF_PARAMS, "max_detections": 2},
        {**REF_PARAMS, "class_agnostic_nms": True},
    ]
    cases = [(path, params) for path in DEV for params in variants]
    alone = [ok_json(infer(url, SHAPES, img_b64(p.read_bytes()), **params)) for p, params in cases]
    runs_before, images_before = batched_runs(url, SHAPES)
    together = concurrently([lambda p=p, params=params: ok_json(infer(url, SHAPES, img_b64(p.read_bytes()), **params))
                             for p, params in cases] * 2, workers=12)
    runs_after, images_after = batched_runs(url, SHAPES)
    assert images_after - images_before == 2 * len(cases)
    assert runs_after - runs_before < 2 * len(cases), "no run was shared: batching did not happen"
    for (path, params), one, got in zip(cases * 2, alone * 2, together):
        size = one["image"]
        assert got["image"] == size
        same_predictions(one["predictions"], got["predictions"], size["width"], size["height"])


@pytest.mark.parametrize("route, model, extra", [
    ("/infer/instance_segmentation", SEG, {"response_mask_format": "rle"}),
    ("/infer/keypoints_detection", POSE, {}),
    ("/infer/classification", CLS, {}),
])
def test_every_task_batches(eager, route, model, extra):
    url = eager.url
    images = [img_b64(p.read_bytes()) for p in DEV]
    alone = [ok_json(infer_route(url, route, model, image, **REF_PARAMS, **extra)) for image in images]
    together = concurrently([lambda image=image: ok_json(infer_route(url, route, model, image, **REF_PARAMS, **extra))
                             for image in images] * 2)
    for one, got in zip(alone * 2, together):
        if "top" in one:
            assert one["top"] == got["top"] and abs(one["confidence"] - got["confidence"]) < 1e-4
        else:
            assert len(one["predictions"]) == len(got["predictions"])
            same_predictions(one["predictions"], got["predictions"], one["image"]["width"], one["image"]["height"])


def test_a_list_request_equals_its_images_alone(eager):
    url = eager.url
    photos = [img_b64(p.read_bytes()) for p in PHOTO_FILES] * 4
    alone = [ok_json(infer(url, NUDENET, image, **REF_PARAMS)) for image in photos]
    listed = ok_json(infer(url, NUDENET, photos, **REF_PARAMS))
    assert isinstance(listed, list) and len(listed) == len(photos)
    for one, got in zip(alone, listed):
        assert got["image"] == one["image"]
        same_predictions(one["predictions"], got["predictions"], one["image"]["width"], one["image"]["height"])
    # Concurrent list requests too.
    for result in concurrently([lambda: ok_json(infer(url, NUDENET, photos, **REF_PARAMS))] * 4, workers=4):
        for one, got in zip(alone, result):
            same_predictions(one["predictions"], got["predictions"], one["image"]["width"], one["image"]["height"])


def test_a_static_batch_model_is_not_batched_and_still_answers(eager):
    url = eager.url
    image = img_b64(DEV[0].read_bytes())
    alone = ok_json(infer(url, SHAPES_STATIC, image, **REF_PARAMS))
    results = concurrently([lambda: ok_json(infer(url, SHAPES_STATIC, image, **REF_PARAMS))] * 8)
    for got in results:
        same_predictions(alone["predictions"], got["predictions"], 320, 320)
    runs, images = batched_runs(url, SHAPES_STATIC)
    assert runs == images, f"a static-batch model's runs were batched: {runs} runs for {images} images"


def test_no_batching_flag_answers_the_same(start_server):
    server = start_server(["--no-batching"])
    image = img_b64(DEV[1].read_bytes())
    alone = ok_json(infer(server.url, SHAPES, image, **REF_PARAMS))
    for got in concurrently([lambda: ok_json(infer(server.url, SHAPES, image, **REF_PARAMS))] * 8):
        same_predictions(alone["predictions"], got["predictions"], 640, 480)
    runs, images = batched_runs(server.url, SHAPES)
    assert runs == images


def test_overload_is_503_with_retry_after(start_server):
    # A queue of 2 per model: of many concurrent requests some must be refused, quickly and cleanly.
    server = start_server(["--max-queue-per-model", "2", "--max-concurrent-calls", "1"])
    image = img_b64(PHOTO_FILES[0].read_bytes())
    responses = concurrently([lambda: infer(server.url, NUDENET, image)] * 24, workers=24)
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert refused and any(r.status_code == 200 for r in responses), statuses
    for r in refused:
        assert r.headers.get("Retry-After") and "retry" in r.json()["message"]
    metrics = requests.get(f"{server.url}/metrics", timeout=HTTP_TIMEOUT).text
    assert re.search(r'^inference_rejected_total\{reason="queue"\} [1-9]', metrics, re.M), metrics[-2000:]
    assert infer(server.url, NUDENET, image).status_code == 200


def flood_is_partly_refused(url: str, image, n: int, reason: str, what: str) -> str:
    """Sends `n` concurrent requests: some are served, the rest refused with 503, Retry-After and
    the budget's message, counted under `reason`. Returns /metrics."""
    responses = concurrently([lambda: infer(url, SHAPES, image)] * n, workers=n)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses and 200 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers.get("Retry-After"), r.headers
            assert f"memory budget for {what}" in r.json()["message"], r.text
    metrics = requests.get(f"{url}/metrics", timeout=HTTP_TIMEOUT).text
    assert re.search(rf'^inference_rejected_total{{reason="{reason}"}} [1-9]', metrics, re.M), metrics[-2000:]
    return metrics


def test_the_memory_budget_refuses_a_flood_of_large_images(start_server):
    import numpy as np
    # A 4000 x 3000 gradient: a small PNG, but 36 MB decoded, ~72 MB in flight with its copy in
    # the plugin. A budget of 100 MB (half of --max-memory 200MB) holds one decoded at a time:
    # a request that gets the second call slot meanwhile is refused, not let in to decode.
    row = np.linspace(0, 255, 4000, dtype=np.uint8)
    big = png_bytes(np.ascontiguousarray(np.broadcast_to(row[None, :, None], (3000, 4000, 3))))
    assert len(big) < 2_000_000
    server = start_server(["--max-memory", "200MB", "--max-concurrent-calls", "2"])
    image = img_b64(big)
    metrics = flood_is_partly_refused(server.url, image, 8, "memory", "images in flight")
    # Alone, the large image is served.
    assert infer(server.url, SHAPES, image).status_code == 200


def test_the_body_budget_refuses_a_flood_of_large_bodies_before_reading_them(start_server):
    import numpy as np
    # Noise does not compress: a 640 x 480 PNG of ~0.9 MB, ~1.2 MB in base64, counted twice
    # (the bytes read and the string parsed from them). The body budget (a sixteenth of
    # --max-memory 64MB: 4 MiB) holds one such body at a time; the images' budget (32 MiB) would
    # take many, so the refusals are the bodies'.
    noise = np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image = img_b64(png_bytes(noise))
    assert len(image["value"]) > 1_000_000
    server = start_server(["--max-memory", "64MB"])
    metrics = flood_is_partly_refused(server.url, image, 24, "bodies", "request bodies")
    # Every reservation was given back: the gauge is at zero between requests, and the next
    # request is served.
    assert re.search(r'^inference_inflight_body_bytes 0$', metrics, re.M), metrics[-2000:]
    assert infer(server.url, SHAPES, image).status_code == 200
