"""Who may talk to the pages: allowed websocket origins and ``Host`` headers.

A page on another site cannot read a loopback server's replies, unless its
own name resolves to 127.0.0.1 (DNS rebinding): then the browser sends the
foreign name in the ``Host`` header. So every route of the status page, and of
the Dask dashboard of a cluster daskflow starts, answers 403 to a ``Host`` that
is not one of the names the server is reached by: loopback names on its port,
the address it is bound to (this machine's names when bound to all
interfaces), and the entries of ``daskflow.status.allow-websocket-origin``
(``host:port``, ``host`` for any port, ``*`` for any host), which also list the
origins whose pages may open the websockets. The ``Host`` check compares
names only; a websocket origin must match its port too.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import dask.config

__all__ = [
    "allowed_origins",
    "extra_origins",
    "host_allowed",
    "install_host_check",
    "loopback_dashboard_config",
    "narrow_dashboard",
]

#: Dask's setting for its dashboard's websocket origins (default ``["*"]``: any site).
DASK_ORIGINS = "distributed.scheduler.dashboard.bokeh-application.allow_websocket_origin"


def extra_origins() -> list[str]:
    """``daskflow.status.allow-websocket-origin``: more allowed ``host:port`` names."""
    value = dask.config.get("daskflow.status.allow-websocket-origin", []) or []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def allowed_origins(port: int, bound_hosts: Iterable[str] = (), extra: Iterable[str] | None = None) -> list[str]:
    """``host:port`` names a server on ``port`` is reached by: the websocket
    origins its pages may come from and the ``Host`` headers it answers.

    Loopback names on ``port``; a specific address the server is bound to; for
    a server on all interfaces (``0.0.0.0``, the user's explicit choice) this
    machine's names and addresses; then ``extra``.
    """
    hosts = {"127.0.0.1", "localhost", "[::1]"}
    for host in bound_hosts:
        if host in ("0.0.0.0", "::", ""):
            hosts.update(_machine_names())
        elif host not in ("127.0.0.1", "::1"):
            hosts.add(f"[{host}]" if ":" in host else host)
    origins = sorted(f"{host}:{port}" for host in hosts)
    for origin in extra or ():
        if origin and origin not in origins:
            origins.append(str(origin))
    return origins


def _machine_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    with contextlib.suppress(OSError):
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    return {n.lower() for n in names if n}


def _split(host: str) -> tuple[str, str | None]:
    """``("name", "port")`` of ``name:port``, ``[v6]:port`` or a bare name (port ``None``)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, None


def host_allowed(host: str | None, allowed: Collection[str]) -> bool:
    """Whether a request's ``Host`` header names this server (see the module docstring).

    Names are compared, not ports: a rebinding site can only send its own name,
    and a tunnel to the page from another local port (``ssh -L 9000:...``)
    still works.
    """
    if "*" in allowed:
        return True
    if not host:
        return False  # HTTP/1.1 requires the header; only a hand-made request lacks it
    name = _split(host)[0]
    return any(_split(entry)[0] == name for entry in allowed)


def install_host_check(app: Any, prefix: str, allowed: Collection[str]) -> None:
    """Make the tornado application ``app`` answer 403 to every request under
    ``prefix`` (``""``: all) whose ``Host`` header is not ``allowed``.

    The rule goes first in the application's router, so it is consulted before
    any route (and before the Bokeh applications a Dask dashboard falls through to).
    """
    from tornado.routing import Matcher, Rule
    from tornado.web import RequestHandler

    allowed = frozenset(allowed)
    prefix = prefix.rstrip("/")

    class ForeignHost(Matcher):
        def match(self, request: Any) -> dict[str, Any] | None:
            path = request.path or "/"
            under = not prefix or path == prefix or path.startswith(prefix + "/")
            return {} if under and not host_allowed(request.host, allowed) else None

    class Forbidden(RequestHandler):
        def prepare(self) -> None:
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(
                "403: this server does not answer for the Host header sent. Open it by the address it listens on "
                "(http://127.0.0.1:<port>), or add the name to daskflow.status.allow-websocket-origin\n"
            )

        def check_xsrf_cookie(self) -> None:  # the request is refused anyway
            return None

    app.default_router.rules.insert(0, Rule(ForeignHost(), Forbidden))


@contextlib.contextmanager
def loopback_dashboard_config(port: int | None) -> Iterator[bool]:
    """While a cluster starts: Dask's dashboard websockets take loopback origins
    on ``port`` only, where Dask's default takes any site's. Yields whether it
    did: a user's own setting (anything but Dask's ``["*"]``) is kept."""
    current = dask.config.get(DASK_ORIGINS, ["*"])
    if list(current or []) != ["*"]:
        yield False
        return
    with dask.config.set({DASK_ORIGINS: [f"127.0.0.1:{port or 0}", f"localhost:{port or 0}"]}):
        yield True


def narrow_dashboard(scheduler: Any, bound_hosts: Iterable[str], *, websockets: bool = True) -> list[str] | None:
    """Limit the dashboard of a scheduler daskflow started (in this process) to
    its own names: on every route the ``Host`` header and, with ``websockets``,
    its Bokeh apps' websocket origins. Returns the allowed names (``None``: no
    dashboard).

    The origins are set once the port is known (a dashboard asked for port 0,
    or moved off a busy 8787), in each Bokeh app's live allowlist
    (``BokehTornado.websocket_origins``). A user's own Dask
    ``allow_websocket_origin`` entries are allowed ``Host`` names too.
    """
    http = getattr(scheduler, "http_server", None)
    app = getattr(scheduler, "http_application", None)
    if http is None or app is None or getattr(app, "_daskflow_host_checked", False):
        return None
    origins = allowed_origins(http.port, bound_hosts, extra_origins())
    if websockets:
        for bokeh_app in getattr(app, "applications", ()):
            live = getattr(bokeh_app, "websocket_origins", None)
            if isinstance(live, set):
                live.clear()
                live.update(origins)
        hosts = origins
    else:
        hosts = origins + [str(o) for o in dask.config.get(DASK_ORIGINS, []) or []]
    install_host_check(app, "", hosts)
    app._daskflow_host_checked = True
    return origins
