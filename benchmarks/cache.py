"""What persisting results costs, and what a cached rerun saves.

One flow: N mapped tasks that each sleep ``--sleep-ms`` and return a small int,
then one fan-in task that sums them; the flow returns the sum. For each storage
backend, three scenarios on one LocalCluster started once by this script (so
cluster start-up is never timed; every flow uses ``DaskTaskRunner(address=...)``):

* ``no persistence``  the flow with ``persist_result=False`` (the baseline);
* ``first run``       persisted to an empty store (a fresh folder or prefix per repeat);
* ``cached rerun``    the same flow and parameters again on that store: every task
                      run must end Cached and the value must be right (checked; the
                      script exits 1 otherwise).

Each run is timed wall-clock around the flow call; the median of ``--repeats`` is
reported with the range. Targets (from the issue): cached rerun <= 10% of the first
run with 10 ms tasks; first run <= 1.3 x the no-persistence run for small results.
They are reported PASS/FAIL, not enforced: the exit status is 0 whenever the runs
were correct.

Besides seconds, each scenario shows the CPU seconds the driver process and the
worker processes used (the driver process holds the scheduler, the flow engine
and, for S3, the moto server), and for S3 the HTTP requests per task run, so a
slow figure can be attributed.

Backends: ``local`` (a temporary folder) and ``s3`` (a moto S3 server this script
starts on 127.0.0.1; it runs in the driver process, so it competes with the
driver and the scheduler for CPU, and the S3 figures measure moto as much as
daskflow). Everything binds 127.0.0.1 and is removed at the end.

Run from the repository root::

    python benchmarks/cache.py                          # N = 1000, 10 ms tasks, 3 repeats, local + s3
    python benchmarks/cache.py --n 100 --repeats 1      # quick check
    python benchmarks/cache.py --sleep-ms 0             # pure overheads
    python benchmarks/cache.py --backends local         # no moto needed
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import distributed
import fsspec
import psutil
from distributed import Client, LocalCluster
from machine import (  # benchmarks/machine.py, beside this script
    cpu_model,
    daskflow_revision,
)

import daskflow
from daskflow import DaskTaskRunner, Store, flow, task, unmapped

CACHED_TARGET = 0.10
PERSIST_TARGET = 1.30
TARGET_SLEEP_MS = 10.0  # the issue states both targets for tasks that sleep 10 ms
SCENARIOS = ("no persistence", "first run", "cached rerun")
HTTP_METHODS = ("HEAD", "GET", "PUT", "POST", "DELETE")
S3_PACKAGES = ("s3fs", "moto", "boto3")
S3_INSTALL = "pip install 's3fs>=2024.6' 'moto[server]>=5.0'   (or: pip install '.[test]')"


# --------------------------------------------------------------------------- the flow
# Module level, so worker processes can unpickle them (cloudpickle ships functions
# defined in __main__ by value).
@task(name="work")
def work(i: int, sleep_s: float) -> int:
    if sleep_s:
        time.sleep(sleep_s)
    return i


@task(name="total")
def total(values: list[int]) -> int:
    return sum(values)


@flow(name="bench-cache")
def fan_out_fan_in(n: int, sleep_s: float) -> int:
    return total.submit(work.map(range(n), unmapped(sleep_s))).result()


def expected(n: int) -> int:
    return n * (n - 1) // 2


# --------------------------------------------------------------------------- backends
class Backend:
    """Hands out empty stores (one per repeat) on one kind of storage."""

    name = "?"

    def __init__(self) -> None:
        self._cleanup: list[Callable[[], None]] = []

    def fresh_store(self) -> Store:
        raise NotImplementedError

    def requests(self) -> Counter[str] | None:
        """HTTP requests served so far by method, or None where there is no server."""
        return None

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()
        self._cleanup.clear()


class LocalBackend(Backend):
    name = "local folder"

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="daskflow-bench-cache-")
        self._cleanup.append(lambda: shutil.rmtree(self.root, ignore_errors=True))

    def fresh_store(self) -> Store:
        return Store(os.path.join(self.root, uuid.uuid4().hex))


class RequestCounter(logging.Handler):
    """Counts the requests werkzeug (moto's HTTP server) logs, by method and status,
    and prints nothing: it replaces werkzeug's console handler."""

    _METHOD = re.compile(rf"(?:^|[^A-Z])({'|'.join(HTTP_METHODS)}) ")  # werkzeug may wrap it in ANSI colours

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        # werkzeug logs a request as ('"%s" %s %s', request_line, status, size).
        args = record.args if isinstance(record.args, tuple) else ()
        match = self._METHOD.search(str(args[0])) if len(args) == 3 else None
        if match:
            self.counts[match.group(1)] += 1
            self.counts[f"status {args[1]}"] += 1
        elif record.levelno >= logging.ERROR:
            self.counts["server errors"] += 1


class S3Backend(Backend):
    name = "S3 (moto on 127.0.0.1)"

    def __init__(self) -> None:
        super().__init__()
        import boto3
        from moto.server import ThreadedMotoServer

        # Count moto's request log lines instead of printing them; set up before
        # the first request (werkzeug adds its own console handler if none is there).
        self.counter = RequestCounter()
        werkzeug_log = logging.getLogger("werkzeug")
        werkzeug_log.setLevel(logging.INFO)
        werkzeug_log.propagate = False
        werkzeug_log.addHandler(self.counter)
        self._cleanup.append(lambda: werkzeug_log.removeHandler(self.counter))

        try:
            port = free_port()
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self.server.start()
            self._cleanup.append(self.server.stop)
            self.endpoint = f"http://127.0.0.1:{port}"
            self.bucket = f"bench-{uuid.uuid4().hex[:8]}"
            boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=self.bucket)
        except BaseException:
            self.close()
            raise

    def fresh_store(self) -> Store:
        return Store(f"s3://{self.bucket}/run-{uuid.uuid4().hex[:12]}", storage_options={"client_kwargs": {"endpoint_url": self.endpoint}})

    def requests(self) -> Counter[str]:
        with self.counter.lock:  # type: ignore[union-attr]
            return Counter(self.counter.counts)

    def latency(self, count: int = 100) -> str:
        """Seconds per small ``Store.put`` and ``Store.get``, one at a time from the
        driver, and the HTTP requests each makes: the floor under the S3 figures."""
        store = self.fresh_store()
        parts = []
        for label, op in (("put", lambda i: store.put(f"latency/{i}", b"x" * 64)), ("get", lambda i: store.get(f"latency/{i}"))):
            before = self.requests()
            started = time.perf_counter()
            for i in range(count):
                op(i)
            elapsed = time.perf_counter() - started
            made = self.requests() - before
            methods = " + ".join(m for m in HTTP_METHODS if made[m])
            requests = sum(made[m] for m in HTTP_METHODS) / count
            parts.append(f"Store.{label} {elapsed / count * 1e3:.1f} ms ({requests:g} request{'s' if requests != 1 else ''}: {methods})")
        return ", ".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_s3_packages() -> list[str]:
    return [name for name in S3_PACKAGES if importlib.util.find_spec(name) is None]


