"""How fast the status page shows a run of 10,000 task runs, in a real browser.

Builds one real flow run of ``--tasks`` no-op mapped task runs plus a fan-in
(default 10,000 + 1), twice:

* **stored**: on SequentialTaskRunner into a temporary store, then served by
  ``daskflow ui`` (a separate process, as a user runs it);
* **live**: on a LocalCluster (2 workers x 2 threads, in-process) through
  ``DaskTaskRunner(address=...)``, so the scheduler's plugin holds the run and
  serves it at ``/daskflow`` on the dashboard port.

Then, in headless Chromium (Debian's ``chromium``, driven by playwright, as the
tests do), times the median of ``--repeats`` fresh page loads of:

* the run view, ``/daskflow?run=ID``: from navigation until the header names
  the run, the task table has drawn its rows and the graph has its note (all
  10,001 task runs in the table, the timeline and graph aggregated);
* the runs table, ``/daskflow``;
* the baseline in the same run and browser: Dask's own dashboard page
  ``/status`` on the same scheduler, until Bokeh reports the document idle.

It also times building the run view's column data in Python (what the server
does per load). The target (from the issue): the run view under 2 s.

Needs the test extras (``pip install -e '.[test]'``: playwright) and Chromium
(``apt-get install chromium``). Run from the repository root::

    python benchmarks/status_page.py                  # 10,000 tasks, 5 repeats
    python benchmarks/status_page.py --tasks 1000 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import dask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from history import wide  # noqa: E402  (the same 10,000-task flow history.py measures)
from machine import cpu_model, daskflow_revision  # noqa: E402

import daskflow  # noqa: E402
from daskflow import DaskTaskRunner  # noqa: E402
from daskflow.status import charts  # noqa: E402

TARGET_SECONDS = 2.0
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _chromium() -> str:
    path = os.environ.get("DASKFLOW_CHROMIUM") or next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if not path:
        sys.exit("needs Chromium: apt-get install chromium (or set DASKFLOW_CHROMIUM)")
    return path


def _run_view_ready(page, run_name: str) -> None:
    page.locator(".daskflow-run-header", has_text=run_name).wait_for()
    page.locator(".daskflow-tasks .slick-row").first.wait_for()
    page.locator(".daskflow-graph-note", has_text="task runs").wait_for(state="attached")  # on a hidden tab


def _timed_loads(browser, url: str, ready, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        start = time.perf_counter()
        page.goto(url)
        ready(page)
        times.append(time.perf_counter() - start)
        context.close()
    return times


def _dask_idle(page) -> None:
    # Bokeh logs "document idle" once every root has rendered; is_idle is that flag.
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle")


def _line(label: str, times: list[float], target: bool) -> str:
    median = statistics.median(times)
    verdict = ("PASS" if median < TARGET_SECONDS else "FAIL") if target else ""
    return f"{label:<52} {median:>7.2f}s {min(times):>7.2f}s {max(times):>7.2f}s  {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="mapped task runs of the run (default 10,000)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from distributed import LocalCluster
    from playwright.sync_api import sync_playwright

    root = tempfile.mkdtemp(prefix="daskflow-status-bench-")
    store = os.path.join(root, "store")
    exe = shutil.which("daskflow", path=os.path.dirname(sys.executable)) or "daskflow"
    ui = None
    try:
        with dask.config.set({"daskflow.storage.url": store, "daskflow.logging.console": False}):
            stored_flow = wide.with_options(name="wide-stored")  # history.py's run: SequentialTaskRunner, nothing persisted
            stored = stored_flow(args.tasks, return_state=True)
            assert stored.is_completed(), stored
            cluster = LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0",
                                   worker_dashboard_address="127.0.0.1:0")
            live_flow = wide.with_options(name="wide-live", task_runner=DaskTaskRunner(address=cluster.scheduler_address))
            start = time.perf_counter()
            live = live_flow(args.tasks, return_state=True)
            live_seconds = time.perf_counter() - start
            assert live.is_completed(), live
        dashboard = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"

        from daskflow.storage import Store
        from daskflow.storage.records import History

        history = History(Store(store))
        tasks = history.tasks(history.resolve(stored.run.id))
        build = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            charts.task_table(tasks)
            charts.timeline(tasks)
            graph = charts.dependency_graph(tasks)
            build.append(time.perf_counter() - start)
        assert len(tasks) == args.tasks + 1 and graph.aggregated == (len(tasks) > charts.GRAPH_GROUP_AT)

        ui = subprocess.Popen([exe, "ui", "--storage", store, "--port", "0"], stderr=subprocess.PIPE, text=True, start_new_session=True)
        match = re.search(r"(http://127\.0\.0\.1:\d+)/daskflow", ui.stderr.readline())
        if not match:
            sys.exit("daskflow ui did not start")
        ui_base = match.group(1)
        # Drain its log so a full pipe never stalls it.
        threading.Thread(target=lambda: ui.stderr.read(), daemon=True).start()

        print(f"daskflow {daskflow.__version__} at {daskflow_revision()}, dask {dask.__version__}, Python {platform.python_version()}")
        print(f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}")
        print(f"a run of {args.tasks + 1} task runs; the live one took {live_seconds:.1f} s on the LocalCluster")
        print(f"medians of {args.repeats} fresh page loads in headless Chromium; target: run view < {TARGET_SECONDS:g} s\n")
        print(f"{'measurement':<52} {'median':>8} {'min':>8} {'max':>8}  target")
        print(_line(f"build the run view's data in Python ({args.tasks + 1} tasks)", build, False))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
            try:
                rows = [
                    ("live: /daskflow runs table", f"{dashboard}/daskflow", lambda pg: pg.locator(".daskflow-runs .slick-row").first.wait_for(), False),
                    ("live: /daskflow?run= run view", f"{dashboard}/daskflow?run={live.run.id}", lambda pg: _run_view_ready(pg, live.run.name), True),
                    ("daskflow ui: runs table", f"{ui_base}/daskflow", lambda pg: pg.locator(".daskflow-runs .slick-row").first.wait_for(), False),
                    ("daskflow ui: run view", f"{ui_base}/daskflow?run={stored.run.id}", lambda pg: _run_view_ready(pg, stored.run.name), True),
                    # Last: the sessions of Dask's own page keep their many periodic
                    # callbacks running on the scheduler for a while after the tab closes.
                    ("Dask's own /status page (baseline)", f"{dashboard}/status", _dask_idle, False),
                ]
                for label, url, ready, target in rows:
                    _timed_loads(browser, url, ready, 1)  # warm: the server's first session imports its page code
                    print(_line(label, _timed_loads(browser, url, ready, args.repeats), target))
            finally:
                browser.close()
        cluster.close()
    finally:
        if ui is not None and ui.poll() is None:
            os.killpg(ui.pid, signal.SIGINT)
            ui.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
