"""The status page's plugin and routes on real schedulers (no browser: see test_status_page).

Pages are fetched over HTTP from the scheduler's own dashboard port; the
websocket checks open a real websocket with a foreign ``Origin``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from daskflow import DaskTaskRunner, flow
from daskflow.cli import cli
from daskflow.status.feed import status_link

from .conftest import REPO, DaskCLICluster, daskflow_ui, wait_until, worker_env
from .tasks import add, block_until, fail

pytestmark = pytest.mark.slow


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def _api(base: str, path: str = "/runs") -> dict:
    status, kind, body = _get(f"{base}/daskflow/api{path}")
    assert status == 200, body
    assert kind.startswith("application/json")
    return json.loads(body)


def _ws_status(url: str, origin: str) -> int | None:
    """HTTP status of a websocket handshake from a page at ``origin`` (``None``: upgraded)."""
    import asyncio

    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    async def attempt() -> int | None:
        request = HTTPRequest(url, headers={"Origin": origin})
        try:
            connection = await websocket_connect(request)
        except HTTPClientError as exc:
            return exc.code
        connection.close()
        return None

    return asyncio.run(attempt())


def _running(flow_, gate: Path):
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("state", flow_(return_state=True)))
    thread.start()
    return thread, outcome


def test_an_own_local_cluster_serves_the_page_with_the_run_while_it_goes(tmp_path, caplog):
    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 2, "processes": False,
                                                     "dashboard_address": "127.0.0.1:0"}))
    def gated():
        return add(1, 2), block_until(str(tmp_path), "b")

    with caplog.at_level(logging.INFO, logger="daskflow"):
        thread, outcome = _running(gated, tmp_path)
        try:
            line = wait_until(lambda: next((r.getMessage() for r in caplog.records if "status page:" in r.getMessage()), None), 60,
                              message="the status page link in the run's log")
            link = line.split("status page: ")[1]
            base = link.split("/daskflow")[0]
            assert link.startswith("http://127.0.0.1:") and re.search(r"/daskflow\?run=[0-9a-f]{32}$", link)
            status, kind, body = _get(f"{base}/daskflow")
            assert status == 200 and kind.startswith("text/html") and "bokeh" in body.lower()

            def running():
                runs = _api(base)["runs"]
                return runs if runs and runs[0]["task_counts"].get("Running") == 1 else None

            runs = wait_until(running, 60, message="the run on the page with its task running")
            assert runs[0]["state"]["name"] == "Running" and runs[0]["flow_name"] == "gated"
            detail = _api(base, f"/runs/{runs[0]['id'][:8]}")
            assert {t["name"]: t["state"]["name"] for t in detail["tasks"]} == {"add-0": "Completed", "block_until-0": "Running"}
        finally:
            (tmp_path / "b.go").write_text("go")
            thread.join(60)
    assert outcome["state"].is_completed()


def test_a_separate_dask_scheduler_serves_the_page_once_a_client_registers_the_plugin(tmp_path, _result_storage):
    cluster = DaskCLICluster(tmp_path, workers=((),), dashboard=True)
    try:
        status, _, _ = _get(f"{cluster.dashboard}/daskflow")
        assert status == 404  # nothing until a driver registers the plugin

        @flow(task_runner=DaskTaskRunner(address=cluster.address))
        def mixed(x: int = 1):
            first = add(x, 1)
            broken = fail.submit("fold 3 diverged")
            broken.wait()
            return first

        state = mixed(return_state=True)
        assert state.is_completed()
        run = state.run
        assert run.status_link == status_link(f"{cluster.dashboard}/status", run.id)
        status, kind, body = _get(f"{cluster.dashboard}/daskflow")
        assert status == 200 and kind.startswith("text/html")
        runs = _api(cluster.dashboard)["runs"]
        assert [(r["id"], r["state"]["name"]) for r in runs] == [(run.id, "Completed")]  # the final state was pushed
        assert runs[0]["task_counts"] == {"Completed": 1, "Failed": 1}
        detail = _api(cluster.dashboard, f"/runs/{run.name}")
        failed = next(t for t in detail["tasks"] if t["name"] == "fail-0")
        assert "fold 3 diverged" in failed["traceback"] and "Traceback" in failed["traceback"]
        assert failed["worker"].startswith("tcp://127.0.0.1:")  # where it failed, not only where tasks succeed
        assert _api(cluster.dashboard, "/runs?state=failed")["runs"] == []
        assert _api(cluster.dashboard, "/runs?flow=mixed&since=1h")["runs"][0]["id"] == run.id
        status, _, body = _get(f"{cluster.dashboard}/daskflow/api/runs?since=yesterday")
        assert status == 400 and "neither an age" in json.loads(body)["error"]
        status, _, body = _get(f"{cluster.dashboard}/daskflow/api/runs/{'f' * 12}")
        assert status == 404 and "no live run" in json.loads(body)["error"]
        # The page's websocket takes the dashboard's own loopback origin, not another site's.
        ws = f"ws://127.0.0.1:{cluster.dashboard.rsplit(':', 1)[1]}/daskflow/ws"
        assert _ws_status(ws, "http://evil.example") == 403
        assert _ws_status(ws, cluster.dashboard) is None
        # `daskflow run --address`: the scheduler outlives the run, so its summary gives the
        # page's live link (not only "daskflow ui"), and the link works after the run.
        (tmp_path / "tiny.py").write_text("from daskflow import flow\n\n@flow\ndef tiny(x: int = 1) -> int:\n    return x\n")
        ran = CliRunner().invoke(cli, ["run", f"{tmp_path / 'tiny.py'}:tiny", "--address", cluster.address])
        assert ran.exit_code == 0, ran.output
        (live,) = [line.split()[1] for line in ran.stdout.splitlines() if line.endswith("(live on the scheduler)")]
        assert live.startswith(f"{cluster.dashboard}/daskflow?run=")
        assert _get(live)[0] == 200
    finally:
        cluster.close()


def test_preload_installs_the_page_when_the_scheduler_starts(tmp_path, _result_storage):
    cluster = DaskCLICluster(tmp_path, workers=((),), dashboard=True, scheduler_args=("--preload", "daskflow.status"))
    try:
        assert _api(cluster.dashboard)["runs"] == []  # served before any client connected

        @flow(task_runner=DaskTaskRunner(address=cluster.address))
        def tiny():
            return add(2, 3)

        state = tiny(return_state=True)
        assert state.result() == 5
        assert [r["id"] for r in _api(cluster.dashboard)["runs"]] == [state.run.id]
        assert "Traceback" not in cluster.log()  # one plugin, started once: register_plugin was a no-op
    finally:
        cluster.close()


def test_a_scheduler_that_refuses_plugins_costs_a_warning_not_the_run(tmp_path, _result_storage, caplog):
    blocked = {"DASK_DISTRIBUTED__SCHEDULER__BLOCKED_HANDLERS": '["register_scheduler_plugin"]'}
    cluster = DaskCLICluster(tmp_path, workers=((),), dashboard=True, scheduler_env=blocked)
    try:
        @flow(task_runner=DaskTaskRunner(address=cluster.address))
        def plain():
            return add(1, 1)

        with caplog.at_level(logging.WARNING, logger="daskflow"):
            state = plain(return_state=True)
        assert state.result() == 2 and state.run.status_link is None
        warning = next(r.getMessage() for r in caplog.records if "status page is not available" in r.getMessage())
        assert "--preload daskflow.status" in warning and "register_scheduler_plugin" in warning
        assert _get(f"{cluster.dashboard}/daskflow")[0] == 404
    finally:
        cluster.close()


_DRIVER = """
import sys
from daskflow import flow, DaskTaskRunner
sys.path.insert(0, sys.argv[3])
from tests.tasks import block_until

