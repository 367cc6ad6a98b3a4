"""daskflow against raw Dask and Prefect 3 (thread runner and prefect-dask) on one cluster.

Four paths run the same N no-op tasks, on the same Dask cluster, in one invocation:

1. ``raw Dask``: ``client.submit`` per task, then ``distributed.wait``;
2. ``daskflow``: a ``@flow(persist_result=False)`` on ``DaskTaskRunner(address=...)`` using
   ``noop.submit``, timed around the flow call (as in ``overhead.py``);
3. ``Prefect thread``: a Prefect 3 flow on ``ThreadPoolTaskRunner()`` (tasks run in
   threads of the Prefect process, Prefect's default pool size);
4. ``Prefect Dask``: a Prefect 3 flow on ``prefect_dask.DaskTaskRunner(address=...)``,
   connecting to the same cluster.

Shapes: ``independent`` (N tasks, wait for all) and ``fan-in`` (N tasks, then one
``reduce`` over the list of all N results). Between timed runs the script waits until the
scheduler holds no tasks (and, for Prefect, until the Prefect server is idle).

Prefect runs in its own virtualenv (the peers' venv), one fresh process per timed run
(``benchmarks/_prefect_side.py``: an untimed warm-up flow run, then the timed one), against
a ``prefect server`` this script starts once on 127.0.0.1 with a fresh ``PREFECT_HOME`` and
stops at the end: its start-up is not timed.

The cluster: one scheduler and two Nanny-managed worker processes of one thread each, on
127.0.0.1, started by this script (a ``SpecCluster``) and used by all four paths. Not a
``LocalCluster``, whose scheduler runs inside this process: prefect-dask puts Prefect's task
engine and task objects into the task graph, which the scheduler unpickles and the workers
run, so both must import prefect, and prefect is not installed in the project's venv. So
the scheduler and the workers each run in their own process on the peers' Python (same
dask and distributed versions as this venv, checked), with daskflow's source directory on
their ``PYTHONPATH``. Without the peers they run on this Python, the same way, and only raw
Dask and daskflow are measured. (``overhead.py`` keeps the scheduler in the driver's
process, so its figures are not directly comparable with these.)

Peak driver memory: each path runs the fan-in shape once at ``--memory-n`` in a fresh
process (raw Dask and daskflow: this Python; Prefect: the peers' Python) connecting to the
same cluster; the peak RSS of that process (``VmHWM``; ``ru_maxrss`` would include the
RSS of this script at the moment it started the process) is reported, before the run
(imports and set-up) and at its end. The scheduler is not in those processes.

Install the peers in a SEPARATE virtualenv, never the project's (from the repository root)::

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install -r benchmarks/requirements-peers.txt

Run, with daskflow installed in this Python::

    python benchmarks/vs_prefect.py --prefect-python .venv-peers/bin/python
    python benchmarks/vs_prefect.py --prefect-python .venv-peers/bin/python --quick
    python benchmarks/vs_prefect.py          # raw Dask and daskflow only

Prefect costs milliseconds (threads) to ~100 ms (Dask) per task here, so Prefect rows above
``--prefect-max-n`` (default 1000) are skipped, and every Prefect run is stopped after
``--prefect-timeout`` seconds. Everything listens on 127.0.0.1; every process the script
starts is stopped on exit, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import dask
import distributed
import psutil
from distributed import Client, SpecCluster
from distributed import wait as dask_wait
from distributed.deploy.spec import ProcessInterface
from distributed.worker_memory import parse_memory_limit
from machine import (  # benchmarks/machine.py, beside this script
    cpu_model,
    daskflow_revision,
)

import daskflow
from daskflow import DaskTaskRunner, flow, task
from daskflow import wait as flow_wait

HERE = os.path.dirname(os.path.abspath(__file__))
PREFECT_SIDE = os.path.join(HERE, "_prefect_side.py")
NOT_INSTALLED = "Prefect: not installed (see benchmarks/requirements-peers.txt)"

SHAPES = ("independent", "fan-in")
PATHS = ("raw", "daskflow", "prefect-thread", "prefect-dask")
LABELS = {"raw": "raw Dask", "daskflow": "daskflow", "prefect-thread": "Prefect thread", "prefect-dask": "Prefect Dask"}
PREFECT_RUNNER = {"prefect-thread": "thread", "prefect-dask": "dask"}

TARGET_RAW_RATIO, TARGET_RAW_N = 1.5, 5000  # daskflow / raw Dask, at most
TARGET_PREFECT_RATIO, TARGET_PREFECT_N = 20.0, 1000  # Prefect Dask / daskflow, at least

N_WORKERS, THREADS_PER_WORKER = 2, 1


# --------------------------------------------------------------------------- task functions
# Module level so workers can unpickle them (cloudpickle ships __main__ functions by value).
def noop(x):
    return x


def reduce_fn(xs):
    return len(xs)


noop_task = task(name="noop")(noop)
reduce_task = task(name="reduce")(reduce_fn)


def expected(shape: str, n: int):
    return n if shape == "fan-in" else None


# --------------------------------------------------------------------------- raw Dask
def raw_independent(client: Client, n: int):
    futures = [client.submit(noop, i, pure=False) for i in range(n)]
    dask_wait(futures)
    return None


def raw_fan_in(client: Client, n: int):
    futures = [client.submit(noop, i, pure=False) for i in range(n)]
    total = client.submit(reduce_fn, futures, pure=False)
    dask_wait([total])
    return total.result()


RAW = {"independent": raw_independent, "fan-in": raw_fan_in}


# --------------------------------------------------------------------------- daskflow
@flow(name="bench-independent", persist_result=False)
def flow_independent(n: int) -> None:
    futures = [noop_task.submit(i) for i in range(n)]
    flow_wait(futures)
    return None


@flow(name="bench-fan-in", persist_result=False)
def flow_fan_in(n: int) -> int:
    futures = [noop_task.submit(i) for i in range(n)]
    return reduce_task.submit(futures).result()


FLOWS = {"independent": flow_independent, "fan-in": flow_fan_in}


def daskflow_flows(address: str) -> dict:
    runner = DaskTaskRunner(address=address)
    return {shape: f.with_options(task_runner=runner) for shape, f in FLOWS.items()}


def run_raw(client: Client, shape: str, n: int):
    return RAW[shape](client, n)


def run_daskflow(flows: dict, shape: str, n: int):
    return flows[shape](n)


# --------------------------------------------------------------------------- processes
def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB: VmHWM from /proc on Linux. Not ``ru_maxrss``, which
    Linux carries over execve() from the parent (a subprocess would report at least the RSS
    its parent had when it started it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a child started with ``start_new_session=True``: its process group and every
    descendant (also one that left the group). SIGTERM, then SIGKILL after ``timeout``."""
    descendants = []
    if proc.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants = psutil.Process(proc.pid).children(recursive=True)
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout)
    _signal_group(proc.pid, signal.SIGKILL)  # anything left in the group


