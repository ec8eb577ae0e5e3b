"""Model stores in Azure Blob Storage: Azurite (tests/azurite_server.py) on loopback; the server under
test reaches it through object_store's emulator variables."""

from __future__ import annotations

import json

import pytest

from azurite_server import AzuriteServer
from helpers import assert_same, error_message
from roboflow_double import FIXTURE_MODELS, SHAPES_ENVIRONMENT
from test_model_sources import detect, files_in, ok

CONTAINER, PREFIX = "models", "team/prod"
WEIGHTS = (FIXTURE_MODELS / "shapes-detect.onnx").read_bytes()


@pytest.fixture
def azure(tmp_path):
    server = AzuriteServer(tmp_path / "azurite")
    try:
        server.client.create_container(CONTAINER)
        server.add_model(CONTAINER, PREFIX, "shapes-az/1",
                         {"weights.onnx": WEIGHTS, "environment.json": json.dumps(SHAPES_ENVIRONMENT).encode()})
        yield server
    finally:
        server.stop()


def test_azure_download_cache_restart_and_tamper(start_server, azure, tmp_path, server):
    reference = ok(detect(server, "shapes-detect/1"))
    models = tmp_path / "models"
    models.mkdir()
    cache = tmp_path / "cache"
    args = ["--cache-dir", str(cache), "--model-store", f"az://{CONTAINER}/{PREFIX}"]
    h = start_server(args, models=models, env=azure.env())
    assert_same(reference, ok(detect(h.url, "shapes-az/1")), "downloaded from Azure vs local copy")
    assert files_in(cache / "models" / "shapes-az" / "1") == {"weights.onnx", "environment.json", ".verified"}
    assert detect(h.url, "absent/1").status_code == 404

    # A blob that no longer matches its manifest: 502, nothing cached.
    tampered = bytearray(WEIGHTS)
    tampered[100] ^= 0xFF
    azure.add_model(CONTAINER, PREFIX, "shapes-bad/1", {"weights.onnx": WEIGHTS})
    azure.client.get_blob_client(CONTAINER, f"{PREFIX}/shapes-bad/1/weights.onnx").upload_blob(
        bytes(tampered), overwrite=True)
    r = detect(h.url, "shapes-bad/1")
    assert r.status_code == 502 and "sha256" in error_message(r), f"HTTP {r.status_code}: {error_message(r)}"
    assert not (cache / "models" / "shapes-bad" / "1").exists()

    # The container gone: served from the cache, and after a restart.
    azure.client.delete_container(CONTAINER)
    ok(detect(h.url, "shapes-az/1"))
    h.stop()
    again = start_server(args, models=models, env=azure.env())
    ok(detect(again.url, "shapes-az/1"))
