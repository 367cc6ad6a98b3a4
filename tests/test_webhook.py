"""The webhook notifier against a real HTTP server on 127.0.0.1: retries, refusals, and a
URL that never reaches a log line."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time

import pytest

from daskflow.deployments.notify import WebhookNotifier, notifier_from_config

from .conftest import wait_until


class _Hook(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[dict] = []
    delay = 0.0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(type(self).delay)
        code = type(self).answers.pop(0) if type(self).answers else 200
        type(self).received.append({"code": code, "body": body, "type": self.headers["Content-Type"]})
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    _Hook.answers, _Hook.received, _Hook.delay = [], [], 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/services/T1/B1/hook-secret-canary", _Hook
    finally:
        server.shutdown()
        server.server_close()


RUN = {"id": "r" * 32, "name": "nightly-1a2b3c4d", "deployment_name": "nightly", "flow_name": "train", "scheduled_time": 1.0}


def test_a_failing_webhook_is_retried_with_backoff_until_it_answers(hook, caplog):
    url, handler = hook
    handler.answers = [500, 503, 429]
    notifier = WebhookNotifier(url, ["Failed"], attempts=5, backoff=0.05)
    notifier.notify(RUN, "Failed", "ValueError: broke")
    wait_until(lambda: notifier.sent == 1, 30, message="the post after three refusals")
    notifier.close()
    assert [r["code"] for r in handler.received] == [500, 503, 429, 200]
    body = handler.received[-1]["body"]
    assert handler.received[-1]["type"] == "application/json"
    assert body["state"] == "Failed" and body["run_name"] == "nightly-1a2b3c4d" and body["deployment"] == "nightly"
    assert body["text"] == "daskflow: run 'nightly-1a2b3c4d' of deployment 'nightly' is Failed: ValueError: broke"
    assert "hook-secret-canary" not in caplog.text


def test_a_refused_post_is_not_retried_and_gives_up_with_one_warning_without_the_url(hook, caplog):
    url, handler = hook
    handler.answers = [404]
    notifier = WebhookNotifier(url, ["Failed", "Late"], attempts=5, backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="daskflow.deployments"):
        notifier.notify(RUN, "Late", "no worker serves queue 'gpu'")
        wait_until(lambda: notifier.failed == 1, 30, message="the refusal")
        handler.answers = [500] * 10
        notifier.notify(RUN, "Failed", "x")
        wait_until(lambda: notifier.failed == 2, 30, message="giving up")
    notifier.close()
    assert [r["code"] for r in handler.received] == [404, 500, 500, 500, 500, 500]
    assert "HTTP 404" in caplog.text and "after 5 attempts" in caplog.text
    assert "hook-secret-canary" not in caplog.text and "127.0.0.1" not in caplog.text


def test_notifying_never_waits_for_the_webhook_and_unwanted_states_are_not_sent(hook):
    url, handler = hook
    handler.delay = 0.3
    notifier = WebhookNotifier(url, ["Crashed"])
    started = time.perf_counter()
    for _ in range(5):
        notifier.notify(RUN, "Crashed", "worker died")
    notifier.notify(RUN, "Completed")
    assert time.perf_counter() - started < 0.25  # five slow posts are queued, not awaited
    wait_until(lambda: notifier.sent == 5, 30, message="five posts")
    notifier.close()
    assert {r["body"]["state"] for r in handler.received} == {"Crashed"}


def test_an_unreachable_webhook_gives_up_quietly(caplog):
    notifier = WebhookNotifier("http://127.0.0.1:9/never-there-canary", ["Failed"], attempts=2, backoff=0.01, timeout=2)
    notifier.notify(RUN, "Failed", "x")
    wait_until(lambda: notifier.failed == 1, 30, message="giving up on a closed port")
    notifier.close()
    assert "never-there-canary" not in caplog.text


def test_the_notifier_comes_from_config(hook):
    import dask

    url, _ = hook
    assert notifier_from_config() is None
    with dask.config.set({"daskflow.notifications.webhook-url": url, "daskflow.notifications.states": "Failed, Late"}):
        notifier = notifier_from_config()
    assert notifier is not None and notifier.wants("late") and not notifier.wants("Crashed")
    notifier.close()
    with pytest.raises(ValueError, match="http"), dask.config.set({"daskflow.notifications.webhook-url": "ftp://x"}):
        notifier_from_config()
