#!/usr/bin/env python3
"""Workflow overhead: a one-step detection workflow vs the same /infer/object_detection call,
and a crop -> second-model workflow per stage, against a running server.

    scripts/bench_workflows.py --url http://127.0.0.1:9001 --model nudenet/1 --image tests/fixtures/images/photos/zidane.jpg

Prints p50/p90 latencies (ms) of each, the p50 difference (the workflow layer's cost, target
<= 1 ms), and the crop -> second-model workflow per stage: detection, cropping, the second model
on the crops (with the number of crops, so the cost per crop is known)."""

import argparse
import base64
import statistics
import time

import requests


def timed(fn, n):
    fn()  # warm up (model load)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = fn()
        out.append((time.perf_counter() - t) * 1e3)
        r.raise_for_status()
    out.sort()
    return statistics.median(out), out[int(0.9 * (len(out) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:9001")
    ap.add_argument("--model", default="nudenet/1")
    ap.add_argument("--image", default="tests/fixtures/images/photos/zidane.jpg")
    ap.add_argument("-n", type=int, default=50)
    a = ap.parse_args()
    b64 = base64.b64encode(open(a.image, "rb").read()).decode()
    s = requests.Session()
    det = {"type": "roboflow_core/roboflow_object_detection_model@v2", "name": "det", "images": "$inputs.image",
           "model_id": a.model, "confidence": 0.2}
    one = {"version": "1.0", "inputs": [{"type": "WorkflowImage", "name": "image"}], "steps": [det],
           "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.det.predictions"}]}
    crop = {"type": "roboflow_core/dynamic_crop@v1", "name": "crop", "images": "$inputs.image",
            "predictions": "$steps.det.predictions"}
    count = {"type": "roboflow_core/property_definition@v1", "name": "count", "data": "$steps.det.predictions",
             "operations": [{"type": "SequenceLength"}]}
    cropped = {"version": "1.0", "inputs": [{"type": "WorkflowImage", "name": "image"}], "steps": [det, crop, count],
               "outputs": [{"type": "JsonField", "name": "crops", "selector": "$steps.count.output"}]}
    two = {"version": "1.0", "inputs": [{"type": "WorkflowImage", "name": "image"}],
           "steps": [det, crop, {**det, "name": "det2", "images": "$steps.crop.crops", "confidence": 0.05}],
           "outputs": [{"type": "JsonField", "name": "second", "selector": "$steps.det2.predictions"}]}
    image = {"type": "base64", "value": b64}
    infer = lambda: s.post(f"{a.url}/infer/object_detection", json={"model_id": a.model, "image": image, "confidence": 0.2})
    wf = lambda spec: (lambda: s.post(f"{a.url}/workflows/run", json={"inputs": {"image": image}, "specification": spec}))
    n_crops = wf(cropped)().json()["outputs"][0]["crops"]
    i50, i90 = timed(infer, a.n)
    w50, w90 = timed(wf(one), a.n)
    k50, k90 = timed(wf(cropped), a.n)
    c50, c90 = timed(wf(two), a.n)
    overhead = w50 - i50
    print(f"/infer/object_detection       p50 {i50:7.2f} ms  p90 {i90:7.2f} ms")
    print(f"one-step workflow             p50 {w50:7.2f} ms  p90 {w90:7.2f} ms  (workflow layer {overhead:+.2f} ms at p50, "
          f"target <= 1 ms: {'met' if overhead <= 1.0 else 'NOT met'})")
    print(f"detect -> crop                p50 {k50:7.2f} ms  p90 {k90:7.2f} ms")
    print(f"detect -> crop -> detect      p50 {c50:7.2f} ms  p90 {c90:7.2f} ms")
    per_crop = f", {(c50 - k50) / n_crops:.2f} ms per crop" if n_crops else ""
    print(f"  per stage at p50: detect {w50:.2f} ms, crop {k50 - w50:+.2f} ms ({n_crops} crop{'' if n_crops == 1 else 's'}), "
          f"second model {c50 - k50:+.2f} ms{per_crop}")


if __name__ == "__main__":
    main()
