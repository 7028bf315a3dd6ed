"""Session fixture: a real Prometheus serving a backfilled month of memory history (tests/support/promhistory)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import start_logged, stop_process
from tests.support.promhistory import MONTH_END, MONTH_START, History, month_history
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-prometheus.sh"
READY_TIMEOUT_SECONDS = 60
# Only a start-up config: the server scrapes nothing, it serves the backfilled blocks.
CONFIG = "global:\n  scrape_interval: 1m\nscrape_configs: []\n"


@dataclass
class PrometheusServer:
    """A Prometheus on 127.0.0.1 that tests may stop and start again (same port, same data)."""

    url: str
    history: History
    month_start: datetime
    month_end: datetime
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def expected(self, *, cluster: str, basis: str) -> dict[str, Decimal]:
        """The month's byte-seconds per namespace, computed independently of Prometheus."""
        return self.history.expected(cluster=cluster, basis=basis, start=self.month_start, end=self.month_end)

    def start(self) -> None:
        self.process = start_logged(self.command, log_path=self.log_path, append=True)
        self._wait_until_serving()

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None

    def _wait_until_serving(self) -> None:
        # Ready is not enough: the backfilled blocks must answer a query at a time inside the month.
        probe = f"{self.url}/api/v1/query?query=count(container_memory_working_set_bytes)&time={_mid_month()}"
        try:
            wait_for(lambda: _answers(f"{self.url}/-/ready") and _has_result(probe),
                     what=f"Prometheus at {self.url} to serve the backfilled data", timeout=READY_TIMEOUT_SECONDS,
                     interval=0.2, process=self.process, logs=self.log_path)
        except BaseException:
            self.stop()
            raise


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    prometheus, promtool = ensure_prometheus()
    workdir = tmp_path_factory.mktemp("prometheus")
    history = month_history()
    data_dir = workdir / "data"
    backfill(history, promtool=promtool, workdir=workdir, data_dir=data_dir)
    config = workdir / "prometheus.yml"
    config.write_text(CONFIG)
    port = free_port()
    server = PrometheusServer(
        url=f"http://127.0.0.1:{port}",
        history=history,
        month_start=MONTH_START,
        month_end=MONTH_END,
        command=[prometheus, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                 "--storage.tsdb.retention.time=10y", f"--web.listen-address=127.0.0.1:{port}"],
        log_path=workdir / "prometheus.log",
    )
    server.start()
    yield server
    server.stop()


def ensure_prometheus() -> tuple[str, str]:
    """Paths of prometheus and promtool, installing Debian's package when they are missing."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{INSTALL_SCRIPT} failed ({result.returncode}); the Prometheus integration tests need "
                        f"the prometheus and promtool binaries:\n{result.stdout}\n{result.stderr}")
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prometheus and promtool):
        pytest.fail(f"prometheus/promtool still not on PATH after {INSTALL_SCRIPT}")
    return prometheus, promtool


def backfill(history: History, *, promtool: str, workdir: Path, data_dir: Path) -> None:
    """Write the history as OpenMetrics and turn it into TSDB blocks (a few seconds: no cache needed)."""
    openmetrics = workdir / "history.om"
    with openmetrics.open("w") as out:
        history.write_openmetrics(out)
    # Big blocks: promtool re-reads the whole file once per block, and 2 h blocks would be 372 passes.
    command = [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", "--max-block-duration=1000h",
               str(openmetrics), str(data_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    openmetrics.unlink()


def _mid_month() -> int:
    return int((MONTH_START + (MONTH_END - MONTH_START) / 2).timestamp())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _has_result(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(json.load(response)["data"]["result"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False


@contextmanager
def scraping_prometheus(target: str, *, workdir: Path) -> Iterator[str]:
    """A second Prometheus that scrapes `target` (host:port) every second; yields its URL."""
    scrape_configs = [{"job_name": "cz-agent", "static_configs": [{"targets": [target]}]}]
    with running_prometheus(scrape_configs, workdir=workdir, name="scraper") as url:
        yield url


@contextmanager
def running_prometheus(scrape_configs: list[dict], *, workdir: Path, name: str,
                       binary: str | None = None) -> Iterator[str]:
    """A Prometheus (Debian's unless `binary`) with these scrape configs, scraping every second, its files under
    workdir/name*; yields its URL once ready and stops it afterwards."""
    prometheus = binary or ensure_prometheus()[0]
    config = workdir / f"{name}.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                                  "scrape_configs": scrape_configs}))
    port = free_port()
    log_path = workdir / f"{name}.log"
    process = start_logged([prometheus, f"--config.file={config}", f"--storage.tsdb.path={workdir / name}",
                            f"--web.listen-address=127.0.0.1:{port}"], log_path=log_path, append=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/-/ready"), what=f"Prometheus {name} to start", timeout=READY_TIMEOUT_SECONDS,
                 interval=0.2, process=process, logs=log_path)
        yield url
    finally:
        stop_process(process)
