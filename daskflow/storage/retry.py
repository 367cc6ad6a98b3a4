"""Retrying transient storage errors: which errors, how often, how long.

A storage call that fails with a *transient* error (a timeout, throttling such as
S3's ``SlowDown``, a 5xx answer, a reset or refused connection) is tried again
after a jittered, exponentially growing wait, at most ``attempts`` times in all
(config ``daskflow.storage.retries``). Everything else fails at once: access
denied, missing buckets and keys, a file where a folder belongs. Retrying those
would only delay the error, or turn a misconfiguration into a slow run.

These retries come on top of the backend's own: s3fs retries ``SlowDown`` and
timeouts a few times within about 2 s, and botocore retries connection errors.
What reaches :class:`~daskflow.storage.store.Store` has already outlived those,
so the waits here are longer (0.25 s, 0.5 s, 1 s... up to ``max-delay``).

Retries are counted: :func:`counting` collects the retries made by the current
thread (a task attempt's storage calls), which the attempt's report carries to
its task run's record (``storage_retries``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dask.config

from .. import config
from ..exceptions import InvalidOptionError

__all__ = [
    "RetryCounter", "RetryPolicy", "Tries", "call", "count_into", "counting", "error_codes", "exception_chain", "not_retrying",
    "retry_each", "stop_counting", "transient_kind",
]

logger = logging.getLogger("daskflow.storage")

T = TypeVar("T")

#: S3 (and S3-like) error codes of throttling answers.
_THROTTLED = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestThrottledException", "429",
})
#: Error codes of answers that say "the service failed, not your request".
_SERVER = frozenset({"InternalError", "ServiceUnavailable", "500", "502", "503", "504"})
#: Error codes of server-side timeouts (the server gave up waiting for the request).
_TIMEOUT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException"})
#: Codes that are never transient, whatever else the chain holds.
_PERMANENT_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AllAccessDisabled", "AccountProblem", "NoSuchBucket", "NoSuchKey", "403", "404",
})
#: Exception classes (by name, anywhere in their MRO: botocore and aiohttp need not
#: be installed) of a connection that failed or broke off.
_CONNECTION_CLASSES = frozenset({
    "ConnectionError", "EndpointConnectionError", "ConnectionClosedError", "HTTPClientError",
    "ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError", "IncompleteRead",
    "IncompleteReadError", "ResponseParserError", "ResponseStreamingError", "ProtocolError",
})
#: Errnos of local (or network filesystem) calls worth trying again.
_TRANSIENT_ERRNOS = frozenset({
    errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ECONNRESET, errno.ECONNREFUSED,
    errno.ECONNABORTED, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH,
})
#: Outer exception types that are answers, not failures to get one.
_PERMANENT_TYPES = (PermissionError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long transient storage errors are retried.

    Parameters
    ----------
    attempts : int
        Tries of one call in all (1 turns retrying off).
    base_delay : float
        Seconds of the longest first wait; each later wait may be twice as long.
    max_delay : float
        Cap of one wait, in seconds.

    Notes
    -----
    Waits use "full jitter": a uniform draw between 0 and the capped exponential,
    so many tasks throttled at once do not all come back at the same instant.
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 5.0

    @classmethod
    def from_config(cls) -> RetryPolicy:
        """The policy in config ``daskflow.storage.retries``.

        Raises
        ------
        InvalidOptionError
            If ``attempts`` is not a whole number of 1 or more, or a delay is not
            a number of seconds of 0 or more.
        """
        attempts = dask.config.get("daskflow.storage.retries.attempts", cls.attempts)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise InvalidOptionError(
                f"daskflow.storage.retries.attempts is {attempts!r}; give a whole number of tries of 1 or more, like 4 "
                "(1 turns retrying off)"
            )
        return cls(
            attempts=attempts,
            base_delay=config.seconds("daskflow.storage.retries.base-delay", cls.base_delay),
            max_delay=config.seconds("daskflow.storage.retries.max-delay", cls.max_delay),
        )

    def cap(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 for the first)."""
        return min(self.max_delay, self.base_delay * 2 ** (retry - 1))

    def delay(self, retry: int) -> float:
        """A jittered wait before retry number ``retry``."""
        return random.uniform(0.0, self.cap(retry))

    @property
    def budget(self) -> float:
        """The most time spent waiting between the tries of one call, in seconds
        (the tries themselves come on top)."""
        return sum(self.cap(retry) for retry in range(1, self.attempts))


@dataclass
class RetryCounter:
    """Retries made while :func:`counting` is active; ``on_retry`` is told of each
    (with a message for the task's log)."""

    retries: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    on_retry: Callable[[str], None] | None = None

    def add(self, kind: str, message: str) -> None:
        self.retries += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.on_retry is not None:
            try:
                self.on_retry(message)
            except Exception:  # a log line must never change the storage call's outcome
                logger.debug("retry callback failed", exc_info=True)


_COUNTER: contextvars.ContextVar[RetryCounter | None] = contextvars.ContextVar("daskflow_storage_retries", default=None)


def count_into(counter: RetryCounter) -> contextvars.Token[RetryCounter | None]:
    """Count the storage retries of this context (a task attempt) in ``counter``
    until :func:`stop_counting` is given the returned token."""
    return _COUNTER.set(counter)


def stop_counting(token: contextvars.Token[RetryCounter | None]) -> None:
    _COUNTER.reset(token)


@contextlib.contextmanager
def counting(on_retry: Callable[[str], None] | None = None) -> Iterator[RetryCounter]:
    """Count the storage retries made in this block."""
    counter = RetryCounter(on_retry=on_retry)
    token = count_into(counter)
    try:
        yield counter
    finally:
        stop_counting(token)


