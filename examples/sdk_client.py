"""The official client (inference-sdk) and supervision against a local server.

    python examples/sdk_client.py [--url http://localhost:9001] [--image PATH] [--out annotated.jpg]"""

import argparse
from pathlib import Path

import cv2
import supervision as sv
from inference_sdk import InferenceConfiguration, InferenceHTTPClient

REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://localhost:9001")
    ap.add_argument("--image", default=str(REPO / "tests/fixtures/images/dev/02_multi_640x480.jpg"))
    ap.add_argument("--model", default="shapes-detect/1")
    ap.add_argument("--out", help="write an annotated copy of the image here")
    args = ap.parse_args()

    client = InferenceHTTPClient(api_url=args.url, api_key="local").configure(
        InferenceConfiguration(confidence_threshold=0.25, iou_threshold=0.45, api_key_transport="legacy"))

    # v1 API (default for a local URL): /model/registry, /model/add, /infer/object_detection.
    result = client.infer(args.image, model_id=args.model)
    detections = sv.Detections.from_inference(result)
    print(f"{len(detections)} detections in {result['image']['width']}x{result['image']['height']}:")
    for name, conf, box in zip(detections.data["class_name"], detections.confidence, detections.xyxy):
        print(f"  {name:<9} {conf:.3f}  xyxy={[round(float(v), 1) for v in box]}")

    # Several images: a list in, a list out. NumPy arrays are sent as JPEG.
    image = cv2.imread(args.image)
    results = client.infer([image, args.image], model_id=args.model)
    print("batch:", [len(r["predictions"]) for r in results], "predictions")

    # The legacy (v0) route: POST /<project>/<version> with a base64 body.
    with client.use_api_v0():
        legacy = client.infer(args.image, model_id=args.model)
    print("legacy route:", len(legacy["predictions"]), "predictions")

    if args.out:
        labels = [f"{n} {c:.2f}" for n, c in zip(detections.data["class_name"], detections.confidence)]
        annotated = sv.BoxAnnotator().annotate(image.copy(), detections)
        annotated = sv.LabelAnnotator().annotate(annotated, detections, labels=labels)
        cv2.imwrite(args.out, annotated)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
