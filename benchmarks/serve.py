"""The serve loop at scale: 1,000 deployments on a one-minute schedule, with the real clock.

One serve loop (in this process, so its CPU and memory are what this process
uses) fires every deployment's slot each minute against a real ``dask scheduler``
process. It prints, per measurement, p50/p95/max:

* **slot to submitted**: from a slot's time to its run being recorded
  ``Scheduled`` in the store and handed to the scheduler (what the loop itself
  controls; target p95 < 1 s). ``--deployments`` of them go to a work queue no
  worker serves, so the cluster only holds them, as a queue whose workers are
  busy would.
* **slot to started**: for ``--running`` more deployments on the default queue
  and ``--workers`` real ``dask worker`` processes, from the slot to the
  flow-run task starting on a worker, and to the flow itself Running (its run
  record's state history).
* **idle**: the loop process's CPU (user + system) and resident memory between
  bursts, from 10 s after each minute's slot to 5 s before the next (target CPU
  < 1 %).

Usage::

    python benchmarks/serve.py                      # 1,000 + 20 deployments, 3 minutes
    python benchmarks/serve.py --deployments 200 --minutes 1 --running 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLOW = '''
from daskflow import flow, task


@task
def add(x: int, y: int) -> int:
    return x + y


@flow
def tick(i: int = 0) -> int:
    return add(i, 1)
'''


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered):.3f} s  p95 {p95:.3f} s  max {ordered[-1]:.3f} s  (n={len(ordered)})"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=log.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=1000, help="deployments fired each minute (their runs wait on the cluster)")
    parser.add_argument("--running", type=int, default=20, help="deployments whose runs really execute each minute")
    parser.add_argument("--workers", type=int, default=2, help="dask worker processes for the running deployments")
    parser.add_argument("--minutes", type=int, default=3, help="minutes to measure")
    parser.add_argument("--folder", default=None, help="where the store and logs go (default: a temporary folder)")
    args = parser.parse_args()

    # SIGTERM (timeout, kill) unwinds like Ctrl-C: the cluster's processes are stopped below.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    folder = Path(args.folder or tempfile.mkdtemp(prefix="daskflow-serve-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    store_path = folder / "store"
    shutil.rmtree(store_path, ignore_errors=True)
    os.environ["DASK_DASKFLOW__DEPLOYMENTS__LATE_AFTER"] = "3600"  # no Late marks: they would land in the idle windows
    os.environ["DASK_DASKFLOW__LOGGING__CONSOLE"] = "false"

    import dask

    dask.config.refresh()
    from distributed import Client

    from daskflow import Store, deploy
    from daskflow.deployments.serve import Serve
    from daskflow.pipeline.entrypoints import load_flow
    from daskflow.storage.records import History

    dask_cli = shutil.which("dask", path=os.path.dirname(sys.executable)) or "dask"
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    procs = [_start([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                    folder / "scheduler.log")]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or "address" not in scheduler_file.read_text():
            if time.monotonic() > deadline:
                raise SystemExit("the scheduler did not start; see " + str(folder / "scheduler.log"))
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(args.workers):
            procs.append(_start([dask_cli, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                                folder / f"worker{i}.log"))
        (folder / "bench_flows.py").write_text(textwrap.dedent(FLOW))
        flow = load_flow(f"{folder / 'bench_flows.py'}:tick")
        store = Store(store_path)
        started = time.perf_counter()
        deployments = [flow.to_deployment(f"burst-{i}", interval=60, parameters={"i": i}, work_queue_name="waiting", version="bench")
                       for i in range(args.deployments)]
        deployments += [flow.to_deployment(f"run-{i}", interval=60, parameters={"i": i}, version="bench") for i in range(args.running)]
        deploy(*deployments, storage=store)
        print(f"registered {len(deployments)} deployments in {time.perf_counter() - started:.2f} s")

        with Client(address, set_as_default=False) as client:
            client.wait_for_workers(args.workers, timeout=60)
            loop = Serve(store, client, notifier=False)
            submitted: dict[str, float] = {}
            started_at: dict[str, float] = {}
            original_submit, original_topic = loop._submit, loop._on_topic

            def timed_submit(requests):  # instrumentation only: the loop's own code does the work
                original_submit(requests)
                now = time.time()
                for request in requests:
                    submitted.setdefault(request.run_id, now)

            def timed_topic(event):
                message = event[1]
                if isinstance(message, dict) and message.get("ev") == "started":
                    started_at.setdefault(message["run"], float(message["t"]))
                original_topic(event)

            loop._submit = timed_submit
            loop._on_topic = timed_topic
            thread = threading.Thread(target=loop.run, name="serve")
            thread.start()
            first_slot = (int(time.time()) // 60 + 1) * 60
            print(f"first slot at {time.strftime('%H:%M:%S', time.localtime(first_slot))}; measuring {args.minutes} minute(s)")
            idle: list[tuple[float, float]] = []
            rss: list[float] = []
            for minute in range(args.minutes):
                slot = first_slot + 60 * minute
                time.sleep(max(0.0, slot + 10 - time.time()))
                cpu0, wall0 = _cpu_seconds(), time.time()
                time.sleep(max(0.0, slot + 55 - time.time()))
                idle.append((_cpu_seconds() - cpu0, time.time() - wall0))
                rss.append(_rss_mb())
                print(f"  minute {minute + 1}: {len(submitted)} runs submitted so far, idle CPU {100 * idle[-1][0] / idle[-1][1]:.2f} %, RSS {rss[-1]:.0f} MB")
            time.sleep(max(0.0, first_slot + 60 * args.minutes + 2 - time.time()))
            loop.stop()
            thread.join()
            by_id = {r.run_id: r for r in loop.created}
            lags = {i: submitted[i] - by_id[i].scheduled_time for i in submitted if i in by_id}
            fire_lag = list(lags.values())
            burst = [lag for i, lag in lags.items() if by_id[i].queue == "waiting"]
            start_lag = [started_at[i] - by_id[i].scheduled_time for i in started_at if i in by_id]
            deadline = time.monotonic() + 120
            running_lag = []
            while time.monotonic() < deadline:
                records = [r for r in History(store).runs(limit=None) if r.get("deployment_name", "").startswith("run-")]
                done = [r for r in records if r["state"]["type"] == "COMPLETED"]
                if len(done) >= args.running * args.minutes:
                    break
                time.sleep(1)
            for record in done:
                running = next((s["timestamp"] for s in record["state_history"] if s["name"] == "Running"), None)
                if running is not None:
                    running_lag.append(running - record["scheduled_time"])
        cpu = [100 * c / w for c, w in idle]
        print()
        print(f"serve loop, {args.deployments} + {args.running} deployments every minute, {args.minutes} minute(s), {os.cpu_count()} CPUs")
        print(f"  slot to submitted (all runs):       {_percentiles(fire_lag)}")
        print(f"  slot to submitted ({args.deployments} burst runs): {_percentiles(burst)}")
        print(f"  slot to started on a worker:        {_percentiles(start_lag)}")
        print(f"  slot to the flow Running:           {_percentiles(running_lag)}  ({len(done)} runs completed)")
        print(f"  idle CPU of the loop's process:     mean {statistics.mean(cpu):.2f} %  max {max(cpu):.2f} %")
        print(f"  resident memory:                    {rss[0]:.0f} MB after minute 1, {rss[-1]:.0f} MB after minute {args.minutes}")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