@dataclass
class Tries:
    """What one retried call went through, for its error message."""

    count: int = 0
    started: float = field(default_factory=time.monotonic)
    kind: str | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def describe(self) -> str:
        """``"gave up after 4 attempts in 1.8 s"`` (empty for a single try)."""
        if self.count <= 1:
            return ""
        return f"gave up after {self.count} attempts in {self.elapsed:.1f} s (config daskflow.storage.retries)"


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception and its causes, as Python prints them (explicit cause first)."""
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
        seen += 1


def error_codes(exc: BaseException) -> set[str]:
    """The S3 error codes and HTTP statuses in an exception's chain (s3fs keeps
    botocore's ``ClientError`` as the cause of the ``OSError`` it raises)."""
    codes: set[str] = set()
    for error in exception_chain(exc):
        response = getattr(error, "response", None)
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
            if isinstance(code, str):
                codes.add(code)
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if isinstance(status, int):
                codes.add(str(status))
    return codes


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def transient_kind(exc: BaseException) -> str | None:
    """``"timeout"``, ``"throttled"``, ``"server"`` or ``"connection"`` for an error
    worth retrying; ``None`` for one that would only fail again.

    Examples
    --------
    >>> transient_kind(TimeoutError("timed out"))
    'timeout'
    >>> transient_kind(PermissionError("Access Denied")) is None
    True
    """
    if isinstance(exc, _PERMANENT_TYPES):
        return None
    codes = error_codes(exc)
    if codes & _PERMANENT_CODES:
        return None
    chain = list(exception_chain(exc))
    names = set().union(*(_class_names(e) for e in chain))
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return None
    text = " ".join(str(e) for e in chain)
    if codes & _THROTTLED or "SlowDown" in text or "reduce your request rate" in text.lower():
        return "throttled"
    if codes & _TIMEOUT_CODES or any(isinstance(e, TimeoutError) for e in chain) or any("Timeout" in n for n in names):
        return "timeout"
    if codes & _SERVER:
        return "server"
    if names & _CONNECTION_CLASSES:
        return "connection"
    if any(isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS and not error_codes(e) for e in chain):
        return "connection" if any(isinstance(e, ConnectionError) for e in chain) else "busy"
    return None


#: Kinds of transient error not retried in this context (see :func:`not_retrying`).
_NOT_RETRIED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("daskflow_not_retried", default=frozenset())


@contextlib.contextmanager
def not_retrying(*kinds: str) -> Iterator[None]:
    """Within the block, errors of these kinds (``"connection"``, ...) are not
    retried: the start-up probe's first contact with an endpoint that refuses
    connections is a wrong address far more often than an outage, and botocore
    has retried it already (each of our tries would take its whole retry round)."""
    token = _NOT_RETRIED.set(_NOT_RETRIED.get() | frozenset(kinds))
    try:
        yield
    finally:
        _NOT_RETRIED.reset(token)


def _retried(kind: str | None) -> bool:
    """Whether an error of this kind (None: not transient) is worth another try here."""
    return kind is not None and kind not in _NOT_RETRIED.get()


def _wait(kind: str, failure: str, tries: Tries, policy: RetryPolicy) -> None:
    """Say so (a warning, and the task run's retry count), then wait before the next try."""
    wait = policy.delay(tries.count)
    message = f"{failure}; try {tries.count + 1} of {policy.attempts} in {wait:.2f} s"
    logger.warning("%s", message)
    counter = _COUNTER.get()
    if counter is not None:
        counter.add(kind, message)
    time.sleep(wait)


def call(fn: Callable[[], T], *, what: str, tries: Tries | None = None, policy: RetryPolicy | None = None) -> T:
    """``fn()``, tried again on transient errors per ``policy`` (default: config).

    ``what`` names the call in log lines (``"write of s3://bucket/key"``);
    ``tries`` (if given) records the attempts for the caller's error message.
    The last error is raised as it is.
    """
    policy = policy if policy is not None else RetryPolicy.from_config()
    tries = tries if tries is not None else Tries()
    while True:
        tries.count += 1
        try:
            return fn()
        except Exception as exc:
            kind = transient_kind(exc)
            if not _retried(kind) or tries.count >= policy.attempts:
                if kind is not None:
                    tries.kind = kind
                raise
            tries.kind = kind
            _wait(kind, f"{what} failed ({kind}: {type(exc).__name__}: {exc})", tries, policy)


def retry_each(
    fn: Callable[[list[str]], Mapping[str, Any]],
    items: Iterable[str],
    *,
    what: str,
    tries: Tries | None = None,
    policy: RetryPolicy | None = None,
) -> dict[str, Any]:
    """A batch call (``fn(items) -> {item: value or exception}``) whose items that
    failed transiently are tried again, alone, per ``policy``. Exceptions of the
    last try are left in the result for the caller."""
    policy = policy if policy is not None else RetryPolicy.from_config()
    tries = tries if tries is not None else Tries()
    pending = list(items)
    out: dict[str, Any] = {}
    while True:
        found = call(lambda: fn(pending), what=what, tries=tries, policy=policy)
        out.update(found)
        again = [item for item in pending if isinstance(found.get(item), Exception) and _retried(transient_kind(found[item]))]
        if not again or tries.count >= policy.attempts:
            return out
        kind = transient_kind(found[again[0]]) or "transient"
        tries.kind = kind
        error = found[again[0]]
        _wait(kind, f"{what} failed for {len(again)} object(s) ({kind}: {type(error).__name__}: {error})", tries, policy)
        pending = again