class ChildError(RuntimeError):
    pass


class ChildTimeout(ChildError):
    pass


def run_child(cmd: list[str], env: dict, timeout: float, log_path: str) -> dict:
    """Run a measuring child process; return the JSON object on the last line of its
    stdout. Its stderr goes to ``log_path``. Stopped (with its children) on timeout."""
    with open(log_path, "ab") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, start_new_session=True, text=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ChildTimeout(f"stopped after {timeout:.0f} s") from None
        finally:
            stop_process(proc)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ChildError(f"exit code {proc.returncode}; last lines of {log_path}:\n{tail(log_path)}")
    return json.loads(lines[-1])


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


class OtherPythonProcess(ProcessInterface):
    """A scheduler or Nanny of the cluster: ``python -m dask spec`` on another Python (the
    peers' virtualenv, so prefect-dask's tasks can be unpickled and run), in its own
    process group, stopped with everything in that group."""

    def __init__(self, *, python: str, env: dict, log_path: str):
        super().__init__()
        self.python, self.env, self.log_path = python, env, log_path
        self.process = None

    async def _spawn(self, *args: str) -> None:
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                self.python, "-m", "dask", "spec", *args,
                env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    async def close(self) -> None:
        if self.process is not None:
            if self.process.returncode is None:
                _signal_group(self.process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.process.wait(), 20)
                except asyncio.TimeoutError:
                    _signal_group(self.process.pid, signal.SIGKILL)
                    await self.process.wait()
            _signal_group(self.process.pid, signal.SIGKILL)  # a worker process that outlived its nanny
        await super().close()


