"""Session fixture: a real one-node Trino (Maven Central's server, installed by scripts/trino.sh) on a free port of
127.0.0.1, whose `hive` catalog reads CSV and Parquet bills from a local directory, for the push-down engine."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from trino.dbapi import Connection, connect
from trino.exceptions import Error as TrinoError
from trino.exceptions import HttpError

from tests.support.ports import free_port
from tests.support.processes import start_logged, stop_process
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "trino.sh"
HOST = "127.0.0.1"
CATALOG = "hive"
USER = "cz-agent-test"
# About 12 s on 2 idle cores; a loaded machine or a cold page cache can take several times that.
READY_TIMEOUT_SECONDS = 240
# A small heap for a shared 2-core machine (a million-row bill still sums in it); bench/pushdown.py can ask for more.
HEAP = "1G"
# C1 alone starts the server in about 12 s instead of 19, and a million-row bill's query was no faster with C2. UTC
# makes the Hive connector's time zone (legacy Parquet timestamps) the same everywhere. The last four are from Trino's
# deployment guide.
JVM_OPTIONS = ["-XX:TieredStopAtLevel=1", "-Duser.timezone=UTC", "-XX:+ExitOnOutOfMemoryError",
               "-Djdk.attach.allowAttachSelf=true", "-XX:+EnableDynamicAgentLoading", "-Dfile.encoding=UTF-8"]
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
TableFormat = Literal["CSV", "PARQUET"]
# Arrow types with one Trino type each; strings, decimals and timestamps are matched in trino_type.
ARROW_TYPES = {pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "integer", pa.int64(): "bigint",
               pa.float32(): "real", pa.float64(): "double", pa.bool_(): "boolean", pa.date32(): "date",
               pa.binary(): "varbinary"}


@dataclass(frozen=True)
class TrinoServer:
    """A running Trino: where it listens, its Hive catalog, and the local directory that catalog's file system is
    rooted at (the catalog's file metastore lives in data_dir/metastore, the tables made by `table` in
    data_dir/tables)."""

    host: str
    port: int
    catalog: str
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self) -> Connection:
        return connect(host=self.host, port=self.port, user=USER, catalog=self.catalog, http_scheme="http")

    def location(self, directory: Path) -> str:
        """The catalog's name for a directory under data_dir: a table's external_location."""
        return "local:///" + directory.relative_to(self.data_dir).as_posix()

    def execute(self, sql: str) -> list[list]:
        """One statement on a connection of its own; its rows."""
        with closing(self.connect()) as connection:
            cursor = connection.cursor()
            cursor.execute(sql)
            return cursor.fetchall()

    def table(self, schema: str, name: str, files: list[Path], *, format: TableFormat,
              columns: list[tuple[str, str]] | None = None) -> str:
        """Copy `files` into a directory of their own under data_dir and create an external table over it; its
        qualified name (catalog.schema.name). Without `columns`, they come from the first file: for CSV the
        header's names, all varchar (the Hive connector's CSV format has no other type; each file's header line
        is skipped); for Parquet the schema's names and types."""
        for identifier in (schema, name):
            if not IDENTIFIER.fullmatch(identifier):
                raise ValueError(f"{identifier!r}: schema and table names here are lowercase SQL identifiers")
        if not files and columns is None:
            raise ValueError(f"{schema}.{name}: no files to take the columns from; pass columns=")
        directory = self.data_dir / "tables" / schema / name
        directory.mkdir(parents=True)
        for file in files:
            shutil.copyfile(file, directory / file.name)
        columns = columns if columns is not None else file_columns(files[0], format=format)
        return self.external_table(schema, name, directory, format=format, columns=columns)

    def external_table(self, schema: str, name: str, directory: Path, *, format: TableFormat,
                       columns: list[tuple[str, str]]) -> str:
        """Create an external table over the files of a directory under data_dir; its qualified name."""
        qualified = f"{self.catalog}.{schema}.{name}"
        properties = f"external_location = '{self.location(directory)}', format = '{format}'"
        if format == "CSV":
            properties += ", skip_header_line_count = 1"
        definitions = ", ".join(f"{quoted(column)} {type_}" for column, type_ in columns)
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.catalog}.{schema}")
        self.execute(f"CREATE TABLE {qualified} ({definitions}) WITH ({properties})")
        return qualified


def quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def file_columns(file: Path, *, format: TableFormat) -> list[tuple[str, str]]:
    """A bill file's columns and their Trino types: a CSV's header (all varchar), a Parquet file's schema."""
    if format == "CSV":
        with (gzip.open if file.suffix == ".gz" else open)(file, "rt", newline="", encoding="utf-8-sig") as text:
            return [(column, "varchar") for column in next(csv.reader(text))]
    return [(field.name, trino_type(field.type, column=field.name, file=file)) for field in pq.read_schema(file)]


