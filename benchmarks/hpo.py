"""The main job's workload (``examples/hpo_kfold.py``) through raw Dask and daskflow.

On a LocalCluster of ``W`` worker processes x 1 thread (127.0.0.1), for each
``--workers`` count, times the median of ``--repeats``:

* **raw Dask**: the same functions (load, 90 fits, 90 scores, the CV table, the
  refit) as ``client.submit`` calls with futures as arguments, waited on; nothing
  stored (what a user writes without daskflow);
* **daskflow, first run**: the example's flow into an empty local store (every
  fitted model, score and table persisted, the run recorded, artifacts made);
* **daskflow, cached rerun**: the same flow again on the same store (all 184
  task runs reused).

* with ``--prefect-python`` (the peers' virtualenv, ``benchmarks/requirements-peers.txt``),
  at the largest worker count: **Prefect 3** on ``ThreadPoolTaskRunner`` and on
  ``prefect_dask.DaskTaskRunner`` (same cluster), first run and cached rerun, the
  example's own functions as Prefect tasks cached like daskflow's (``INPUTS +
  TASK_SOURCE``, results persisted; ``benchmarks/_prefect_hpo.py``), each run a fresh
  process against a Prefect server started once (not timed).

The cluster (a scheduler and W Nanny worker processes x 1 thread on 127.0.0.1, as in
``vs_prefect.py``: on the peers' Python when Prefect is measured, since prefect-dask
needs prefect on the scheduler and workers) is started before the timed runs and
shared by them. Targets (from the issue): the cached rerun under 10% of the first
run; 2 workers at least 1.7x faster than 1 worker (daskflow, first run).

Run from the repository root (needs scikit-learn: ``pip install -e '.[examples]'``)::

    python benchmarks/hpo.py                     # 1 and 2 workers, 3 repeats
    python benchmarks/hpo.py --prefect-python .venv-peers/bin/python
    python benchmarks/hpo.py --workers 2 --repeats 1   # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import dask
import distributed
from distributed import Client, wait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vs_prefect  # noqa: E402  (the peers' cluster, server and child-process helpers)
from machine import cpu_model, daskflow_revision  # noqa: E402

import daskflow  # noqa: E402
from daskflow import DaskTaskRunner  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hpo_kfold.py"
PREFECT_HPO = str(Path(__file__).resolve().parent / "_prefect_hpo.py")
CACHED_TARGET = 0.10
SCALING_TARGET = 1.7


def _load_example():
    spec = importlib.util.spec_from_file_location("hpo_kfold", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hpo_kfold"] = module
    spec.loader.exec_module(module)
    # Workers cannot import a module loaded from a path: ship its functions by value.
    cloudpickle.register_pickle_by_value(module)
    return module


def raw_dask(client: Client, job, folds: int, seed: int) -> None:
    data = client.submit(job.load_data.fn, pure=False)
    scores = []
    for family, params in job.GRID:
        for fold in range(folds):
            model = client.submit(job.fit.fn, family, params, data, fold, folds, seed, pure=False)
            scores.append(client.submit(job.score.fn, model, family, params, data, fold, folds, seed, pure=False))
    table = client.submit(job.cv_table.fn, scores, pure=False)
    best = client.submit(job.refit.fn, table, data, seed, pure=False)
    wait([table, best])
    table.result()


def _wait_idle(client: Client, timeout: float = 60) -> None:
    """Until the scheduler holds no tasks: one run's clean-up must not land in the next."""
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        if time.monotonic() > deadline:
            raise TimeoutError("the scheduler still holds tasks")
        time.sleep(0.05)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_daskflow(client: Client, job, address: str, store: Path, folds: int) -> tuple[float, float]:
    """A first run into the empty ``store``, then the cached rerun; seconds of each."""
    flow_ = job.hpo_kfold.with_options(task_runner=DaskTaskRunner(address=address), result_storage=str(store))
    out = []
    for cached in (False, True):
        state = None

        def run() -> None:
            nonlocal state
            state = flow_(folds, 0, str(store), return_state=True)

        out.append(_timed(run))
        assert state.is_completed(), state
        assert state.run.cache_hits() == (len(state.run.task_runs) if cached else 0), (cached, state.run.cache_hits())
        _wait_idle(client)
    return out[0], out[1]


