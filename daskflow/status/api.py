"""The status page's JSON routes (read only), for scripts and for tests.

``GET {route}/api/runs?flow=&state=&tag=&since=7d&limit=50``
    Run records, newest first.
``GET {route}/api/runs/<run>``
    ``{"run": record, "tasks": [...], "artifacts": [...]}``; ``<run>`` is an id,
    an id prefix of 6+ characters or a run name.
``GET {route}/api/runs/<run>/logs?task=fit-3``
    ``{"logs": [...]}``.
``GET {route}/api/deployments``
    ``{"deployments": [...]}``: the rows of the deployments view, sorted by
    name (see :func:`daskflow.status.deployments.deployment_rows`).

There is deliberately no route that changes anything: cancelling is on the
page, over its origin-checked websocket, so a link on another site cannot
cancel a run.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any, Callable

from tornado import web

from .._times import parse_since
from ..exceptions import RunNotFoundError
from ..storage.records import json_text
from .sources import RunSource

__all__ = ["api_routes"]

#: Most runs one request returns.
MAX_LIMIT = 10_000


class _Handler(web.RequestHandler):
    def initialize(self, source: Callable[[], RunSource | None]) -> None:
        self._source_of = source

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        source = self._source()
        if source.blocking:
            return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))
        return fn(*args, **kwargs)

    def _source(self) -> RunSource:
        source = self._source_of()
        if source is None:
            raise web.HTTPError(503, reason="the daskflow status plugin is not running on this scheduler")
        return source

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.finish(_json(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(_json({"error": self._reason}))


def _json(body: Any) -> str:
    """The JSON of a reply: text that always encodes (see
    :func:`~daskflow.storage.records.json_text`), with ``<``, ``>`` and ``&``
    as ``\\u`` escapes, so that no run, flow or task name can read as markup
    even to a client that sniffs the content type. A NaN or infinite number (a
    metric in an artifact) is sent as the string ``"NaN"``, ``"Infinity"``:
    Python writes them bare, and a browser's ``JSON.parse`` refuses the reply."""
    text = json_text(_finite(body))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value: Any, depth: int = 0) -> Any:
    """``value`` with every NaN or infinite float replaced by its name (a copy
    only where one is found)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))
    if depth > 50:
        return value
    if isinstance(value, dict):
        items = {k: _finite(v, depth + 1) for k, v in value.items()}
        return items if any(items[k] is not value[k] for k in value) else value
    if isinstance(value, (list, tuple)):
        items = [_finite(v, depth + 1) for v in value]
        return items if any(a is not b for a, b in zip(items, value)) else value
    return value


class RunsHandler(_Handler):
    async def get(self) -> None:
        args = {name: self.get_query_argument(name, None) for name in ("flow", "state", "tag", "since", "limit")}
        try:
            since = parse_since(args["since"]) if args["since"] else None
            limit = int(args["limit"]) if args["limit"] else 100
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit {limit} is out of range; use 1 to {MAX_LIMIT}")
        except ValueError as exc:
            return self._reply(400, {"error": f"bad query: {exc}"})
        source = self._source()
        runs = await self._call(source.runs, flow=args["flow"] or None, state=args["state"] or None, tag=args["tag"] or None, since=since, limit=limit)
        self._reply(200, {"runs": runs})


class RunHandler(_Handler):
    async def get(self, ref: str) -> None:
        source = self._source()
        try:
            detail = await self._call(source.detail, ref)
        except RunNotFoundError as exc:
            return self._reply(404, {"error": str(exc)})
        self._reply(200, {"run": detail.record, "tasks": detail.tasks, "artifacts": detail.artifacts})


class LogsHandler(_Handler):
    async def get(self, ref: str) -> None:
        source = self._source()
        try:
            logs = await self._call(source.logs, ref, self.get_query_argument("task", None) or None)
        except RunNotFoundError as exc:
            return self._reply(404, {"error": str(exc)})
        self._reply(200, {"logs": logs})


class DeploymentsHandler(_Handler):
    async def get(self) -> None:
        source = self._source()
        self._reply(200, {"deployments": await self._call(source.deployments)})


def api_routes(route: str, source: Callable[[], RunSource | None]) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado rules for the JSON routes under ``route`` (like ``/daskflow``)."""
    base = route.rstrip("/") + "/api"
    kwargs = {"source": source}
    return [
        (base + r"/runs/?", RunsHandler, kwargs),
        (base + r"/runs/([^/]+)/logs/?", LogsHandler, kwargs),
        (base + r"/runs/([^/]+)/?", RunHandler, kwargs),
        (base + r"/deployments/?", DeploymentsHandler, kwargs),
    ]
