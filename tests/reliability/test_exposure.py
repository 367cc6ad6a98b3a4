"""Network exposure (RELIABILITY.md scenario 18; issue 12 defect 9).

What daskflow starts listens on loopback only; the status page, its JSON
routes and, on a cluster daskflow starts, Dask's whole dashboard answer 403 to
a ``Host`` header that is not one of their own names (DNS rebinding), and their
websockets refuse pages from other origins. A cluster with TLS
(``Security.temporary()``, encryption required) handed to ``DaskTaskRunner``
runs flows and refuses plain-TCP and certificate-less clients.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import re
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import dask
import psutil
import pytest

from daskflow import DaskTaskRunner, SequentialTaskRunner, flow
from daskflow.storage import Store
from daskflow.storage.records import History

from ..conftest import daskflow_ui, stop_session, wait_until, worker_env
from ..tasks import add, block_until

pytestmark = pytest.mark.slow

EVIL = "evil.example"


def _status(port: int, path: str, host: str) -> int:
    """HTTP status of ``GET path`` on 127.0.0.1:``port`` sent with ``Host: host``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _upgrade(url: str, origin: str, host: str | None = None) -> int | None:
    """HTTP status of a websocket handshake from a page at ``origin`` (``None``: upgraded)."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    async def attempt() -> int | None:
        headers = {"Origin": origin, **({"Host": host} if host else {})}
        try:
            connection = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=20))
        except HTTPClientError as exc:
            return exc.code
        connection.close()
        return None

    return asyncio.run(attempt())


def _listeners(pids: list[int]) -> set[tuple[int, str, int]]:
    found = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found.update((pid, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN)
    return found


def _tree(pid: int) -> list[int]:
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def _routes(run_id: str) -> list[str]:
    return ["/daskflow", f"/daskflow?run={run_id}", "/daskflow/api/runs", f"/daskflow/api/runs/{run_id}",
            f"/daskflow/api/runs/{run_id}/logs", "/daskflow/api/deployments"]


# ---------------------------------------------- a flow on daskflow's own cluster


@flow  # every default: daskflow starts its own LocalCluster (worker processes)
def gated(marker_dir: str):
    return block_until(marker_dir, "gate")


def test_s18_a_default_flow_listens_on_loopback_and_answers_only_its_own_pages(tmp_path, caplog, scenario_report):
    me = os.getpid()
    before = _listeners(_tree(me))
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("state", gated(str(tmp_path), return_state=True)))
    with caplog.at_level(logging.INFO, logger="daskflow"):
        thread.start()
        try:
            wait_until(lambda: list(tmp_path.glob("gate.pid.*")), 120, message="the gated task running")
            line = wait_until(lambda: next((r.getMessage() for r in caplog.records if "status page:" in r.getMessage()), None), 30,
                              message="the status page link")
            match = re.search(r"http://127\.0\.0\.1:(\d+)/daskflow\?run=([0-9a-f]{32})", line)
            assert match, line
            port, run_id = int(match.group(1)), match.group(2)

            listening = _listeners(_tree(me)) - before
            assert len(listening) >= 3, listening  # scheduler, dashboard, each worker (and nanny)
            exposed = sorted(entry for entry in listening if not _loopback(entry[1]))

            own = f"127.0.0.1:{port}"
            pages = [*_routes(run_id), "/status", "/info/main/workers.html", "/individual-plots.json"]
            answered_foreign = [path for path in pages if _status(port, path, f"{EVIL}:{port}") != 403]
            refused_own = [(path, code) for path in pages if (code := _status(port, path, own)) != 200]
            assert _status(port, "/daskflow/api/runs", f"localhost:{port}") == 200
            assert _status(port, "/daskflow/api/runs", f"[::1]:{port}") == 200

            sockets = {"Dask /status": f"ws://127.0.0.1:{port}/status/ws", "daskflow /daskflow": f"ws://127.0.0.1:{port}/daskflow/ws"}
            foreign_upgrades = [name for name, url in sockets.items() if _upgrade(url, f"http://{EVIL}:{port}") != 403]
            own_refused = [name for name, url in sockets.items() if _upgrade(url, f"http://{own}") is not None]
            rebinding = _upgrade(sockets["Dask /status"], f"http://{EVIL}:{port}", host=f"{EVIL}:{port}")
        finally:
            (tmp_path / "gate.go").write_text("go")
            thread.join(120)
    assert outcome["state"].is_completed()
    assert exposed == []
    assert answered_foreign == [] and refused_own == []
    assert foreign_upgrades == [] and own_refused == [] and rebinding == 403
    scenario_report(
        18, "exposure: a flow on daskflow's own LocalCluster",
        f"non-loopback listeners {len(exposed)} of {len(listening)}; foreign-origin upgrades accepted "
        f"{len(foreign_upgrades)} of {len(sockets)}; foreign Host answered {len(answered_foreign)} of {len(pages)} routes",
        backend="local",
    )


# ------------------------------------------------- daskflow ui and daskflow serve


@flow(task_runner=SequentialTaskRunner())
def recorded(x: int = 1):
    return add(x)


def test_s18_daskflow_ui_and_serve_listen_on_loopback_and_refuse_foreign_hosts(tmp_path, _result_storage, scenario_report):
    run_id = recorded(return_state=True).run.id
    with daskflow_ui(_result_storage) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        ui_listening = _listeners(_tree(server.pid))
        pages = ["/", *_routes(run_id)]
        answered_foreign = [path for path in pages if _status(port, path, f"{EVIL}:{port}") != 403]
        answered_foreign += [path for path in pages if _status(port, path, EVIL) != 403]
        refused_own = [(path, code) for path in pages if (code := _status(port, path, f"127.0.0.1:{port}")) not in (200, 302)]
        refused_own += [(path, code) for path in pages if (code := _status(port, path, f"localhost:{port}")) not in (200, 302)]
        foreign_upgrade = _upgrade(f"ws://127.0.0.1:{port}/daskflow/ws", f"http://{EVIL}:{port}")
        rebinding = _upgrade(f"ws://127.0.0.1:{port}/daskflow/ws", f"http://{EVIL}:{port}", host=f"{EVIL}:{port}")
        own_upgrade = _upgrade(f"ws://127.0.0.1:{port}/daskflow/ws", f"http://localhost:{port}")
    assert ui_listening and not [e for e in ui_listening if not _loopback(e[1])], ui_listening
    assert answered_foreign == [] and refused_own == []
    assert foreign_upgrade == 403 and rebinding == 403 and own_upgrade is None

    # The serve loop without --address starts a LocalCluster of its own.
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "daskflow"), "serve", "--storage", str(_result_storage)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=worker_env(), start_new_session=True, cwd=tmp_path,
    )
    try:
        line = ""
        while "serving deployments" not in line:
            line = serve.stderr.readline()
            assert line or serve.poll() is None, "daskflow serve ended before serving"
        dash = int(re.search(r"http://127\.0\.0\.1:(\d+)/status", line).group(1))
        serve_listening = wait_until(lambda: (found := _listeners(_tree(serve.pid))) and len(found) >= 3 and found, 60,
                                     message="the serve loop's cluster listening")
        serve_foreign = _upgrade(f"ws://127.0.0.1:{dash}/status/ws", f"http://{EVIL}:{dash}")
        serve_host = _status(dash, "/status", f"{EVIL}:{dash}")
        serve_own = _status(dash, "/status", f"127.0.0.1:{dash}")
    finally:
        stop_session(serve, timeout=60)
    exposed = sorted(e for e in ui_listening | serve_listening if not _loopback(e[1]))
    assert exposed == []
    assert serve_foreign == 403 and serve_host == 403 and serve_own == 200
    scenario_report(
        18, "exposure: daskflow ui and daskflow serve",
        f"non-loopback listeners {len(exposed)} of {len(ui_listening | serve_listening)}; foreign-origin upgrades accepted 0 of 2; "
        f"foreign Host answered {len(answered_foreign)} of {2 * len(pages) + 1} requests",
        backend="local",
    )


def test_the_allowed_names_setting_opens_the_page_to_a_proxy(_result_storage):
    from daskflow.status.server import HistoryServer

    recorded(return_state=True)
    with dask.config.set({"daskflow.status.allow-websocket-origin": ["dash.example.org:443", "jupyter.example.org"]}):
        server = HistoryServer(History(Store(str(_result_storage))), port=0)
        server.start()
    try:
        port = server.port
        assert _status(port, "/daskflow/api/runs", "dash.example.org:443") == 200
        assert _status(port, "/daskflow/api/runs", "dash.example.org:444") == 200  # Host: names count, not ports
        assert _upgrade(f"ws://127.0.0.1:{port}/daskflow/ws", "https://dash.example.org:444") == 403  # origins: both
        assert _status(port, "/daskflow/api/runs", "localhost:9000") == 200  # a tunnel from another local port
        assert _status(port, "/daskflow/api/runs", "jupyter.example.org") == 200  # no port in the entry: any port
        assert _status(port, "/daskflow/api/runs", "jupyter.example.org:8888") == 200
        assert _status(port, "/daskflow/api/runs", f"{EVIL}:443") == 403
        assert _upgrade(f"ws://127.0.0.1:{port}/daskflow/ws", "https://dash.example.org:443") is None
    finally:
        server.stop()


# --------------------------------------------------------------------- TLS


def _identity(address: str, **connection_args) -> bool:
    """Whether a raw comm to ``address`` (no Dask client) gets the scheduler to answer ``identity``."""
    from distributed.comm import connect

    async def attempt() -> bool:
        try:
            comm = await connect(address, timeout="3s", **connection_args)
        except (OSError, TimeoutError):
            return False
        try:
            await comm.write({"op": "identity", "reply": True})
            reply = await asyncio.wait_for(comm.read(), 5)
            return isinstance(reply, dict) and reply.get("type") == "Scheduler"
        except (OSError, TimeoutError):
            return False
        finally:
            comm.abort()

    return asyncio.run(attempt())


def test_s18_a_tls_cluster_runs_flows_and_refuses_unauthenticated_clients(tmp_path, scenario_report):
    from distributed import LocalCluster
    from distributed.security import Security

    security = Security.temporary()
    assert security.require_encryption
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      security=security, dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")

        @flow(task_runner=DaskTaskRunner(address=address, client_kwargs={"security": security}))
        def over_tls(x: int = 2):
            return add(x)

        with dask.config.set({"daskflow.storage.url": str(tmp_path / "store")}):
            assert over_tls() == 3

        ca = ssl.create_default_context(cadata=security.tls_ca_file)
        ca.check_hostname = False  # Dask's certificates name "dask-internal", not the host
        other = Security.temporary()
        attempts = {
            "plain tcp://": (address.replace("tls://", "tcp://"), {}),
            "TLS without a client certificate": (address, {"ssl_context": ca}),
            "TLS with a certificate of another CA": (address, other.get_connection_args("client")),
        }
        accepted = [label for label, (where, args) in attempts.items() if _identity(where, **args)]
        # The probe itself works: with the cluster's own certificate the scheduler answers.
        assert _identity(address, **security.get_connection_args("client"))
    assert accepted == []
    scenario_report(
        18, "exposure: TLS cluster (Security.temporary, encryption required)",
        f"unauthenticated connects accepted {len(accepted)} of {len(attempts)}; a flow over TLS completed",
        backend="local",
    )
