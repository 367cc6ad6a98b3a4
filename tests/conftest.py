"""Fixtures: real runners and real clusters, all on 127.0.0.1, all cleaned up."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import psutil
import pytest

from daskflow import ConcurrentTaskRunner, DaskTaskRunner, SequentialTaskRunner

from .s3 import s3_server, s3_store_url  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent

# A suite started in the background by a non-interactive shell (`pytest &`) inherits
# SIGINT ignored, and so would every process the tests start: the Ctrl-C tests and
# the servers stopped with SIGINT need it live. Handled (not ignored) here, it is
# back to the default in each child after exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

RUNNERS = ["sequential", "concurrent", "dask-threads", "dask-processes", "dask-cli"]


@pytest.fixture(autouse=True, scope="session")
def _quiet_console():
    # Flows print run lines on stderr; tests read the records instead.
    with dask.config.set({"daskflow.logging.console": False}):
        yield


@pytest.fixture(autouse=True)
def _result_storage(tmp_path):
    """Each test stores results in its own folder (a plain flow persists and
    caches by default), so tests never share cache entries or write to the repo."""
    store = tmp_path / "daskflow-store"
    with dask.config.set({"daskflow.storage.url": str(store)}):
        yield store


@pytest.fixture(autouse=True)
def _console_handlers_restored():
    """``daskflow run`` invoked in-process (CliRunner) installs the console handler
    on CliRunner's stderr, once per process: take it away again, so a later test
    that turns the console on gets its own."""
    import logging

    logger = logging.getLogger("daskflow")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


def assert_error(result, code: int, *fragments: str) -> str:
    """A CLI result that failed with exit ``code`` and one line on stderr,
    ``Error: ...`` (holding each of ``fragments``), no traceback; returns it."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def stop_session(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig`` to the process group of ``process`` (started with
    ``start_new_session=True``), wait, and SIGKILL the group if it does not end."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts: it runs no more code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # gone, also between two looks
        return True


def tick_together(loops) -> None:
    """One pass of every serve loop at once, each in its own thread (loops racing for slots)."""
    import threading

    threads = [threading.Thread(target=loop.tick) for loop in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture(scope="session")
def threads_cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0",
        worker_dashboard_address="127.0.0.1:0",  # in-process workers' HTTP servers, else on all interfaces
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def processes_cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster:
        yield cluster


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class DaskCLICluster:
    """``dask scheduler`` and ``dask worker`` processes started like a user would."""

    def __init__(
        self,
        tmp: Path,
        workers: tuple[tuple[str, ...], ...] = ((), ()),
        *,
        dashboard: bool = False,
        scheduler_args: tuple[str, ...] = (),
        scheduler_env: dict[str, str] | None = None,
    ) -> None:
        """``workers`` holds the extra command-line arguments of each worker;
        ``dashboard`` serves the scheduler's dashboard on a free loopback port."""
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        dask_cli = shutil.which("dask", path=os.path.dirname(sys.executable)) or "dask"
        scheduler_file = tmp / "scheduler.json"
        http = ["--dashboard-address", "127.0.0.1:0"] if dashboard else ["--no-dashboard"]
        self.procs.append(self._spawn([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", *http,
                                       "--scheduler-file", str(scheduler_file), *scheduler_args], "scheduler",
                                      scheduler_env))
        try:
            self._start(scheduler_file, dask_cli, workers, dashboard)
        except BaseException:  # no half-started cluster outlives a failed start
            self.close()
            raise

    def _start(self, scheduler_file: Path, dask_cli: str, workers: tuple[tuple[str, ...], ...], dashboard: bool) -> None:
        self.address = wait_until(lambda: _read_address(scheduler_file), 60, message="the dask scheduler's address file")
        services = json.loads(scheduler_file.read_text()).get("services", {})
        #: ``http://127.0.0.1:PORT`` of the dashboard, if it has one.
        self.dashboard = f"http://127.0.0.1:{services['dashboard']}" if dashboard and "dashboard" in services else None
        for i, extra in enumerate(workers):
            self.procs.append(self._spawn([dask_cli, "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                                           "--no-dashboard", "--name", f"w{i}", *extra], f"worker{i}"))
        from distributed import Client

        if workers:
            with Client(self.address, timeout=30) as client:
                client.wait_for_workers(len(workers), timeout=60)

    def _spawn(self, cmd: list[str], label: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{label}.log", "wb")
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**worker_env(), **(env or {})}, cwd=self.tmp,
                                start_new_session=True)

    def log(self, label: str = "scheduler") -> str:
        return (self.tmp / f"{label}.log").read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes (children of the nannies)."""
        pids = []
        for proc in self.procs[1:]:
            pids.extend(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
        return pids

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextlib.contextmanager
def daskflow_ui(storage: Path, *extra: str):
    """``daskflow ui --storage STORAGE --port 0`` as a process; yields ``(base URL, Popen)``."""
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "daskflow"), "ui", "--storage", str(storage), "--port", "0", "--poll", "0.5", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env(), start_new_session=True,
    )
    try:
        first = server.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/daskflow", first)
        assert match, first + server.stderr.read()
        yield match.group(1), server
    finally:
        stop_session(server, signal.SIGINT)


def _read_address(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["address"]
    except (ValueError, KeyError, OSError):
        return None


@pytest.fixture(scope="session")
def cli_cluster(tmp_path_factory):
    cluster = DaskCLICluster(tmp_path_factory.mktemp("dask-cli"))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=RUNNERS)
def runner(request):
    """A runner of each kind; the Dask ones connect to session-wide clusters."""
    kind = request.param
    if kind == "sequential":
        return SequentialTaskRunner()
    if kind == "concurrent":
        return ConcurrentTaskRunner(max_workers=4)
    if kind == "dask-threads":
        return DaskTaskRunner(address=request.getfixturevalue("threads_cluster").scheduler_address)
    if kind == "dask-processes":
        return DaskTaskRunner(address=request.getfixturevalue("processes_cluster").scheduler_address)
    return DaskTaskRunner(address=request.getfixturevalue("cli_cluster").address)


@pytest.fixture(autouse=True, scope="session")
def _no_leftover_processes():
    yield
    # Session fixtures have closed their clusters by now (they were set up after this one).
    leftover = wait_until_none_left()
    assert not leftover, f"processes left running after the tests: {leftover}"


def _ours(process: psutil.Process) -> bool:
    """A live child we started; multiprocessing's own resource tracker lives as long as Python."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def wait_until_none_left(timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        children = [p for p in psutil.Process().children(recursive=True) if _ours(p)]
        if not children or time.monotonic() > deadline:
            return [f"{p.pid}: {' '.join(p.cmdline()[:4])}" for p in children]
        time.sleep(0.1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Hostile-text tests log lone surrogates ("\ud800"); pytest-xdist sends each
    # report's captured output to the controller as UTF-8 and dies on them
    # ("strings must be utf-8 encodable"). Escape them in the captured sections.
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _utf8_safe(text)) for title, text in report.sections]


def _utf8_safe(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def pytest_collection_modifyitems(config, items):
    # Find (or, as root, apt-get install) Chromium once, before any test starts:
    # an install takes minutes, and the per-test timeout would cut it off.
    if any({"page", "browser"} & set(getattr(item, "fixturenames", ())) for item in items):
        from .browser import _find_chromium

        _find_chromium()