def use_dummy_aws_credentials() -> None:
    """moto accepts any credentials. Set in the environment before the cluster
    starts, so the worker processes inherit them; real ones are never sent."""
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_SESSION_TOKEN", None)


# --------------------------------------------------------------------------- timing
@dataclass
class Sample:
    """One timed flow call."""

    wall: float
    driver_cpu: float
    workers_cpu: float
    requests: Counter[str] | None  # what the S3 server answered during the call, by method and status

    @property
    def request_total(self) -> int:
        return sum(self.requests[m] for m in HTTP_METHODS) if self.requests else 0


class CpuMeter:
    """CPU seconds (user + system) of this process and of its child processes (the
    LocalCluster's workers). Process totals, so short-lived threads count too."""

    def __init__(self) -> None:
        self.process = psutil.Process()

    def snapshot(self) -> tuple[float, float]:
        own = self.process.cpu_times()
        workers = 0.0
        for child in self.process.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            workers += times.user + times.system
        return own.user + own.system, workers


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _scheduler_task_count(dask_scheduler: Any = None) -> int:
    return len(dask_scheduler.tasks)


def settle(client: Client, timeout: float = 60.0) -> None:
    """Wait until the scheduler has forgotten the previous run's tasks, so its
    clean-up is not timed as part of the next run."""
    gc.collect()
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(_scheduler_task_count) and time.monotonic() < deadline:
        time.sleep(0.02)


def check(state: Any, n: int, counts: dict[str, int], label: str) -> None:
    """Exit 1 unless the run completed with the right value and task-run states."""
    got = state.run.state_counts() if state.run is not None else {}
    if not state.is_completed() or got != counts or state.result() != expected(n):
        value = state.result() if state.is_completed() else None
        raise SystemExit(f"{label}: expected a Completed flow returning {expected(n)} with task runs {counts}; "
                         f"got {state!r} returning {value!r} with task runs {got}")