@flow(task_runner=DaskTaskRunner(address=sys.argv[1]))
def stuck(gate: str):
    return block_until(gate, "never", 600)

stuck(sys.argv[2])
"""


def test_a_run_whose_driver_is_killed_shows_crashed_on_the_page(tmp_path):
    cluster = DaskCLICluster(tmp_path, workers=((),), dashboard=True)
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, cluster.address, str(tmp_path), str(REPO)], env=worker_env(),
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def running():
            runs = _get(f"{cluster.dashboard}/daskflow/api/runs")
            if runs[0] != 200:
                return None
            found = json.loads(runs[2])["runs"]
            return found if found and found[0]["task_counts"].get("Running") == 1 else None

        run_id = wait_until(running, 90, message="the driver's run on the page")[0]["id"]
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
        record = wait_until(lambda: (r := _api(cluster.dashboard, f"/runs/{run_id}")["run"])["state"]["name"] == "Crashed" and r,
                            60, message="the run shown Crashed")
        assert "driver disconnected" in record["state"]["message"]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(30)
        cluster.close()


def test_daskflow_ui_serves_stored_history_on_loopback_only(tmp_path, _result_storage):
    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False, "dashboard_address": "127.0.0.1:0"}))
    def secretive(token: SecretStr, x: int = 2):
        return add(x, 1)

    canary = "canary-5b1e7c2f9d"
    state = secretive(SecretStr(canary), return_state=True)
    assert state.result() == 3
    with daskflow_ui(_result_storage) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        listening = {c.laddr for c in psutil.Process(server.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
        assert _get(base)[0] == 200  # / redirects to the page
        runs = _api(base)["runs"]
        assert [(r["id"], r["state"]["name"]) for r in runs] == [(state.run.id, "Completed")]
        detail = _api(base, f"/runs/{state.run.id[:8]}")
        assert [t["name"] for t in detail["tasks"]] == ["add-0"]
        page = _get(f"{base}/daskflow?run={state.run.id}")[2]
        everything = json.dumps(runs) + json.dumps(detail) + page
        assert canary not in everything and "**********" in json.dumps(runs)
        assert _ws_status(f"ws://127.0.0.1:{port}/daskflow/ws", "http://evil.example") == 403
        assert _ws_status(f"ws://127.0.0.1:{port}/daskflow/ws", f"http://localhost:{port}") is None
    assert server.returncode in (0, -signal.SIGINT), server.stderr.read()
