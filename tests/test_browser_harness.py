"""The browser harness (tests/browser.py) against real servers on 127.0.0.1: a plain
tornado page and a Bokeh server app whose button runs a Python callback."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from . import browser as harness
from .browser import collect_console_errors, screenshot

pytestmark = pytest.mark.slow

# The fixtures, by assignment: pytest finds them among the module's names, and unlike an
# import they do not make pyflakes report each test argument named `page` (F811).
browser, page = harness.browser, harness.page

T = TypeVar("T")


class LoopThread:
    """An asyncio loop (tornado's IOLoop runs on it) in a thread of its own: the
    servers must keep answering while the main thread blocks in Playwright's calls."""

    def __init__(self, name: str) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"the {name} thread did not start its event loop")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._ready.set()
        await self._stopping.wait()

    def run(self, fn: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        """Await ``fn()`` on the loop (server objects must be made and stopped there)."""

        async def call() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server thread did not stop"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title><link rel="icon" href="data:,"></head>
<body>
  <button id="ask">Ask the server</button>
  <p id="answer">no answer yet</p>
  <script>
    // The text changes only after a round trip to the server, so the test has to wait for it.
    document.getElementById("ask").addEventListener("click", async () => {
      const response = await fetch("/answer");
      document.getElementById("answer").textContent = await response.text();
    });
  </script>
</body></html>
"""

BROKEN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body><script>console.error("logged on purpose"); throw new Error("thrown on purpose");</script></body></html>
"""


class Static(RequestHandler):
    def initialize(self, body: str, content_type: str) -> None:
        self.body, self.content_type = body, content_type

    def get(self) -> None:
        self.set_header("Content-Type", self.content_type)
        self.finish(self.body)


def _bind() -> tuple[list[socket.socket], int]:
    """A listening socket on 127.0.0.1 at a free port, and that port."""
    sockets = bind_sockets(0, "127.0.0.1")
    return sockets, sockets[0].getsockname()[1]


@pytest.fixture(scope="module")
def plain_site() -> Iterator[str]:
    """The URL of a tornado site with :data:`PAGE` at ``/``."""
    routes = [
        ("/", Static, {"body": PAGE, "content_type": "text/html; charset=utf-8"}),
        ("/answer", Static, {"body": "forty-two", "content_type": "text/plain"}),
        ("/broken", Static, {"body": BROKEN_PAGE, "content_type": "text/html; charset=utf-8"}),
    ]

    async def start() -> tuple[HTTPServer, int]:
        sockets, port = _bind()
        server = HTTPServer(Application(routes))
        server.add_sockets(sockets)
        return server, port

    thread = LoopThread("plain-site")
    try:
        server, port = thread.run(start)
        yield f"http://127.0.0.1:{port}"

        async def stop() -> None:
            server.stop()
            await server.close_all_connections()

        thread.run(stop)
    finally:
        thread.close()


def bokeh_app(doc: Any) -> None:
    """A button whose Python callback (run in the server) rewrites a Div."""
    from bokeh.layouts import column
    from bokeh.models import Button, Div

    clicks = Div(text="not clicked")
    button = Button(label="Click me")

    def clicked() -> None:
        clicks.text = "clicked in Python"

    button.on_click(clicked)
    doc.add_root(column(button, clicks))
    doc.title = "harness"


@pytest.fixture(scope="module")
def bokeh_site() -> Iterator[str]:
    """The URL of a Bokeh server app (:func:`bokeh_app`) on 127.0.0.1."""
    pytest.importorskip("bokeh", reason="the Bokeh app test needs bokeh (pip install bokeh)")
    from bokeh.server.server import BaseServer
    from bokeh.server.tornado import BokehTornado
    from tornado.ioloop import IOLoop

    async def start() -> tuple[BaseServer, HTTPServer, int]:
        sockets, port = _bind()
        # Not bokeh's Server(port=0): it fixes the allowed websocket origins before it
        # binds, so it could not allow its own port. BaseServer takes a bound HTTPServer.
        app = BokehTornado({"/app": bokeh_app}, absolute_url=f"http://127.0.0.1:{port}",
                           extra_websocket_origins=[f"127.0.0.1:{port}"])
        http = HTTPServer(app)
        http.add_sockets(sockets)
        server = BaseServer(IOLoop.current(), app, http)
        server.start()
        return server, http, port

    thread = LoopThread("bokeh-server")
    try:
        server, http, port = thread.run(start)
        yield f"http://127.0.0.1:{port}/app"

        async def stop() -> None:
            server.stop()  # the app's periodic callbacks, and the HTTP server
            await http.close_all_connections()  # a page's websocket may still be open

        thread.run(stop)
    finally:
        thread.close()


def test_plain_page_button(page, plain_site):
    errors = collect_console_errors(page)
    page.goto(plain_site)
    answer = page.locator("#answer")
    assert answer.inner_text() == "no answer yet"
    page.get_by_role("button", name="Ask the server").click()
    page.get_by_text("forty-two", exact=True).wait_for()
    assert answer.inner_text() == "forty-two"
    assert errors == []
    path = screenshot(page, "harness-plain")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_console_errors_are_collected(page, plain_site):
    """The no-JS-errors assertions above mean something: errors do get collected."""
    errors = collect_console_errors(page)
    # Both arrive while the page loads; waiting for them rules out a race with the asserts.
    with page.expect_event("pageerror"), page.expect_console_message(lambda m: m.type == "error"):
        page.goto(plain_site + "/broken")
    assert any("logged on purpose" in e for e in errors), errors
    assert any("thrown on purpose" in e for e in errors), errors


def test_bokeh_button_runs_python_callback(page, bokeh_site):
    errors = collect_console_errors(page)
    page.goto(bokeh_site)
    # Bokeh renders into shadow roots; Playwright's locators look inside them.
    page.get_by_text("not clicked", exact=True).wait_for()
    page.get_by_role("button", name="Click me").click()
    # The click goes over the websocket to the Python callback; its change comes back the same way.
    page.get_by_text("clicked in Python", exact=True).wait_for()
    assert page.get_by_text("not clicked", exact=True).count() == 0
    assert errors == []
    screenshot(page, "harness-bokeh")
