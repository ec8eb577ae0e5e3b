"""Test doubles of the model sources the server downloads from (the tests cannot reach the
internet):

* `RoboflowDouble` is a test double of Roboflow's service (api.roboflow.com), not Roboflow
  itself. It follows Roboflow's legacy model download protocol for the routes the server calls:
  `GET /ort/{dataset}/{version}?api_key=…&device=…&nocache=true&dynamic=true` answers
  `{"ort": {"model": <signed URL>, "environment": <URL>, "classes": [...], "type": ...,
  "modelType": ..., "keypoints_metadata": ...}}`, a wrong api key 401 and an unknown model
  404 with Roboflow's error body `{"error": {"message": ...}}`; the URLs it hands out serve
  the ONNX file and the environment JSON. It also serves stored workflows by Roboflow's protocol
  (`get_workflow_specification` in `inference/core/roboflow_api.py`):
  `GET /{workspace}/workflows/{workflow_id}?api_key=…[&workflow_version=…]` answers
  `{"workflow": {"id": …, "name": …, "url": …, "config": "<JSON text of {\"specification\": …}>"}}`,
  a missing or wrong key 401, a key whose workspace may not have it 403, an unknown workflow 404.
* `ModelStoreDouble` is an operator's HTTP model store: `<prefix>/<project>/<version>/
  manifest.json` listing each file with size and sha256, and the files beside it.

Both run a threaded http.server on 127.0.0.1, count requests per path (`counts`), and can
stall a file mid-body (`stall`), delay it (`delay`) or send it slowly (`trickle`) so tests can
kill a server half-way through a download, pile up concurrent first requests, or keep a
download going while other models are requested."""

from __future__ import annotations

import collections
import hashlib
import http.server
import json
import threading
import time
import urllib.parse
from pathlib import Path

FIXTURE_MODELS = Path(__file__).resolve().parent / "fixtures" / "models"

# Roboflow's environment.json for the shapes models: the same letterbox Ultralytics uses,
# so predictions match the local copy of the model.
SHAPES_ENVIRONMENT = {
    "CLASS_MAP": {"0": "circle", "1": "square", "2": "triangle"},
    "PREPROCESSING": json.dumps({"auto-orient": {"enabled": True},
                                 "resize": {"enabled": True, "width": 320, "height": 320,
                                            "format": "Fit (grey edges) in"}}),
}