class Harness:
    """Runs and times flow calls on one cluster, for one backend."""

    def __init__(self, client: Client, runner: DaskTaskRunner, backend: Backend, meter: CpuMeter) -> None:
        self.client = client
        self.runner = runner
        self.backend = backend
        self.meter = meter

    def flow_on(self, store: Store | None) -> Any:
        if store is None:
            return fan_out_fan_in.with_options(task_runner=self.runner, persist_result=False)
        return fan_out_fan_in.with_options(task_runner=self.runner, result_storage=store)

    def run(self, label: str, flow_fn: Any, n: int, sleep_s: float, counts: dict[str, int]) -> Sample:
        settle(self.client)
        requests_before = self.backend.requests()
        cpu_before = self.meter.snapshot()
        wall, state = timed(lambda: flow_fn(n, sleep_s, return_state=True))
        cpu_after = self.meter.snapshot()
        requests_after = self.backend.requests()
        check(state, n, counts, f"{self.backend.name}, {label}")
        requests = None
        if requests_before is not None and requests_after is not None:
            requests = requests_after - requests_before
        return Sample(wall, cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1], requests)

    def repeat(self, n: int, sleep_s: float, repeats: int) -> dict[str, list[Sample]]:
        samples: dict[str, list[Sample]] = {s: [] for s in SCENARIOS}
        completed = {"Completed": n + 1}
        for rep in range(repeats):
            # Alternate where the baseline falls, so a slow moment of the machine
            # does not always land on the same scenario.
            if rep % 2 == 0:
                samples["no persistence"].append(self.run("no persistence", self.flow_on(None), n, sleep_s, completed))
            persisted = self.flow_on(self.backend.fresh_store())
            samples["first run"].append(self.run("first run", persisted, n, sleep_s, completed))
            samples["cached rerun"].append(self.run("cached rerun", persisted, n, sleep_s, {"Cached": n + 1}))
            if rep % 2 == 1:
                samples["no persistence"].append(self.run("no persistence", self.flow_on(None), n, sleep_s, completed))
        return samples

    def warm_up(self, n: int) -> None:
        """One small run of each scenario, untimed: imports (s3fs on the workers),
        filesystem instances and connection pools are ready before the timed runs."""
        self.repeat(n, 0.0, 1)


# --------------------------------------------------------------------------- report
@dataclass
class Result:
    backend: str
    n: int
    sleep_ms: float
    samples: dict[str, list[Sample]]

    def median(self, scenario: str) -> float:
        return statistics.median(s.wall for s in self.samples[scenario])

    @property
    def cached_ratio(self) -> float:
        return self.median("cached rerun") / self.median("first run")

    @property
    def persist_ratio(self) -> float:
        return self.median("first run") / self.median("no persistence")


