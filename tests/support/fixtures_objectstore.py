"""Session fixtures: real object-storage servers on free ports of 127.0.0.1, installed by scripts/object-stores.sh
(moto in server mode for S3, Azurite for Azure Blob, fake-gcs-server for Google Cloud Storage)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tests.support.ports import free_port
from tests.support.processes import start_logged, stop_process
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "object-stores.sh"
# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# moto takes any credentials; the agent's S3 client finds these in its environment, as it would real ones.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@dataclass(frozen=True)
class ObjectStore:
    """One running server: its scheme, its endpoint, the agent settings that reach it, and an admin file
    system for the tests to create buckets and objects with."""

    scheme: str
    endpoint: str
    settings: dict[str, str]

    def admin(self) -> pafs.FileSystem:
        host = self.endpoint.removeprefix("http://")
        if self.scheme == "s3":
            return pafs.S3FileSystem(endpoint_override=host, scheme="http", access_key="testing",
                                     secret_key="testing", region="us-east-1", allow_bucket_creation=True,
                                     allow_bucket_deletion=True)
        if self.scheme == "gs":
            return pafs.GcsFileSystem(endpoint_override=host, scheme="http", anonymous=True, project_id="test")
        return pafs.AzureFileSystem(account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY,
                                    blob_storage_authority=host, blob_storage_scheme="http",
                                    dfs_storage_authority=host, dfs_storage_scheme="http")

    def put(self, path: str, data: bytes) -> None:
        with self.admin().open_output_stream(path) as out:
            out.write(data)


def _tools() -> dict[str, str]:
    built = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.fail(f"{INSTALL_SCRIPT} failed:\n{built.stderr[-4000:]}", pytrace=False)
    return dict(line.split(": ", 1) for line in built.stdout.splitlines())


@pytest.fixture(scope="session")
def object_store_tools() -> dict[str, str]:
    return _tools()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def running_server(command: list[str], *, port: int, log_path: Path, name: str) -> Iterator[None]:
    process = start_logged(command, log_path=log_path)
    try:
        wait_for(lambda: port_open(port), what=f"{name} on port {port}", process=process, logs=log_path)
        yield
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def s3_server(object_store_tools, tmp_path_factory) -> Iterator[ObjectStore]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    endpoint = f"http://127.0.0.1:{port}"
    yield from _with_store(ObjectStore("s3", endpoint, {"CZ_AGENT_S3_ENDPOINT_URL": endpoint, **S3_CREDENTIALS}),
                           [object_store_tools["moto-server"], "-H", "127.0.0.1", "-p", str(port)],
                           port=port, log_path=log_path, name="moto")


@pytest.fixture(scope="session")
def azure_server(object_store_tools, tmp_path_factory) -> Iterator[ObjectStore]:
    port = free_port()
    data = tmp_path_factory.mktemp("azurite")
    endpoint = f"http://127.0.0.1:{port}"
    settings = {"CZ_AGENT_AZURE_BLOB_ENDPOINT": endpoint, "CZ_AGENT_AZURE_STORAGE_ACCOUNT": AZURITE_ACCOUNT,
                "CZ_AGENT_AZURE_STORAGE_KEY": AZURITE_KEY}
    yield from _with_store(ObjectStore("az", endpoint, settings),
                           ["node", object_store_tools["azurite-blob"], "--blobHost", "127.0.0.1", "--blobPort",
                            str(port), "--location", str(data), "--silent", "--skipApiVersionCheck"],
                           port=port, log_path=data / "azurite.log", name="Azurite")


@pytest.fixture(scope="session")
def gcs_server(object_store_tools, tmp_path_factory) -> Iterator[ObjectStore]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log"
    endpoint = f"http://127.0.0.1:{port}"
    yield from _with_store(ObjectStore("gs", endpoint, {"CZ_AGENT_GCS_ENDPOINT_URL": endpoint}),
                           [object_store_tools["fake-gcs-server"], "-scheme", "http", "-host", "127.0.0.1", "-port",
                            str(port), "-backend", "memory", "-public-host", f"127.0.0.1:{port}"],
                           port=port, log_path=log_path, name="fake-gcs-server")


def _with_store(store: ObjectStore, command: list[str], *, port: int, log_path: Path,
                name: str) -> Iterator[ObjectStore]:
    for _ in running_server(command, port=port, log_path=log_path, name=name):
        yield store
