"""A real S3-compatible server on loopback for the model store tests: moto's server mode (its
WSGI app and request handler, as `moto_server` runs them) in a thread, behind a thin WSGI
wrapper that counts the requests it receives per (method, path). Filled with boto3."""

from __future__ import annotations

import collections
import hashlib
import json
import threading

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

REGION = "us-east-1"
# moto accepts any credentials; the server under test signs its requests with these.
ACCESS_KEY, SECRET_KEY = "AKIAMOTOTESTKEY00001", "moto-test-secret"


class S3Server:
    def __init__(self):
        self.requests: collections.Counter = collections.Counter()
        app = DomainDispatcherApplication(create_backend_app)

        def counted(environ, start_response):
            self.requests[(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))] += 1
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, counted, threaded=True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.client = boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                                   aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def env(self) -> dict:
        """The standard AWS variables that point a server at this endpoint."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.url, "AWS_ALLOW_HTTP": "true"}

    def add_model(self, bucket: str, prefix: str, model_id: str, files: dict, manifest_override: dict | None = None):
        """Uploads `files` ({name: bytes}) and their manifest under <prefix>/<model_id>/."""
        entries = []
        for name, data in files.items():
            entry = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            entry.update((manifest_override or {}).get(name, {}))
            entries.append(entry)
            self.client.put_object(Bucket=bucket, Key=f"{prefix}/{model_id}/{name}", Body=data)
        self.client.put_object(Bucket=bucket, Key=f"{prefix}/{model_id}/manifest.json",
                               Body=json.dumps({"files": entries}).encode())

    def gets(self, bucket: str) -> int:
        """GET requests received for objects of `bucket`."""
        return sum(n for (method, path), n in self.requests.items()
                   if method == "GET" and path.startswith(f"/{bucket}/"))

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
