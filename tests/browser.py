"""A headless Chromium for tests that look at a web page (the Bokeh status pages).

Playwright's sync API drives the *system* Chromium (Debian's ``chromium``
package); Playwright's own browser download is never used. A test module
binds the fixtures it uses to module names, where pytest finds them (bound by
assignment rather than import, a test argument ``page`` is no pyflakes F811)::

    from . import browser as harness
    from .browser import collect_console_errors, screenshot

    browser, page = harness.browser, harness.page

Fixtures: ``browser`` (a launched Chromium) and ``page`` (a fresh context and
page in it, 1400x900, 15 s default timeout, a screenshot
``screenshots/FAILED-<test>.png`` when the test fails). Helpers:
:func:`screenshot` and :func:`collect_console_errors`.

Where the browser comes from: ``$DASKFLOW_CHROMIUM`` (a path), else
``chromium``, ``chromium-browser`` or ``google-chrome`` on ``PATH``, else (as
root, with ``apt-get``) Debian's package is installed once. Without a browser
or without playwright the tests skip with the install command; with
``DASKFLOW_REQUIRE_BROWSER=1`` or ``CI`` set they fail instead, so they cannot silently
stop running.

One browser per test, not per session: while Playwright's sync API is started,
the main thread looks as if it ran an asyncio loop (``asyncio.get_running_loop()``
returns Playwright's), so ``asyncio.run`` there fails ("cannot be called from a
running event loop"); daskflow runs ``async def`` tasks that way. Stopping
Playwright after each test keeps that out of every other test; a launch costs
about 0.6 s. Inside a test that uses ``browser`` or ``page``, run flows with
async tasks in another thread. Servers the page talks to must run in a
background thread too (the main thread blocks in Playwright's calls).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import psutil
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Error, Page

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "screenshots"
#: Default timeout of every Playwright call on a ``page`` (and of ``expect``), in ms.
TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1400, "height": 900}

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # Chromium's sandbox refuses to start as root, as tests run in containers
    "--disable-gpu",
    # Test machines may have no network: the remaining flags stop Chromium's own
    # connection attempts (QUIC, component updates, sync, background services).
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Containers often give /dev/shm only 64 MB, where Chromium's renderer crashes.
    "--disable-dev-shm-usage",
]
APT_TIMEOUT = 15 * 60  # apt-get update + install of chromium, on a slow mirror
BROWSER_HINT = "install Debian's chromium (apt-get install chromium) or set DASKFLOW_CHROMIUM to the browser's path"
PLAYWRIGHT_HINT = "pip install -e '.[test]'"


def _unavailable(message: str) -> NoReturn:
    """Skip, or fail where the browser tests must run (``DASKFLOW_REQUIRE_BROWSER=1``)."""
    if os.environ.get("DASKFLOW_REQUIRE_BROWSER") == "1" or os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _tail(output: str | bytes | None, lines: int = 10) -> str:
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return "\n".join((output or "").strip().splitlines()[-lines:])


def _apt_install_chromium() -> str | None:
    """Install Debian's chromium; ``None`` when it worked, else why not."""
    deadline = time.monotonic() + APT_TIMEOUT
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                  timeout=max(deadline - time.monotonic(), 1), check=False)
        except subprocess.TimeoutExpired as exc:
            return f"`{' '.join(cmd)}` timed out after {APT_TIMEOUT // 60} min:\n{_tail(exc.output)}"
        if done.returncode:
            return f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{_tail(done.stdout)}"
    return None