def trino_type(arrow: pa.DataType, *, column: str, file: Path) -> str:
    """The Hive connector's type that reads a Parquet column written with this Arrow type."""
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_null(arrow):
        return "varchar"
    if pa.types.is_decimal(arrow) and arrow.precision <= 38:
        return f"decimal({arrow.precision}, {arrow.scale})"
    if pa.types.is_timestamp(arrow):
        # The catalog's timestamp precision (hive.timestamp-precision) is the default, milliseconds.
        return "timestamp(3)"
    if arrow in ARROW_TYPES:
        return ARROW_TYPES[arrow]
    raise ValueError(f"{file}: column {column!r} has Arrow type {arrow}, which has no Trino type here; pass columns=")


def install() -> dict[str, str]:
    """scripts/trino.sh's answer: the server's directory and a Java home to run it with."""
    built = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.fail(f"{INSTALL_SCRIPT} failed; the push-down tests need Trino:\n{built.stderr[-4000:]}", pytrace=False)
    return dict(line.split(": ", 1) for line in built.stdout.splitlines())


def write_properties(path: Path, properties: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()), encoding="utf-8")


def configure(etc: Path, *, port: int, node_dir: Path, data_dir: Path, heap: str = HEAP) -> None:
    """A coordinator that also runs the work, on 127.0.0.1 only, and the `hive` catalog over data_dir."""
    write_properties(etc / "node.properties", {"node.environment": "test", "node.id": "cz-agent-test",
                                               "node.data-dir": node_dir})
    write_properties(etc / "config.properties", {
        "coordinator": "true", "node-scheduler.include-coordinator": "true", "http-server.http.port": port,
        "discovery.uri": f"http://{HOST}:{port}", "node.bind-ip": HOST, "node.internal-address": HOST})
    (etc / "jvm.config").write_text("".join(f"{option}\n" for option in [f"-Xmx{heap}", *JVM_OPTIONS]),
                                    encoding="utf-8")
    write_properties(etc / "catalog" / f"{CATALOG}.properties", {
        "connector.name": "hive", "hive.metastore": "file", "hive.metastore.catalog.dir": "local:///metastore",
        "fs.native-local.enabled": "true", "local.location": data_dir})


def started(server: TrinoServer) -> bool:
    """The server says it has started, and runs a query."""
    with urllib.request.urlopen(f"http://{server.host}:{server.port}/v1/info", timeout=5) as answer:
        if json.load(answer)["starting"]:
            return False
    return server.execute("SELECT 1") == [[1]]


def wait_until_ready(server: TrinoServer, *, process: subprocess.Popen, log_path: Path, work: Path) -> None:
    """Started, then scanning a table of the `hive` catalog: for a few seconds after SELECT 1 first works, the
    catalog's list of nodes is still empty and a scan fails with NO_NODES_AVAILABLE."""
    waiting = {"timeout": READY_TIMEOUT_SECONDS, "interval": 0.5, "process": process, "logs": log_path,
               "ignoring": (OSError, HttpError, TrinoError)}
    wait_for(lambda: started(server), what=f"Trino on port {server.port} to start and answer SELECT 1", **waiting)
    probe = work / "readiness.csv"
    probe.write_text("ready\nyes\n", encoding="utf-8")
    table = server.table("fixture", "readiness", [probe], format="CSV")
    wait_for(lambda: server.execute(f"SELECT count(*) FROM {table}") == [[1]],
             what=f"Trino's {server.catalog} catalog to scan a table", **waiting)


@contextmanager
def running(work: Path, *, heap: str = HEAP) -> Iterator[tuple[TrinoServer, subprocess.Popen]]:
    """A Trino of `heap` (a JVM -Xmx value) whose configuration, data, catalog files (work/files) and log
    (work/trino.log) live in `work`, ready to scan a Hive table; and its process, the JVM itself. Stopped on exit."""
    tools = install()
    etc, node_dir, data_dir = work / "etc", work / "node", work / "files"
    data_dir.mkdir()
    port = free_port()
    configure(etc, port=port, node_dir=node_dir, data_dir=data_dir, heap=heap)
    server = TrinoServer(host=HOST, port=port, catalog=CATALOG, data_dir=data_dir)
    log_path = work / "trino.log"
    # The launcher runs the JVM in its own place (exec): the signal that stops the process stops Trino.
    process = start_logged([Path(tools["trino-server"]) / "bin" / "launcher", "run", "--etc-dir", etc,
                            "--data-dir", node_dir], log_path=log_path,
                           env={**os.environ, "JAVA_HOME": tools["trino-java-home"]})
    try:
        wait_until_ready(server, process=process, log_path=log_path, work=work)
        yield server, process
    finally:
        stop_process(process, timeout=30)


@pytest.fixture(scope="session", name="trino")
def trino_server(tmp_path_factory) -> Iterator[TrinoServer]:
    with running(tmp_path_factory.mktemp("trino")) as (server, _):
        yield server
