"""The three request forms of Roboflow's HTTP inference guide (URL, NumPy array,
base64), adapted to a local model and a fixture image.

    python examples/python_requests.py [--url http://localhost:9001] [--image PATH] [--image-url URL]

Without --image-url, the URL form is served from a throwaway local HTTP server, which the
server fetches only when started with --allow-http-urls --allow-private-urls."""

import argparse
import base64
import functools
import http.server
import pickle
import threading
from io import BytesIO
from pathlib import Path

import cv2
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "shapes-detect/1"
TASK = "object_detection"


def show(title, res):
    res.raise_for_status()
    preds = res.json()["predictions"]
    print(f"{title}: {len(preds)} predictions")
    for p in preds:
        print(f"  {p['class']:<9} {p['confidence']:.3f}  x={p['x']:.1f} y={p['y']:.1f} "
              f"w={p['width']:.1f} h={p['height']:.1f}")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_file(path: Path) -> str:
    handler = functools.partial(QuietHandler, directory=str(path.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/{path.name}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://localhost:9001", help="inference server")
    ap.add_argument("--image", default=str(REPO / "tests/fixtures/images/dev/01_multi_320x320.jpg"))
    ap.add_argument("--image-url", help="an image URL the server can fetch")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--confidence", type=float, default=0.4)
    ap.add_argument("--iou-thresh", type=float, default=0.3)
    args = ap.parse_args()
    project_id, model_version = MODEL_ID.split("/")

    # 1. URL
    image_url = args.image_url or serve_file(Path(args.image))
    infer_payload = {
        "model_id": f"{project_id}/{model_version}",
        "image": {"type": "url", "value": image_url},
        "confidence": args.confidence,
        "iou_threshold": args.iou_thresh,
        "api_key": args.api_key,
    }
    res = requests.post(f"{args.url}/infer/{TASK}", json=infer_payload)
    if res.status_code == 400 and not args.image_url:
        # By default the server fetches only https URLs on public addresses (no SSRF into its
        # own network): a local http URL needs `--allow-http-urls --allow-private-urls`.
        print(f"URL: refused as the server's defaults require ({res.json()['message']}); "
              "start the server with --allow-http-urls --allow-private-urls, or pass --image-url")
    else:
        show("URL", res)

    # 2. NumPy array, pickled, to the legacy route
    image = cv2.imread(args.image)
    numpy_data = pickle.dumps(image)
    res = requests.post(
        f"{args.url}/{project_id}/{model_version}?api_key={args.api_key}&image_type=numpy"
        f"&confidence={args.confidence}&overlap={args.iou_thresh}",
        data=numpy_data,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    show("NumPy array", res)

    # 3. Base64 (re-encoded as JPEG, as in the guide)
    buffered = BytesIO()
    Image.open(args.image).convert("RGB").save(buffered, quality=100, format="JPEG")
    img_str = base64.b64encode(buffered.getvalue()).decode("ascii")
    infer_payload["image"] = {"type": "base64", "value": img_str}
    show("base64", requests.post(f"{args.url}/infer/{TASK}", json=infer_payload))


if __name__ == "__main__":
    main()