class _Double:
    """A threaded http.server with request counts, stalls and delays per path."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.stall: set = set()          # paths whose body stops half-way until `release`
        self.delay: dict = {}            # path -> seconds to wait before answering
        self.trickle: dict = {}          # path -> seconds over which the body is sent, in 20 pieces
        self.released = threading.Event()
        self.stalled = threading.Event()  # set when a stalled body has sent its first half
        self._lock = threading.Lock()
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                with double._lock:
                    double.counts[url.path] += 1
                    double.queries.append((url.path, dict(urllib.parse.parse_qsl(url.query))))
                if url.path in double.delay:
                    time.sleep(double.delay[url.path])
                status, ctype, body = double.answer(url.path, dict(urllib.parse.parse_qsl(url.query)))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if url.path in double.stall and status == 200:
                    half = len(body) // 2
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    double.stalled.set()
                    double.released.wait(timeout=120)
                    self.close_connection = True
                    return
                try:
                    if url.path in double.trickle and status == 200:
                        step = max(1, len(body) // 20)
                        for start in range(0, len(body), step):
                            self.wfile.write(body[start:start + step])
                            self.wfile.flush()
                            time.sleep(double.trickle[url.path] / 20)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.queries: list = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    def answer(self, path: str, query: dict):
        raise NotImplementedError

    def release(self):
        self.stall.clear()
        self.released.set()

    def stop(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _json(status: int, value) -> tuple:
    return status, "application/json", json.dumps(value).encode()


class RoboflowDouble(_Double):
    """Test double of Roboflow's API (legacy `/ort` protocol). `models` maps
    "dataset/version" to {"file": fixture ONNX name, "type": task, "classes": [...],
    "environment": dict, "keypoints_metadata": ...}; `keys` are the api keys it accepts
    (None: any non-empty key). `grants` maps "dataset/version" to the keys whose workspace may
    have it (a model not in it: every accepted key); any other key gets Roboflow's 403."""

    def __init__(self, models: dict | None = None, keys=("rf-test-key",), grants: dict | None = None):
        self.models = models if models is not None else {}
        self.workflows: dict = {}  # "workspace/workflow_id" -> {"specification": ..., "versions": {...}}
        self.keys = None if keys is None else set(keys)
        self.grants = grants if grants is not None else {}
        self.keys_seen: list = []  # every api_key the server sent, to check which key it used
        super().__init__()

    def add_shapes(self, model_id: str, file: str = "shapes-detect.onnx", task: str = "object-detection"):
        self.models[model_id] = {"file": file, "type": task, "modelType": "yolov8n",
                                 "classes": ["circle", "square", "triangle"],
                                 "environment": SHAPES_ENVIRONMENT}

    def add_workflow(self, workspace: str, workflow_id: str, specification: dict, versions: dict | None = None):
        """A stored workflow; `versions` maps a workflow_version to its own specification. Who may
        have it is in `grants` under "workspace/workflow_id", as for models."""
        self.workflows[f"{workspace}/{workflow_id}"] = {"specification": specification, "versions": versions or {}}

    @staticmethod
    def workflow_path(workspace: str, workflow_id: str) -> str:
        return f"/{workspace}/workflows/{workflow_id}"

    def workflow_answer(self, workspace: str, workflow_id: str, query: dict):
        key = query.get("api_key")
        self.keys_seen.append(key)
        name = f"{workspace}/{workflow_id}"
        if not key or (self.keys is not None and key not in self.keys):
            return _json(401, {"error": {"message": "This API key does not exist (or has been revoked).",
                                         "type": "OAuthException", "hint": "You may retrieve your API key via the "
                                         "Roboflow Dashboard."}})
        if name in self.grants and key not in self.grants[name]:
            return _json(403, {"error": {"message": f"Forbidden: this api_key's workspace has no access to {name}",
                                         "type": "OAuthException"}})
        workflow = self.workflows.get(name)
        version = query.get("workflow_version")
        if workflow is None or (version is not None and version not in workflow["versions"]):
            return _json(404, {"error": {"message": f"Workflow {name} not found", "type": "NotFoundException"}})
        spec = workflow["versions"][version] if version is not None else workflow["specification"]
        config = {"specification": spec, "editor": {"layout": "auto"}}
        return _json(200, {"workflow": {"id": f"wf-{workspace}-{workflow_id}", "name": workflow_id,
                                        "url": workflow_id, "config": json.dumps(config)}})

    @staticmethod
    def model_path(model_id: str) -> str:
        return f"/files/{model_id}/weights.onnx"

    @staticmethod
    def env_path(model_id: str) -> str:
        return f"/files/{model_id}/environment.json"

    def answer(self, path: str, query: dict):
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "ort":
            model_id = f"{parts[1]}/{parts[2]}"
            if query.get("nocache") != "true" or query.get("dynamic") != "true" or not query.get("device"):
                return _json(400, {"error": {"message": "nocache, dynamic and device are required"}})
            key = query.get("api_key")
            self.keys_seen.append(key)
            if not key or (self.keys is not None and key not in self.keys):
                return _json(401, {"error": {"message": "Unauthorized access to model: invalid api_key",
                                             "type": "OAuthException"}})
            if model_id in self.grants and key not in self.grants[model_id]:
                return _json(403, {"error": {"message": f"Forbidden: this api_key's workspace has no access to "
                                                        f"{model_id}", "type": "OAuthException"}})
            model = self.models.get(model_id)
            if model is None:
                return _json(404, {"error": {"message": f"Model {model_id} does not exist or is not "
                                                        f"deployed", "type": "GraphMethodException"}})
            ort = {"model": f"{self.url}{self.model_path(model_id)}?X-Goog-Signature=abc123",
                   "environment": f"{self.url}{self.env_path(model_id)}",
                   "classes": model["classes"], "colors": {}, "type": model["type"],
                   "modelType": model.get("modelType", "yolov8n"), "name": parts[1], "icon": None}
            if "keypoints_metadata" in model:
                ort["keypoints_metadata"] = model["keypoints_metadata"]
            return _json(200, {"ort": ort})
        if len(parts) == 3 and parts[0] != "ort" and parts[1] == "workflows":
            return self.workflow_answer(parts[0], parts[2], query)
        if len(parts) == 4 and parts[0] == "files":
            model = self.models.get(f"{parts[1]}/{parts[2]}")
            if model is not None and parts[3] == "weights.onnx":
                data = model.get("bytes") or (FIXTURE_MODELS / model["file"]).read_bytes()
                return 200, "application/octet-stream", data
            if model is not None and parts[3] == "environment.json":
                return _json(200, model["environment"])
        return _json(404, {"error": {"message": "not found"}})


class ModelStoreDouble(_Double):
    """An operator's HTTP model store under /store/. `models` maps "project/version" to
    {filename: bytes}; `manifest_override` maps a model id to manifest entries to lie about
    (e.g. a wrong sha256), `serve_override` to bytes served instead of the real file."""

    prefix = "/store"

    def __init__(self):
        self.models: dict = {}
        self.manifest_override: dict = {}
        self.serve_override: dict = {}
        super().__init__()

    @property
    def store_url(self) -> str:
        return f"{self.url}{self.prefix}"

    def add(self, model_id: str, onnx: str = "shapes-detect.onnx", environment: dict | None = None):
        files = {"weights.onnx": (FIXTURE_MODELS / onnx).read_bytes()}
        if environment is not None:
            files["environment.json"] = json.dumps(environment).encode()
        self.models[model_id] = files

    def file_path(self, model_id: str, name: str) -> str:
        return f"{self.prefix}/{model_id}/{name}"

    def manifest(self, model_id: str) -> dict:
        entries = []
        for name, data in self.models[model_id].items():
            entry = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            entry.update(self.manifest_override.get(model_id, {}).get(name, {}))
            entries.append(entry)
        return {"files": entries}

    def answer(self, path: str, query: dict):
        if not path.startswith(self.prefix + "/"):
            return _json(404, {"message": "not found"})
        parts = path[len(self.prefix) + 1:].split("/")
        if len(parts) != 3:
            return _json(404, {"message": "not found"})
        model_id, name = f"{parts[0]}/{parts[1]}", parts[2]
        if model_id not in self.models:
            return _json(404, {"message": "not found"})
        if name == "manifest.json":
            return _json(200, self.manifest(model_id))
        if name in self.models[model_id]:
            data = self.serve_override.get(model_id, {}).get(name, self.models[model_id][name])
            return 200, "application/octet-stream", data
        return _json(404, {"message": "not found"})