@functools.cache  # once per session: a failed apt-get install is not retried by every test
def _find_chromium() -> tuple[str | None, str]:
    """``(path, "")``, or ``(None, why not)``."""
    configured = os.environ.get("DASKFLOW_CHROMIUM")
    if configured:
        # An explicit choice that does not work is an error to report, not a cue to look elsewhere.
        found = shutil.which(configured)
        return (found, "") if found else (None, f"DASKFLOW_CHROMIUM={configured} is not an executable")
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found, ""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        return None, f"no {', '.join(CHROMIUM_NAMES)} on PATH"
    # pytest-xdist's workers each collect, so each may get here: one installs, the
    # others wait for it (two apt-gets at once fail on dpkg's lock) and then look again.
    with open(Path(tempfile.gettempdir()) / "daskflow-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(map(shutil.which, CHROMIUM_NAMES)):
            print("tests/browser.py: installing Debian's chromium (apt-get install -y chromium)", file=sys.stderr)
            if failure := _apt_install_chromium():
                return None, failure
    found = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    return (found, "") if found else (None, "apt-get installed chromium, but it is not on PATH")


def chromium_executable() -> str:
    """The path of the system Chromium (installing it if need be); skips or fails without one."""
    path, reason = _find_chromium()
    if path is None:
        _unavailable(f"the browser tests need Chromium: {BROWSER_HINT} ({reason})")
    return path


def _browser_processes(driver_pids: set[int]) -> list[psutil.Process]:
    """Playwright's driver processes and everything below them (Chromium's whole tree)."""
    procs = []
    for pid in driver_pids:
        try:
            driver = psutil.Process(pid)
            procs += [driver, *driver.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return procs


def _drivers() -> set[int]:
    """Pids of Playwright driver processes (``node ... run-driver``) started by this process."""
    pids = set()
    for child in psutil.Process().children():
        try:
            if "run-driver" in child.cmdline():
                pids.add(child.pid)
        except psutil.Error:
            pass
    return pids


@pytest.fixture
def browser() -> Iterator[Browser]:
    """The system Chromium, launched headless for one test (see the module
    docstring for why not per session); closed, with all its processes, after it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the browser tests need playwright: {PLAYWRIGHT_HINT} ({exc})")
    executable = chromium_executable()
    before = _drivers()
    playwright = sync_playwright().start()
    driver_pids = _drivers() - before
    try:
        # Without it the check below that Chromium's processes are gone would pass unseen.
        assert driver_pids, "Playwright's driver process (node ... run-driver) not found"
        # launch() gives Chromium a fresh temporary profile (--user-data-dir) and removes it on close.
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    except BaseException:
        playwright.stop()
        raise
    try:
        yield launched
    finally:
        # Chromium's renderers and helpers are children of the browser process, which is a
        # child of the driver: take the whole tree now, it is gone from the tree once reparented.
        processes = _browser_processes(driver_pids)
        try:
            launched.close()
        finally:
            playwright.stop()  # waits for the driver to exit
        alive = _wait_gone(processes, timeout=10)
        for proc in alive:
            proc.kill()
        assert not alive, f"browser processes still running 10 s after close (now killed): {alive}"
        # What the module docstring promises the other tests: no asyncio loop left marked as
        # running in this thread (stop() clears it; an assert here beats a puzzle in a later test).
        with pytest.raises(RuntimeError, match="no running event loop"):
            asyncio.get_running_loop()  # else Playwright left its loop marked as running here


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until ``processes`` have exited; returns those still running after ``timeout``.

    An exited process counts as gone while a zombie: Chromium's helpers become
    children of init (and zombies until it reaps them) once the browser exits,
    and psutil.wait_procs would wait for that reaping.
    """
    deadline = time.monotonic() + timeout
    while (alive := [p for p in processes if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


class _ReportKeeper:
    """Keeps each test phase's report on the item, so ``page`` can tell in its
    teardown whether the test failed (pytest only hands reports to hooks)."""

    key = pytest.StashKey[dict[str, pytest.TestReport]]()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        item.stash.setdefault(self.key, {})[report.when] = report
        return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_ReportKeeper.key, {})
    return any(report.failed for report in reports.values())


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A new page (in a context of its own) in ``browser``; on failure a screenshot
    ``screenshots/FAILED-<test name>.png`` shows what the page looked like."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    # Registered here rather than in conftest.py, so that importing the fixtures is all a test needs.
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("daskflow-browser-reports"):
        plugins.register(_ReportKeeper(), "daskflow-browser-reports")
    # expect() has a timeout of its own (5 s); the same as the page's keeps waits alike.
    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        new_page = context.new_page()
        yield new_page
        if _failed(request):
            try:
                path = screenshot(new_page, f"FAILED-{request.node.name}")
                print(f"screenshot of the failed test's page: {path}", file=sys.stderr)
            except PlaywrightError as exc:  # a crashed page: the test's own failure is what matters
                print(f"no screenshot of the failed test's page: {exc}", file=sys.stderr)
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``screenshots/<name>.png`` in the repository, for a
    person to look at; returns the path."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def collect_console_errors(page: Page) -> list[str]:
    """A list that fills with the page's ``console.error`` messages and uncaught
    errors from now on; call it before ``page.goto`` and assert it stays empty."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location
            errors.append(f"console.error: {message.text} ({where.get('url')}:{where.get('lineNumber')})")

    def on_page_error(error: Error) -> None:
        errors.append(f"pageerror: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return errors