class OtherPythonScheduler(OtherPythonProcess):
    def __init__(self, *, scheduler_file: str, host: str, dashboard_address: str, timeout: float = 120, **kw):
        super().__init__(**kw)
        self.scheduler_file, self.timeout = scheduler_file, timeout
        self.opts = {"host": host, "port": 0, "dashboard": True, "dashboard_address": dashboard_address,
                     "scheduler_file": scheduler_file}

    async def start(self) -> None:
        await self._spawn("--spec", json.dumps({"cls": "distributed.Scheduler", "opts": self.opts}))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with open(self.scheduler_file) as fh:
                    identity = json.load(fh)
                break
            except (OSError, json.JSONDecodeError):  # not written yet, or half written
                pass
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the scheduler did not start:\n{tail(self.log_path)}")
            await asyncio.sleep(0.1)  # polling interval
        self.address = identity["address"]
        self.dashboard_port = identity.get("services", {}).get("dashboard")
        await super().start()


class OtherPythonNanny(OtherPythonProcess):
    def __init__(self, scheduler: str, name=None, *, nthreads: int, memory_limit, host: str, **kw):
        super().__init__(**kw)
        self.scheduler, self.name = scheduler, name
        self.opts = {"name": name, "nthreads": nthreads, "memory_limit": memory_limit, "host": host,
                     "dashboard": False, "dashboard_address": f"{host}:0"}

    async def start(self) -> None:
        await self._spawn(self.scheduler, "--spec", json.dumps({"cls": "distributed.Nanny", "opts": self.opts}))
        await super().start()


def start_cluster(python: str, env: dict, tmp: str, n_workers: int = N_WORKERS) -> SpecCluster:
    """Scheduler and ``n_workers`` Nanny-managed worker processes, all on ``python``, on 127.0.0.1."""
    common = {"python": python, "env": env, "log_path": os.path.join(tmp, "cluster.log")}
    worker = {"cls": OtherPythonNanny, "options": {
        **common, "nthreads": THREADS_PER_WORKER, "host": "127.0.0.1",
        "memory_limit": parse_memory_limit("auto", 1, n_workers, logger=logging.getLogger("distributed")),
    }}
    scheduler = {"cls": OtherPythonScheduler, "options": {
        **common, "scheduler_file": os.path.join(tmp, "scheduler.json"),
        "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
    }}
    return SpecCluster(scheduler=scheduler, workers={i: worker for i in range(n_workers)}, worker=worker,
                       name="vs-prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def wait_until_idle(pid: int, timeout: float = 300.0, window: float = 1.0, max_share: float = 0.1) -> float:
    """Wait until a process tree uses under ``max_share`` of one core over ``window``
    seconds (the Prefect server catching up on a run's events). Returns the seconds waited."""
    start = time.monotonic()
    while True:
        before, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window)  # the measuring window, not a guess at a duration
        if (cpu_seconds(pid) - before) / (time.monotonic() - t0) < max_share:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            print(f"  (the Prefect server was still busy after {timeout:.0f} s; going on)", flush=True)
            return time.monotonic() - start


