"""``daskflow ui``: the status page served from stored history, no cluster needed."""

from __future__ import annotations

import threading
from typing import Any

from tornado import web
from tornado.ioloop import IOLoop

from ..storage.records import History
from .api import api_routes
from .origins import allowed_origins, extra_origins, install_host_check
from .plugin import ROUTE
from .sources import HistorySource

__all__ = ["HistoryServer"]


class HistoryServer:
    """A Bokeh server with the status page (and its JSON routes) over a store's history.

    Parameters
    ----------
    history : History
        The run history to show.
    host : str
        Address to listen on. Default loopback: anyone who can reach the page can
        read run records and cancel runs. Requests must name this address (or
        a loopback name) in their ``Host`` header, or an entry of
        ``daskflow.status.allow-websocket-origin``; others get 403.
    port : int
        Port; 0 picks a free one (see :attr:`port`).
    poll_interval : float
        Seconds between checks for new runs and for changes of a running one.
    """

    def __init__(self, history: History, host: str = "127.0.0.1", port: int = 8788, poll_interval: float = 2.0) -> None:
        self.history = history
        self.host = host
        self.source = HistorySource(history, poll_interval)
        from bokeh.server.util import bind_sockets

        # Bound here, before the app exists, so the websocket allowlist names the real port.
        self._sockets, self.port = bind_sockets(host, port)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._loop: IOLoop | None = None

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{ROUTE}"

    def _build(self) -> None:
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import BaseServer
        from bokeh.server.tornado import BokehTornado
        from tornado.httpserver import HTTPServer

        from .page import status_document

        source = self.source
        origins = allowed_origins(self.port, [self.host], extra_origins())
        app = BokehTornado(
            {ROUTE: Application(FunctionHandler(status_document(lambda: source)))},
            extra_patterns=[*api_routes(ROUTE, lambda: source), (r"/?", web.RedirectHandler, {"url": ROUTE, "permanent": False})],
            extra_websocket_origins=origins,
            use_index=False,
            redirect_root=False,
        )
        # Every route, the page's and the JSON ones: a foreign Host header gets 403 (DNS rebinding).
        install_host_check(app, "", origins)
        http = HTTPServer(app)
        http.add_sockets(self._sockets)
        self._server = BaseServer(IOLoop.current(), app, http)
        self._server.start()

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (Ctrl-C)."""
        loop = IOLoop.current()
        self._loop = loop
        loop.add_callback(self._build)
        try:
            loop.start()
        finally:
            self._close()

    def start(self) -> None:
        """Serve on a background thread (tests, notebooks); :meth:`stop` ends it."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            import asyncio

            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = IOLoop.current()
            try:
                self._build()
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            try:
                self._loop.start()
            finally:
                self._close()
                self._loop.close(all_fds=False)

        self._thread = threading.Thread(target=run, name="daskflow-ui", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None:
            loop.add_callback(loop.stop)
        if thread is not None:
            thread.join(30)
            self._thread = None

    def _close(self) -> None:
        if self._server is not None:
            self._server.stop(wait=False)
            self._server.unlisten()
            self._server = None
