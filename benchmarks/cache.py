"""What persisting results costs, and what a cached rerun saves.

One flow: N mapped tasks that each sleep ``--sleep-ms`` and return a small int,
then one fan-in task that sums them; the flow returns the sum. For each storage
backend, three scenarios on one LocalCluster started once by this script:

* ``no persistence``  the flow with ``persist_result=False`` (the baseline);
* ``first run``       persisted to an empty store (a fresh folder or prefix per repeat);
* ``cached rerun``    the same flow and parameters again on that store: every task
                      run must end Cached (checked; the script fails otherwise).

Targets (issue 3): cached rerun <= 10% of the first run with 10 ms tasks; first
run <= 1.3 x the no-persistence run for small results.

Backends: ``local`` (a temporary folder) and ``s3`` (a moto S3 server this script
starts on 127.0.0.1; it runs in the driver process, so it competes with the
driver and the scheduler for CPU: S3 figures are pessimistic on a small machine).

Run from the repository root::

    python benchmarks/cache.py                          # N = 1000, 10 ms tasks, 3 repeats
    python benchmarks/cache.py --n 200 --repeats 1      # quick check
    python benchmarks/cache.py --sleep-ms 0             # pure overheads
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import dask
import distributed
import fsspec
from distributed import LocalCluster

import daskflow
from daskflow import DaskTaskRunner, Store, flow, task

CACHED_TARGET = 0.10
PERSIST_TARGET = 1.30


# Module level, so worker processes can unpickle them (cloudpickle ships __main__
# functions by value).
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
    from daskflow import unmapped

    return total.submit(work.map(range(n), unmapped(sleep_s))).result()


def expected(n: int) -> int:
    return n * (n - 1) // 2


class Backend:
    """Hands out empty stores (one per repeat) on one kind of storage."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cleanup: list[Callable[[], None]] = []

    def fresh_store(self) -> Store:
        raise NotImplementedError

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()


class LocalBackend(Backend):
    def __init__(self) -> None:
        super().__init__("local")
        self.root = tempfile.mkdtemp(prefix="daskflow-bench-")
        self._cleanup.append(lambda: shutil.rmtree(self.root, ignore_errors=True))

    def fresh_store(self) -> Store:
        return Store(os.path.join(self.root, uuid.uuid4().hex))


class S3Backend(Backend):
    def __init__(self) -> None:
        super().__init__("s3 (moto)")
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self._cleanup.append(self.server.stop)
        self.endpoint = f"http://127.0.0.1:{port}"
        self.bucket = f"bench-{uuid.uuid4().hex[:8]}"
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=self.bucket)

    def fresh_store(self) -> Store:
        return Store(f"s3://{self.bucket}/{uuid.uuid4().hex}", storage_options={"client_kwargs": {"endpoint_url": self.endpoint}})

    def request_latency(self, count: int = 100) -> tuple[float, float]:
        """Seconds per small PUT and per GET against this server, one at a time: the
        floor under every S3 figure (moto answers one request at a time)."""
        store = self.fresh_store()
        put, _ = timed(lambda: [store.put(f"latency/{i}", b"x" * 64) for i in range(count)])
        get, _ = timed(lambda: [store.get(f"latency/{i}") for i in range(count)])
        return put / count, get / count


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure(backend: Backend, runner: DaskTaskRunner, n: int, sleep_s: float, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"no persistence": [], "first run": [], "cached rerun": []}
    plain = fan_out_fan_in.with_options(task_runner=runner, persist_result=False)
    for _ in range(repeats):
        seconds, state = timed(lambda: plain(n, sleep_s, return_state=True))
        check(state, n, {"Completed": n + 1}, "no persistence")
        times["no persistence"].append(seconds)
        persisted = fan_out_fan_in.with_options(task_runner=runner, result_storage=backend.fresh_store())
        seconds, state = timed(lambda: persisted(n, sleep_s, return_state=True))
        check(state, n, {"Completed": n + 1}, "first run")
        times["first run"].append(seconds)
        seconds, state = timed(lambda: persisted(n, sleep_s, return_state=True))
        check(state, n, {"Cached": n + 1}, "cached rerun")
        times["cached rerun"].append(seconds)
    return times


def check(state: Any, n: int, counts: dict[str, int], label: str) -> None:
    if not state.is_completed() or state.result() != expected(n) or state.run.state_counts() != counts:
        raise SystemExit(f"{label}: expected {counts} and {expected(n)}, got {state} {state.run.state_counts()}")


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f}  ({min(values):.2f}..{max(values):.2f})"


def report(name: str, n: int, sleep_ms: float, times: dict[str, list[float]]) -> bool:
    med = {k: statistics.median(v) for k, v in times.items()}
    cached_ratio = med["cached rerun"] / med["first run"]
    persist_ratio = med["first run"] / med["no persistence"]
    print(f"\n{name}: N = {n} tasks + 1 fan-in, {sleep_ms:g} ms per task, seconds (median, min..max)")
    for label, values in times.items():
        print(f"  {label:<15} {fmt(values)}")
    ok_cached = cached_ratio <= CACHED_TARGET
    ok_persist = persist_ratio <= PERSIST_TARGET
    print(f"  cached / first         {cached_ratio:6.3f}   target <= {CACHED_TARGET:.2f}  {'PASS' if ok_cached else 'FAIL'}")
    print(f"  first / no persistence {persist_ratio:6.3f}   target <= {PERSIST_TARGET:.2f}  {'PASS' if ok_persist else 'FAIL'}")
    return ok_cached and ok_persist


def versions() -> str:
    parts = [f"python {platform.python_version()}", f"dask {dask.__version__}", f"distributed {distributed.__version__}",
             f"fsspec {fsspec.__version__}", f"daskflow {daskflow.__version__}"]
    for module in ("s3fs", "moto"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            parts.append(f"{module} missing")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="mapped tasks (default 1000)")
    parser.add_argument("--sleep-ms", type=float, default=10.0, help="sleep per task (default 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads per worker")
    parser.add_argument("--backends", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    args = parser.parse_args(argv)
    print(f"command:  {shlex.join(['python', 'benchmarks/cache.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"machine:  {os.cpu_count()} cpus, {platform.platform()}")
    print(f"versions: {versions()}")
    print(f"cluster:  LocalCluster, {args.workers} worker processes x {args.threads} threads, on 127.0.0.1")
    # Dummy credentials before the cluster starts: its workers inherit them.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    backends: list[Backend] = []
    ok = True
    with dask.config.set({"daskflow.logging.console": False}), LocalCluster(
        n_workers=args.workers, threads_per_worker=args.threads, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        try:
            for name in args.backends:
                if name == "s3":
                    try:
                        backend: Backend = S3Backend()
                    except ImportError as exc:
                        print(f"\ns3: skipped ({exc}); pip install '.[test]' installs s3fs and moto")
                        continue
                else:
                    backend = LocalBackend()
                backends.append(backend)
                if isinstance(backend, S3Backend):
                    put_s, get_s = backend.request_latency()
                    print(f"\nmoto: {put_s * 1e3:.1f} ms per PUT, {get_s * 1e3:.1f} ms per GET (one at a time, from the driver). "
                          "Per task, a first run makes 4 requests (driver lookup, worker re-check, payload, manifest); "
                          "a cached rerun 1 (plus 1 per value the flow loads).")
                fan_out_fan_in.with_options(task_runner=runner, persist_result=False)(10, 0.0)  # warm up
                times = measure(backend, runner, args.n, args.sleep_ms / 1000, args.repeats)
                ok = report(backend.name, args.n, args.sleep_ms, times) and ok
        finally:
            for backend in backends:
                backend.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
