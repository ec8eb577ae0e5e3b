"""Azure Blob Storage for the model store tests: Azurite (Microsoft's emulator, installed from npm
by scripts/test into tests/.azurite) on loopback, in memory, filled with azure-storage-blob."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient

AZURITE = Path(__file__).resolve().parent / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, in Azure's documentation).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteServer:
    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        if not AZURITE.is_file():
            raise RuntimeError(f"{AZURITE} is missing: run scripts/test (it installs Azurite with npm)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                      "--inMemoryPersistence", "--disableTelemetry", "--silent",
                                      "--skipApiVersionCheck"],
                                     cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        conn = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.url}/{ACCOUNT};")
        self.client = BlobServiceClient.from_connection_string(conn)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("Azurite did not start")
                time.sleep(0.1)

    def env(self) -> dict:
        """What points object_store's Azure client at this emulator."""
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": self.url}

    def add_model(self, container: str, prefix: str, model_id: str, files: dict):
        entries = []
        for name, data in files.items():
            entries.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            self.client.get_blob_client(container, f"{prefix}/{model_id}/{name}").upload_blob(data, overwrite=True)
        self.client.get_blob_client(container, f"{prefix}/{model_id}/manifest.json").upload_blob(
            json.dumps({"files": entries}).encode(), overwrite=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
