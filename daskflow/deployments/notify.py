"""Webhook notifications: a Slack-compatible JSON POST when a deployment's run fails.

Configured with ``daskflow.notifications.webhook-url`` (for example
``DASK_DASKFLOW__NOTIFICATIONS__WEBHOOK_URL``) on the machine that runs
``daskflow serve``; ``daskflow.notifications.states`` lists the states that
notify (default Failed, Crashed and Late).

Posts go out from a background thread: a slow or broken webhook never blocks
the serve loop or a run. Each post is retried with jittered exponential backoff
on timeouts, connection errors, 429 and 5xx answers, and given up (with one
warning) after ``attempts`` tries; a 4xx other than 429 is not retried. The URL
is a secret (a Slack webhook URL is its own credential): it is masked in every
log line and never printed.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import dask.config

from ..masking import add_secrets, mask

__all__ = ["WebhookNotifier", "notifier_from_config"]

logger = logging.getLogger("daskflow.deployments")

_STOP = object()


class WebhookNotifier:
    """Posts run notifications to one webhook URL, in the background.

    Parameters
    ----------
    url : str
        The webhook (``https://hooks.slack.com/services/...`` or any endpoint
        taking a JSON POST).
    states : iterable of str
        State names that notify (``Failed``, ``Crashed``, ``Late``, ``TimedOut``,
        ``Cancelled``, ``Completed``).
    attempts : int
        Tries per notification before giving up.
    backoff : float
        Seconds before the first retry; doubled each time, with jitter.
    timeout : float
        Seconds per request.
    """

    def __init__(self, url: str, states: Any = ("Failed", "Crashed", "Late"), *, attempts: int = 5, backoff: float = 1.0, timeout: float = 10.0) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("daskflow.notifications.webhook-url must be an http(s) URL")
        self.url = url
        add_secrets([url])
        self.states = {str(s).lower() for s in states}
        self.attempts = max(int(attempts), 1)
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self.sent = 0
        self.failed = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="daskflow-webhook", daemon=True)
        self._thread.start()

    def wants(self, state_name: str) -> bool:
        return state_name.lower() in self.states

    def notify(self, run: dict[str, Any], state_name: str, message: str = "", link: str | None = None) -> None:
        """Queue a notification about ``run`` (a run record or request summary) entering ``state_name``."""
        if not self.wants(state_name):
            return
        deployment = run.get("deployment_name") or "?"
        name = run.get("name") or run.get("id") or "?"
        text = f"daskflow: run {name!r} of deployment {deployment!r} is {state_name}"
        if message:
            text += f": {mask(message)[:500]}"
        if link:
            text += f" ({link})"
        payload = {
            "text": text,
            "run_id": run.get("id"),
            "run_name": name,
            "deployment": deployment,
            "flow": run.get("flow_name"),
            "state": state_name,
            "message": mask(message or "")[:2000],
            "scheduled_time": run.get("scheduled_time"),
        }
        self._queue.put(payload)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (waiting at most ``timeout`` seconds), then stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is _STOP:
                return
            try:
                self._post(payload)
            except Exception:  # the notifier must never die: the next run still needs it
                logger.warning("webhook notification for %s failed unexpectedly", payload.get("run_name"), exc_info=True)

    def _post(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.url, data=data, headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                self.sent += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    self.failed += 1
                    logger.warning("the webhook refused the notification for run %s (HTTP %d); not retried", payload["run_name"], exc.code)
                    return
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                # Never the exception's text: it can hold the URL.
                reason = type(getattr(exc, "reason", exc)).__name__
            if attempt == self.attempts:
                break
            time.sleep(delay * (0.5 + random.random()))
            delay *= 2
        self.failed += 1
        logger.warning("gave up notifying the webhook about run %s after %d attempts (last: %s)", payload["run_name"], self.attempts, reason)


def notifier_from_config() -> WebhookNotifier | None:
    """The notifier configured in ``daskflow.notifications`` (``None`` without a URL)."""
    url = dask.config.get("daskflow.notifications.webhook-url", None)
    if not url:
        return None
    states = dask.config.get("daskflow.notifications.states", None) or ("Failed", "Crashed", "Late")
    if isinstance(states, str):
        states = [s.strip() for s in states.split(",") if s.strip()]
    return WebhookNotifier(str(url), states)
