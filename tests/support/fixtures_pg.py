"""Session fixture: a real PostgreSQL (Debian's server) in a throwaway cluster on a free port, one database per test."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.support.logs import tail
from tests.support.ports import free_port
from tests.support.processes import start_logged, stop_process
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-postgres.sh"
READY_TIMEOUT_SECONDS = 60
SUPERUSER = "cz"


@dataclass
class PostgresServer:
    """A PostgreSQL on 127.0.0.1 that tests may stop and start again (same port, same data)."""

    command: list[str]
    port: int
    log_path: Path
    run_as: pwd.struct_passwd | None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database} connect_timeout=5"

    def start(self) -> None:
        self.process = start_logged(self.command, log_path=self.log_path, append=True, **_as_user(self.run_as))
        self._wait_until_accepting()

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are ended, as when an operator stops the database."""
        if self.process is None:
            return
        stop_process(self.process, sig=signal.SIGINT, timeout=30)
        self.process = None

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _wait_until_accepting(self) -> None:
        try:
            wait_for(self._accepts, what=f"PostgreSQL on port {self.port} to accept connections",
                     timeout=READY_TIMEOUT_SECONDS, interval=0.2, process=self.process, logs=self.log_path)
        except BaseException:
            self.stop()
            raise

    def _accepts(self) -> bool:
        try:
            with psycopg.connect(self.conninfo()) as connection:
                connection.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False


@contextmanager
def postgres_cluster() -> Iterator[PostgresServer]:
    """initdb a cluster in a temp dir (as a non-root user when we are root: postgres refuses root), start it
    on a free port with its socket in that dir, and remove it all afterwards."""
    bin_dir = ensure_postgres()
    run_as = _server_user()
    workdir = Path(tempfile.mkdtemp(prefix="cz-agent-pg-"))
    try:
        data_dir, socket_dir = workdir / "data", workdir / "socket"
        socket_dir.mkdir()
        if run_as is not None:
            for path in (workdir, socket_dir):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        _initdb(bin_dir, data_dir=data_dir, run_as=run_as, log_path=workdir / "initdb.log")
        port = free_port()
        server = PostgresServer(
            command=[str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port), "-k", str(socket_dir),
                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            port=port, log_path=workdir / "postgres.log", run_as=run_as)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with postgres_cluster() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A SQLAlchemy URL of a fresh database on the session's server."""
    return postgres_server.create_database()


def ensure_postgres() -> Path:
    """The directory of initdb and postgres, installing Debian's server package when it is missing."""
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
    found = [line.removeprefix("postgres: ") for line in result.stdout.splitlines() if line.startswith("postgres: ")]
    if result.returncode != 0 or not found:
        pytest.fail(f"{INSTALL_SCRIPT} failed ({result.returncode}); the PostgreSQL tests need initdb and "
                    f"postgres:\n{result.stdout}\n{result.stderr}")
    return Path(found[-1])


def _server_user() -> pwd.struct_passwd | None:
    """None when we are not root; else the `postgres` system user, or `nobody` where there is none."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root, but neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


def _as_user(user: pwd.struct_passwd | None) -> dict:
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _initdb(bin_dir: Path, *, data_dir: Path, run_as: pwd.struct_passwd | None, log_path: Path) -> None:
    command = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
               "--locale=C", "--no-sync"]
    with log_path.open("wb") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir.parent,
                                **_as_user(run_as))
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{tail(log_path)}")