# --------------------------------------------------------------------------- Prefect
def prefect_env(home: str, api_url: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_HOME=home,
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def probe_prefect(python: str | None, tmp: str) -> tuple[dict | None, str]:
    """The peers' versions, or None and why not."""
    if not python:
        return None, NOT_INSTALLED
    try:
        versions = run_child([python, PREFECT_SIDE, "--versions"], prefect_env(os.path.join(tmp, "probe-home")),
                             timeout=120, log_path=os.path.join(tmp, "probe.log"))
    except (OSError, ChildError) as exc:
        print(f"(--prefect-python {python}: {str(exc).strip().splitlines()[-1]})")
        return None, NOT_INSTALLED
    mine = {"dask": dask.__version__, "distributed": distributed.__version__}
    if any(versions[k] != v for k, v in mine.items()):
        return None, (f"Prefect: not used: the peers' venv has dask {versions['dask']} / distributed "
                      f"{versions['distributed']}, this one {mine['dask']} / {mine['distributed']} "
                      "(see benchmarks/requirements-peers.txt)")
    return versions, ""


class PrefectServer:
    """``prefect server start`` on 127.0.0.1 and a free port, with a fresh PREFECT_HOME."""

    def __init__(self, python: str, home: str, log_path: str):
        self.python, self.home, self.log_path = python, home, log_path
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float) -> float:
        cmd = [self.python, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=prefect_env(self.home), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s:\n{tail(self.log_path)}")
            time.sleep(0.25)  # polling interval

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def prefect_cmd(python: str, path: str, shape: str, n: int, address: str, mode: str) -> list[str]:
    cmd = [python, PREFECT_SIDE, "--runner", PREFECT_RUNNER[path], "--shape", shape, "--n", str(n), "--mode", mode]
    if path == "prefect-dask":
        cmd += ["--address", address]
    return cmd


# --------------------------------------------------------------------------- harness
def _scheduler_task_count(dask_scheduler=None) -> int:
    return len(dask_scheduler.tasks)


def settle(client: Client, timeout: float = 120.0) -> None:
    """Wait until the scheduler has forgotten every task of the previous run."""
    gc.collect()
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(_scheduler_task_count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler still holds tasks after {timeout:.0f} s")
        time.sleep(0.02)  # polling interval


def timed(label: str, shape: str, n: int, fn, *args) -> float:
    start = time.perf_counter()
    value = fn(*args)
    elapsed = time.perf_counter() - start
    if value != expected(shape, n):
        raise AssertionError(f"{label} {shape} n={n} returned {value!r}")
    return elapsed


def median_or(cell) -> float | None:
    return statistics.median(cell) if isinstance(cell, list) and cell else None


def fmt_cell(cell) -> str:
    m = median_or(cell)
    return f"{m:.2f} s" if m is not None else str(cell)


def fmt_ratio(a, b) -> str:
    ma, mb = median_or(a), median_or(b)
    return f"{ma / mb:.2f}" if ma is not None and mb else "-"


def child_memory(path: str, address: str, n: int) -> int:
    """In a fresh process (this script again): one fan-in run of raw Dask or daskflow."""
    dask.config.set({"daskflow.logging.console": False})
    before = peak_rss_mb()
    if path == "raw":
        with Client(address) as client:
            value = run_raw(client, "fan-in", n)
    else:
        value = run_daskflow(daskflow_flows(address), "fan-in", n)
    if value != n:
        raise AssertionError(f"{path} fan-in n={n} returned {value!r}")
    print(json.dumps({"path": path, "n": n, "peak_rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}), flush=True)
    return 0


def print_header(argv: list[str], peers: dict | None, peers_python: str | None, why_not: str) -> None:
    print(f"command:     {shlex.join([os.path.basename(sys.executable)] + argv)}")
    print(f"date:        {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"python:      {platform.python_version()} ({sys.executable})")
    print(f"dask:        {dask.__version__}")
    print(f"distributed: {distributed.__version__}")
    print(f"daskflow:    {daskflow.__version__} from {os.path.dirname(daskflow.__file__)}, git {daskflow_revision()}")
    if peers:
        print(f"peers:       prefect {peers['prefect']}, prefect-dask {peers['prefect_dask']}, dask {peers['dask']}, "
              f"distributed {peers['distributed']}, Python {peers['python']} ({peers_python})")
    else:
        print(f"peers:       {why_not}")
    print(f"cpus:        {os.cpu_count()} ({cpu_model()}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    print(f"platform:    {platform.platform()}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefect-python", help="Python of the peers' virtualenv (see benchmarks/requirements-peers.txt)")
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 5000], help="task counts (default: 100 1000 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path and row; the median is reported")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--prefect-max-n", type=int, default=1000, help="skip Prefect rows (and memory) above this N (default 1000)")
    parser.add_argument("--prefect-timeout", type=float, default=1800.0,
                        help="seconds per Prefect run (process start, warm-up and the timed run) before it is stopped (default 1800)")
    parser.add_argument("--prefect-startup-timeout", type=float, default=300.0, help="seconds to wait for the Prefect server's /api/health")
    parser.add_argument("--memory-n", type=int, default=1000, help="N of the fan-in run measured for peak driver memory (default 1000)")
    parser.add_argument("--warmup-n", type=int, default=None, help="tasks per raw/daskflow warm-up run (default: the smallest --n)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=100 only, 1 repeat, memory at N=100")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    parser.add_argument("--child-memory", choices=("raw", "daskflow"), help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_memory:
        return child_memory(args.child_memory, args.address, args.memory_n)
    if args.quick:
        args.n, args.repeats, args.memory_n = [100], 1, 100
    if args.repeats < 1 or any(n < 1 for n in args.n) or args.memory_n < 1:
        parser.error("--repeats, --n and --memory-n must be >= 1")

    # SIGTERM ends the run like Ctrl-C: through the finally blocks that stop every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory(prefix="daskflow-vs-prefect-") as tmp, contextlib.ExitStack() as stack:
        peers, why_not = probe_prefect(args.prefect_python, tmp)
        print_header([sys.argv[0]] + argv, peers, args.prefect_python, why_not)
        print(f"logs:        {tmp} (removed at exit)")

        server = None
        if peers:
            server = PrefectServer(args.prefect_python, os.path.join(tmp, "prefect-home"), os.path.join(tmp, "prefect-server.log"))
            stack.callback(server.stop)
            took = server.start(args.prefect_startup_timeout)
            print(f"prefect:     server at {server.api_url}, healthy after {took:.1f} s (not timed)")

        # The cluster: a scheduler and two Nanny-managed worker processes on the peers' Python
        # (prefect-dask needs prefect on both), with daskflow's source on their path; on this
        # Python without the peers.
        cluster_python = args.prefect_python if peers else sys.executable
        cluster_env = prefect_env(os.path.join(tmp, "prefect-home"), server.api_url) if server else dict(os.environ)
        if peers:
            src = os.path.dirname(os.path.dirname(os.path.abspath(daskflow.__file__)))
            cluster_env["PYTHONPATH"] = os.pathsep.join(p for p in (src, cluster_env.get("PYTHONPATH")) if p)
        dask.config.set({"daskflow.logging.console": False, "daskflow.storage.url": os.path.join(tmp, "daskflow-store")})
        cluster = stack.enter_context(start_cluster(cluster_python, cluster_env, tmp))
        client = stack.enter_context(Client(cluster))
        try:
            client.wait_for_workers(N_WORKERS, timeout=120)
        except TimeoutError:
            raise RuntimeError(f"workers did not start:\n{tail(os.path.join(tmp, 'cluster.log'))}") from None
        address = cluster.scheduler_address
        print(f"cluster:     scheduler {address} (dashboard 127.0.0.1:{cluster.scheduler.dashboard_port}) and "
              f"{N_WORKERS} Nanny worker processes x {THREADS_PER_WORKER} thread, each its own process on {cluster_python}")
        print()
        sys.stdout.flush()

        flows = daskflow_flows(address)
        child_env = dict(os.environ, DASK_DASKFLOW__LOGGING__CONSOLE="false",
                         DASK_DASKFLOW__STORAGE__URL=os.path.join(tmp, "daskflow-store"))
        p_env = prefect_env(os.path.join(tmp, "prefect-home"), server.api_url) if server else None
        prefect_log = os.path.join(tmp, "prefect-runs.log")

        def measure_raw(shape: str, n: int) -> float:
            settle(client)
            return timed("raw Dask", shape, n, run_raw, client, shape, n)

        def measure_daskflow(shape: str, n: int) -> float:
            settle(client)
            return timed("daskflow", shape, n, run_daskflow, flows, shape, n)

        def prefect_child(path: str, shape: str, n: int, mode: str) -> dict:
            settle(client)
            waited = wait_until_idle(server.proc.pid)
            if waited > 5:
                print(f"  (waited {waited:.0f} s for the Prefect server to go idle)", flush=True)
            return run_child(prefect_cmd(args.prefect_python, path, shape, n, address, mode), p_env,
                             args.prefect_timeout, prefect_log)

        # Warm-up: every shape, both in-process paths (Prefect warms up inside each of its processes).
        warmup_n = args.warmup_n or min(args.n)
        t0 = time.perf_counter()
        for shape in args.shapes:
            measure_raw(shape, warmup_n)
            measure_daskflow(shape, warmup_n)
        print(f"warm-up (n={warmup_n}, every shape, raw Dask and daskflow): {time.perf_counter() - t0:.1f} s", flush=True)

        rows = {(shape, n): {} for n in args.n for shape in args.shapes}

        # (a) raw Dask and daskflow, alternating the order so a slow moment does not always hit one path.
        server_cpu0, wall0 = (cpu_seconds(server.proc.pid), time.monotonic()) if server else (0.0, 0.0)
        for n in args.n:
            for shape in args.shapes:
                cell = rows[(shape, n)]
                cell["raw"], cell["daskflow"] = [], []
                for rep in range(args.repeats):
                    order = ("raw", "daskflow") if rep % 2 == 0 else ("daskflow", "raw")
                    for path in order:
                        fn = measure_raw if path == "raw" else measure_daskflow
                        cell[path].append(fn(shape, n))
                print(f"  {shape:<12} N={n:<5} raw {fmt_cell(cell['raw'])}  daskflow {fmt_cell(cell['daskflow'])}  "
                      f"ratio {fmt_ratio(cell['daskflow'], cell['raw'])}   (runs raw {', '.join(f'{t:.2f}' for t in cell['raw'])}; "
                      f"daskflow {', '.join(f'{t:.2f}' for t in cell['daskflow'])})", flush=True)
        if server:
            print(f"  (the idle Prefect server used {cpu_seconds(server.proc.pid) - server_cpu0:.1f} CPU s "
                  f"during these {time.monotonic() - wall0:.0f} s)", flush=True)

        # (a) Prefect, one fresh process per timed run.
        skipped = f"skipped (> --prefect-max-n {args.prefect_max_n})"
        for n in args.n:
            for shape in args.shapes:
                cell = rows[(shape, n)]
                for path in PREFECT_RUNNER:
                    cell[path] = "not installed" if not peers else (skipped if n > args.prefect_max_n else [])
                if not peers or n > args.prefect_max_n:
                    continue
                for rep in range(args.repeats):
                    order = list(PREFECT_RUNNER) if rep % 2 == 0 else list(PREFECT_RUNNER)[::-1]
                    for path in order:
                        if not isinstance(cell[path], list):
                            continue  # timed out or failed earlier
                        smaller = [rows[(shape, m)].get(path) for m in args.n if m < n]
                        if any(isinstance(c, str) and c.startswith("timeout") for c in smaller):
                            cell[path] = "timeout at a smaller N"
                            continue
                        try:
                            cell[path].append(prefect_child(path, shape, n, "time")["seconds"])
                        except ChildTimeout:
                            cell[path] = f"timeout (> {args.prefect_timeout:.0f} s)"
                        except ChildError as exc:
                            cell[path] = "failed"
                            print(f"  {LABELS[path]} {shape} N={n} failed: {exc}", flush=True)
                print(f"  {shape:<12} N={n:<5} Prefect thread {fmt_cell(cell['prefect-thread'])}  Prefect Dask "
                      f"{fmt_cell(cell['prefect-dask'])}   (runs thread "
                      f"{', '.join(f'{t:.2f}' for t in cell['prefect-thread']) if isinstance(cell['prefect-thread'], list) else '-'}; "
                      f"Dask {', '.join(f'{t:.2f}' for t in cell['prefect-dask']) if isinstance(cell['prefect-dask'], list) else '-'})",
                      flush=True)

        # (c) peak driver memory, one fresh process per path.
        memory = {}
        for path in PATHS:
            try:
                if path in ("raw", "daskflow"):
                    settle(client)
                    cmd = [sys.executable, os.path.abspath(__file__), "--child-memory", path,
                           "--address", address, "--memory-n", str(args.memory_n)]
                    memory[path] = run_child(cmd, child_env, args.prefect_timeout, os.path.join(tmp, "memory-runs.log"))
                elif not peers:
                    memory[path] = "not installed"
                elif args.memory_n > args.prefect_max_n:
                    memory[path] = skipped
                else:
                    memory[path] = prefect_child(path, "fan-in", args.memory_n, "memory")
            except ChildTimeout:
                memory[path] = f"timeout (> {args.prefect_timeout:.0f} s)"
            except ChildError as exc:
                memory[path] = "failed"
                print(f"  memory {LABELS[path]} failed: {exc}", flush=True)
            m = memory[path]
            print(f"  memory {LABELS[path]:<14} N={args.memory_n}: "
                  + (f"peak RSS {m['peak_rss_mb']:.0f} MB (before the run {m['peak_rss_before_mb']:.0f} MB)" if isinstance(m, dict) else m),
                  flush=True)

    # ------------------------------------------------------------------ report
    print()
    print(f"Wall seconds, median of {args.repeats} (each path on the same cluster, {N_WORKERS} worker processes x "
          f"{THREADS_PER_WORKER} thread); Prefect above N={args.prefect_max_n} is skipped, and a Prefect run is "
          f"stopped after {args.prefect_timeout:.0f} s")
    print()
    cols = ["shape", "N", "raw Dask", "daskflow", "Prefect thread", "Prefect Dask",
            "daskflow/raw", "PrefectDask/daskflow", "PrefectThread/daskflow"]
    table = []
    for (shape, n), cell in rows.items():
        table.append([shape, str(n), fmt_cell(cell["raw"]), fmt_cell(cell["daskflow"]),
                      fmt_cell(cell["prefect-thread"]), fmt_cell(cell["prefect-dask"]),
                      fmt_ratio(cell["daskflow"], cell["raw"]), fmt_ratio(cell["prefect-dask"], cell["daskflow"]),
                      fmt_ratio(cell["prefect-thread"], cell["daskflow"])])
    print_table(cols, table)

    print()
    mem_cols = ["path", "N (fan-in)", "peak RSS MB", "before the run MB", "peak / raw Dask"]
    raw_peak = memory["raw"]["peak_rss_mb"] if isinstance(memory.get("raw"), dict) else None
    mem_rows = []
    for path in PATHS:
        m = memory[path]
        if isinstance(m, dict):
            ratio = f"{m['peak_rss_mb'] / raw_peak:.2f}" if raw_peak else "-"
            mem_rows.append([LABELS[path], str(args.memory_n), f"{m['peak_rss_mb']:.0f}", f"{m['peak_rss_before_mb']:.0f}", ratio])
        else:
            mem_rows.append([LABELS[path], str(args.memory_n), m, "-", "-"])
    print("Peak RSS of the driver process (a fresh process per path; the scheduler and workers are elsewhere)")
    print()
    print_table(mem_cols, mem_rows)

    print()
    for shape in args.shapes:
        cell = rows.get((shape, TARGET_RAW_N))
        if cell is None:
            print(f"target daskflow/raw <= {TARGET_RAW_RATIO} at N={TARGET_RAW_N}, {shape}: not checked (N={TARGET_RAW_N} not run)")
            continue
        ratio = median_or(cell["daskflow"]) / median_or(cell["raw"])
        print(f"target daskflow/raw <= {TARGET_RAW_RATIO} at N={TARGET_RAW_N}, {shape}: {ratio:.2f} "
              f"{'PASS' if ratio <= TARGET_RAW_RATIO else 'FAIL'}")
    for shape in args.shapes:
        cell = rows.get((shape, TARGET_PREFECT_N))
        label = f"target PrefectDask/daskflow >= {TARGET_PREFECT_RATIO:.0f} at N={TARGET_PREFECT_N}, {shape}:"
        if cell is None:
            print(f"{label} not checked (N={TARGET_PREFECT_N} not run)")
        elif median_or(cell["prefect-dask"]) is None:
            print(f"{label} not checked (Prefect Dask: {cell['prefect-dask']})")
        else:
            ratio = median_or(cell["prefect-dask"]) / median_or(cell["daskflow"])
            print(f"{label} {ratio:.1f} {'PASS' if ratio >= TARGET_PREFECT_RATIO else 'FAIL'}")
    if not peers:
        print(why_not)

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({
                "command": [sys.argv[0]] + argv,
                "versions": {"python": platform.python_version(), "dask": dask.__version__,
                             "distributed": distributed.__version__, "daskflow": daskflow.__version__,
                             "daskflow_git": daskflow_revision(), "peers": peers},
                "cpus": os.cpu_count(),
                "rows": [{"shape": s, "n": n, **cell} for (s, n), cell in rows.items()],
                "memory": memory,
            }, fh, indent=2)
    return 0


def print_table(cols: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