def seconds(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def verdict(ratio: float, target: float, sleep_ms: float) -> str:
    if sleep_ms != TARGET_SLEEP_MS:
        return f"{ratio:.3f} (target is for {TARGET_SLEEP_MS:g} ms tasks)"
    return f"{ratio:.3f} {'PASS' if ratio <= target else 'FAIL'}"


def requests_per_task(samples: list[Sample], task_runs: int) -> str:
    """E.g. ``6.01 (HEAD 2.00, GET 2.00, PUT 2.00; 404 2.00)`` from the median run, or ``-``."""
    measured = sorted((s for s in samples if s.requests is not None), key=lambda s: s.request_total)
    if not measured:
        return "-"
    counts = measured[len(measured) // 2].requests or Counter()
    # Methods below 0.005 per task run (the store probe at flow start) would print as 0.00.
    methods = ", ".join(f"{m} {counts[m] / task_runs:.2f}" for m in HTTP_METHODS if counts[m] / task_runs >= 0.005)
    misses = f"; 404 {counts['status 404'] / task_runs:.2f}" if counts["status 404"] else ""
    errors = f"; {counts['server errors']} server errors" if counts["server errors"] else ""
    total_requests = sum(counts[m] for m in HTTP_METHODS)
    if not total_requests:
        return "0"
    return f"{total_requests / task_runs:.2f}" + (f" ({methods}{misses}{errors})" if methods else "")


def print_detail(result: Result, workers: int, threads: int) -> None:
    ideal = result.n * result.sleep_ms / 1000 / (workers * threads)
    print(f"\n{result.backend}: N = {result.n} tasks + 1 fan-in, {result.sleep_ms:g} ms per task "
          f"(the sleeps alone take {ideal:.2f} s on {workers * threads} threads); median (min..max) of "
          f"{len(result.samples['first run'])}")
    print(f"  {'scenario':<16} {'wall s':<20} {'driver cpu s':<14} {'workers cpu s':<14} S3 requests per task run")
    for scenario, samples in result.samples.items():
        print(f"  {scenario:<16} {seconds([s.wall for s in samples]):<20} "
              f"{statistics.median(s.driver_cpu for s in samples):<14.2f} "
              f"{statistics.median(s.workers_cpu for s in samples):<14.2f} {requests_per_task(samples, result.n + 1)}")
    print(f"  cached / first          {verdict(result.cached_ratio, CACHED_TARGET, result.sleep_ms)}   (target <= {CACHED_TARGET:.2f})")
    print(f"  first / no persistence  {verdict(result.persist_ratio, PERSIST_TARGET, result.sleep_ms)}   (target <= {PERSIST_TARGET:.2f})")
    sys.stdout.flush()


def print_table(results: list[Result]) -> None:
    print(f"\n| backend | N | sleep ms | no persistence s | first run s | cached rerun s "
          f"| cached / first (<= {CACHED_TARGET:.2f}) | first / no persistence (<= {PERSIST_TARGET:.2f}) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        walls = {s: [x.wall for x in r.samples[s]] for s in SCENARIOS}
        print(f"| {r.backend} | {r.n} | {r.sleep_ms:g} | {seconds(walls['no persistence'])} | {seconds(walls['first run'])} "
              f"| {seconds(walls['cached rerun'])} | {verdict(r.cached_ratio, CACHED_TARGET, r.sleep_ms)} "
              f"| {verdict(r.persist_ratio, PERSIST_TARGET, r.sleep_ms)} |")
    print("\nSeconds: median (min..max). Driver CPU includes the scheduler and, for S3, the moto server.")


# --------------------------------------------------------------------------- header
def version_of(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "missing"


def print_header(argv: list[str], args: argparse.Namespace) -> None:
    memory_gib = psutil.virtual_memory().total / 2**30
    print(f"command:     {shlex.join(['python', 'benchmarks/cache.py', *argv])}")
    print(f"date:        {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine:     {os.cpu_count()} cpus ({cpu_model()}), {memory_gib:.0f} GiB, {platform.platform()}")
    print(f"python:      {platform.python_version()} ({sys.executable})")
    print(f"versions:    dask {dask.__version__}, distributed {distributed.__version__}, fsspec {fsspec.__version__}, "
          f"s3fs {version_of('s3fs')}, moto {version_of('moto')}")
    print(f"daskflow:    {daskflow.__version__}, git {daskflow_revision()}")
    print(f"cluster:     LocalCluster(n_workers={args.workers}, threads_per_worker={args.threads}, processes=True) "
          f"on 127.0.0.1, started once (not timed)")
    print(f"load:        1-minute load average {os.getloadavg()[0]:.2f} before start")
    sys.stdout.flush()


# --------------------------------------------------------------------------- main
def open_backend(name: str) -> Backend | None:
    if name == "local":
        return LocalBackend()
    missing = missing_s3_packages()
    if missing:
        print(f"\ns3: skipped, {', '.join(missing)} not installed; {S3_INSTALL}")
        return None
    backend = S3Backend()
    print(f"\nmoto at {backend.endpoint}, one call at a time from the driver: {backend.latency()}. moto runs in "
          "the driver process and competes with the scheduler, the flow engine and the S3 client for CPU.")
    return backend


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="mapped tasks (default 1000)")
    parser.add_argument("--sleep-ms", type=float, default=10.0, help="sleep per mapped task in ms (default 10; 0 shows pure overheads)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per scenario; the median is reported (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (default 2: sleeping tasks leave cores free)")
    parser.add_argument("--backends", nargs="+", default=["local", "s3"], choices=["local", "s3"], help="default: local s3")
    parser.add_argument("--warmup-n", type=int, default=50, help="tasks in the untimed warm-up runs (default 50)")
    args = parser.parse_args(argv)
    if min(args.n, args.repeats, args.workers, args.threads, args.warmup_n) < 1 or args.sleep_ms < 0:
        parser.error("--n, --repeats, --workers, --threads and --warmup-n must be >= 1, --sleep-ms >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    print_header(argv, args)
    if "s3" in args.backends:
        use_dummy_aws_credentials()  # before the cluster: its worker processes inherit the environment
    dask.config.set({"daskflow.logging.console": False})
    results: list[Result] = []
    backends: list[Backend] = []
    meter = CpuMeter()
    try:
        with LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, processes=True,
            host="127.0.0.1", dashboard_address=None,
        ) as cluster, Client(cluster) as client:
            client.wait_for_workers(args.workers)
            runner = DaskTaskRunner(address=cluster.scheduler_address)
            for name in args.backends:
                backend = open_backend(name)
                if backend is None:
                    continue
                backends.append(backend)
                harness = Harness(client, runner, backend, meter)
                harness.warm_up(args.warmup_n)
                samples = harness.repeat(args.n, args.sleep_ms / 1000, args.repeats)
                results.append(Result(backend.name, args.n, args.sleep_ms, samples))
                print_detail(results[-1], args.workers, args.threads)
    finally:
        for backend in backends:
            backend.close()
    if results:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
