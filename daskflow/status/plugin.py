"""The scheduler side: a ``SchedulerPlugin`` that holds live runs and serves ``/daskflow``.

On ``start`` the plugin registers the ``daskflow_status`` RPC its drivers push
to (see :mod:`daskflow.status.feed`) and adds, once per scheduler, a Bokeh app
at ``/daskflow`` and the JSON routes at ``/daskflow/api/...`` to the dashboard's
HTTP server (the way is in ``DASK_NOTES.md`` section 1). Routes cannot be
removed from a running server, so they look the plugin up by name on every
request: a plugin registered again, or after an unregister, takes over.

The page's websocket accepts only loopback origins on the dashboard's port
(plus the host the dashboard is bound to, and ``daskflow.status.allow-websocket-origin``),
where Dask's own pages accept any origin by default; the page and its JSON routes
answer 403 to a ``Host`` header naming anything else (see :mod:`daskflow.status.origins`).
"""

from __future__ import annotations

import logging
from typing import Any

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin

from ..runners.dask import REPORT_TOPIC, bound_hosts
from .api import api_routes
from .origins import allowed_origins, extra_origins, install_host_check
from .sources import LiveSource
from .state import LiveRuns

__all__ = ["PLUGIN_NAME", "ROUTE", "StatusPlugin", "allowed_origins", "install_pages"]

logger = logging.getLogger("daskflow.status")

PLUGIN_NAME = "daskflow-status"
ROUTE = "/daskflow"
UPDATE_HANDLER = "daskflow_status"


class StatusPlugin(SchedulerPlugin):
    """Keeps the live state of flow runs and serves the status page.

    Installed by the Dask runner from its client (``client.register_plugin``),
    or at scheduler start with ``dask scheduler --preload daskflow.status``.
    """

    name = PLUGIN_NAME
    idempotent = True  # a second register_plugin() (another driver) is a no-op

    def __init__(self) -> None:
        self.runs: LiveRuns | None = None
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.runs = LiveRuns(
            max_runs=int(dask.config.get("daskflow.status.max-runs", 500)),
            max_log_lines=int(dask.config.get("daskflow.status.max-log-lines", 10_000)),
            max_task_runs=int(dask.config.get("daskflow.status.max-task-runs", 200_000)),
            max_deployments=int(dask.config.get("daskflow.status.max-deployments", 5_000)),
        )
        scheduler.handlers[UPDATE_HANDLER] = self.update
        install_pages(scheduler)

    def update(self, batch: dict[str, Any], driver: str | None = None) -> None:
        """The RPC drivers and serve loops push batches to (on the scheduler's event loop).

        ``driver`` is the pushing driver's client id; a serve loop pushes with
        none (see :meth:`LiveRuns.update` for the batches).
        """
        assert self.runs is not None
        self.runs.update(batch, client=driver)

    def remove_client(self, scheduler: Any, client: str) -> None:
        if self.runs is not None:
            for run_id in self.runs.client_gone(client):
                logger.warning("flow run %s: its driver (client %s) disconnected before the run ended; shown Crashed", run_id, client)

    def send_cancel(self, run_id: str, reason: str) -> None:
        """Ask a run's driver to cancel it (it listens on the report topic)."""
        self.scheduler.log_event(REPORT_TOPIC, {"ev": "cancel", "fr": run_id, "reason": reason})


def _plugin(scheduler: Any) -> StatusPlugin | None:
    plugin = scheduler.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, StatusPlugin) and plugin.runs is not None else None


def _live_source(scheduler: Any) -> LiveSource | None:
    if _plugin(scheduler) is None:
        return None

    def runs() -> LiveRuns:
        plugin = _plugin(scheduler)
        if plugin is None or plugin.runs is None:
            return LiveRuns()  # unregistered since the page opened: show nothing
        return plugin.runs

    def send_cancel(run_id: str, reason: str) -> None:
        plugin = _plugin(scheduler)
        if plugin is not None:
            plugin.send_cancel(run_id, reason)

    return LiveSource(runs, send_cancel, label=f"live on the Dask scheduler {scheduler.address}")


def install_pages(scheduler: Any, route: str = ROUTE) -> bool:
    """Add ``route`` (Bokeh) and ``route/api/...`` (JSON) to the scheduler's HTTP server.

    Returns whether the Bokeh page is there (the JSON routes need only tornado).
    Safe to call again: routes already installed are kept.
    """
    app = getattr(scheduler, "http_application", None)
    if app is None:
        logger.warning("the scheduler has no HTTP server; the daskflow status page is not served")
        return False
    if getattr(app, "_daskflow_status_installed", False):
        return True
    dashboard = next((a for a in app.applications if type(a).__name__.endswith("BokehTornado")), None)
    prefix = getattr(dashboard, "prefix", "") or ""
    full_route = prefix.rstrip("/") + route
    origins = allowed_origins(scheduler.http_server.port, bound_hosts(scheduler.http_server), extra_origins())
    # First: a request under the route with a foreign Host header (DNS rebinding) gets 403.
    install_host_check(app, full_route, origins)
    app.add_handlers(r".*", api_routes(full_route, lambda: _live_source(scheduler)))
    app._daskflow_status_installed = True
    try:
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import BokehTornado
        from tornado.ioloop import IOLoop

        from .page import status_document
    except ImportError as exc:
        logger.warning("bokeh is not importable on the scheduler (%s); only the JSON routes at %s/api are served", exc, full_route)
        return False
    settings = dict(dask.config.get("distributed.scheduler.dashboard.bokeh-application"))
    settings.pop("allow_websocket_origin", None)  # Dask's default is "*": not for a page with a cancel button

    def source() -> LiveSource:
        live = _live_source(scheduler)
        if live is None:
            return LiveSource(LiveRuns, lambda run_id, reason: None, label="the daskflow status plugin is not running")
        return live

    bokeh_app = BokehTornado(
        {route: Application(FunctionHandler(status_document(source, prefix)))},
        prefix=prefix,
        use_index=False,
        redirect_root=False,
        extra_websocket_origins=origins,
        absolute_url="",
        **settings,
    )
    app.add_application(bokeh_app)  # RoutingApplication falls through to it
    bokeh_app.initialize(IOLoop.current())
    bokeh_app.start()
    logger.debug("daskflow status page at %s on the dashboard port %s", full_route, scheduler.http_server.port)
    return True