def measure_prefect(python: str, runner: str, address: str, results: Path, env: dict, log: str, folds: int,
                    server_pid: int) -> tuple[float, float]:
    """Prefect's first run into the empty ``results`` folder, then its cached rerun."""
    out = []
    for _ in range(2):
        vs_prefect.wait_until_idle(server_pid)  # the server catching up on the last run's events
        cmd = [python, PREFECT_HPO, "--runner", runner, "--address", address, "--results", str(results), "--folds", str(folds)]
        out.append(vs_prefect.run_child(cmd, env, timeout=1800, log_path=log)["seconds"])
    return out[0], out[1]


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}s" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--prefect-python", help="Python of the peers' virtualenv (benchmarks/requirements-peers.txt)")
    args = parser.parse_args()
    # SIGTERM ends the run like Ctrl-C: through the exit stack that stops every process
    # (the cluster's and the Prefect server's run in their own process groups).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    job = _load_example()
    times: dict[tuple[str, int], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="daskflow-hpo-bench-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        peers, why_not = vs_prefect.probe_prefect(args.prefect_python, tmp) if args.prefect_python else (None, vs_prefect.NOT_INSTALLED)
        server = None
        env = dict(os.environ)
        if peers:
            server = vs_prefect.PrefectServer(args.prefect_python, str(root / "prefect-home"), str(root / "prefect-server.log"))
            stack.callback(server.stop)
            server.start(180)
            env = vs_prefect.prefect_env(str(root / "prefect-home"), server.api_url)
            src = os.path.dirname(os.path.dirname(os.path.abspath(daskflow.__file__)))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        cluster_python = args.prefect_python if peers else sys.executable
        with dask.config.set({"daskflow.logging.console": False}):
            for workers in args.workers:
                cluster_dir = root / f"cluster-w{workers}"  # its own scheduler file: never a stale one's address
                cluster_dir.mkdir()
                with vs_prefect.start_cluster(cluster_python, env, str(cluster_dir), n_workers=workers) as cluster, Client(cluster) as client:
                    client.wait_for_workers(workers, timeout=120)
                    address = cluster.scheduler_address
                    raw_dask(client, job, args.folds, 0)  # warm: imports on the workers, the first pickles
                    _wait_idle(client)
                    row = times.setdefault(("daskflow", workers), {"raw": [], "first": [], "cached": []})
                    for repeat in range(args.repeats):
                        row["raw"].append(_timed(lambda: raw_dask(client, job, args.folds, 0)))
                        _wait_idle(client)
                        first, cached = measure_daskflow(client, job, address, root / f"w{workers}-r{repeat}", args.folds)
                        row["first"].append(first)
                        row["cached"].append(cached)
                    if peers and workers == max(args.workers):
                        for runner in ("thread", "dask"):
                            prow = times.setdefault((f"prefect-{runner}", workers), {"raw": [], "first": [], "cached": []})
                            for repeat in range(args.repeats):
                                first, cached = measure_prefect(args.prefect_python, runner, address, root / f"prefect-{runner}-{repeat}",
                                                                env, str(root / "prefect-runs.log"), args.folds, server.proc.pid)
                                prow["first"].append(first)
                                prow["cached"].append(cached)
                                _wait_idle(client)

    print(f"daskflow {daskflow.__version__} at {daskflow_revision()}, dask {dask.__version__}, distributed {distributed.__version__}, "
          f"Python {platform.python_version()}")
    print(f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}")
    print(f"peers: prefect {peers['prefect']}, prefect-dask {peers['prefect_dask']}" if peers else why_not)
    print(f"workload: {len(job.GRID)} settings x {args.folds} folds ({len(job.GRID) * args.folds * 2 + 4} task runs); "
          f"medians of {args.repeats}; W worker processes x 1 thread\n")
    print(f"{'path':<16} {'W':>2} {'raw Dask':>9} {'first run':>10} {'cached rerun':>13} {'first/raw':>10} {'cached/first':>13}  runs (raw; first; cached)")
    first_of: dict[tuple[str, int], float] = {}
    for (path, workers), row in times.items():
        first = statistics.median(row["first"])
        first_of[(path, workers)] = first
        cached = statistics.median(row["cached"])
        raw = statistics.median(row["raw"]) if row["raw"] else None
        ratio = f"{first / raw:>10.2f}" if raw else f"{'-':>10}"
        runs = "; ".join(", ".join(f"{t:.2f}" for t in row[k]) or "-" for k in ("raw", "first", "cached"))
        print(f"{path:<16} {workers:>2} {_median(row['raw']):>9} {first:>9.2f}s {cached:>12.2f}s {ratio} {cached / first:>13.3f}  {runs}")
    print()
    for (path, workers), row in times.items():
        if path == "daskflow":
            ratio = statistics.median(row["cached"]) / statistics.median(row["first"])
            print(f"target cached/first < {CACHED_TARGET:.2f} (daskflow, W={workers}): {'MET' if ratio < CACHED_TARGET else 'NOT MET'} ({ratio:.3f})")
    if ("daskflow", 1) in first_of and ("daskflow", 2) in first_of:
        speedup = first_of[("daskflow", 1)] / first_of[("daskflow", 2)]
        print(f"target 2 workers >= {SCALING_TARGET}x faster than 1 (daskflow first run): {'MET' if speedup >= SCALING_TARGET else 'NOT MET'} ({speedup:.2f}x)")


if __name__ == "__main__":  # the cluster starts worker processes: keep this guard
    main()
