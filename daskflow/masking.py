"""Keep secrets out of run records, logs and the console.

A process keeps one set of known secret values and replaces each occurrence
with ``**********`` (pydantic's own mask) in everything daskflow writes or prints:
log lines, error messages and tracebacks, state messages, parameters, artifacts.
Secrets are learned from:

* ``SecretStr``/``SecretBytes`` values among a flow run's parameters (on the
  driver) and among a task run's arguments (on the worker running it);
* credential-like ``storage_options`` (``key``, ``secret``, ``token``, ...) and
  the configured signing key, when a store is opened;
* environment variables whose names say they hold a credential
  (``AWS_SECRET_ACCESS_KEY``, ``*_TOKEN``, ``*_PASSWORD``, ...).

Values shorter than :data:`MIN_LENGTH` are not masked: masking ``"abc"`` in
every line would garble logs without protecting anything.

Masking is a safety net for text daskflow handles. A task that writes a secret
into its *return value* stores it as data; mark such values ``SecretStr``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = [
    "MASK",
    "MIN_LENGTH",
    "MaskingFilter",
    "add_secrets",
    "mask",
    "mask_value",
    "secrets_in",
]

MASK = "**********"
MIN_LENGTH = 4

# Names of environment variables that hold credentials. Whole words, so PATH or
# KEYBOARD_LAYOUT are left alone.
_SECRET_ENV = re.compile(
    r"(^|_)(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?|PRIVATE_KEY|ACCESS_KEY|API_KEY|SIGNING_KEY|SESSION_TOKEN)(_|$)",
    re.IGNORECASE,
)

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_env_read = False


def add_secrets(values: Iterable[str | bytes]) -> None:
    """Mask these values from now on, in this process."""
    global _pattern
    fresh = set()
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and len(value) >= MIN_LENGTH and value not in _known:
            fresh.add(value)
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        # Longest first: a secret that contains another is masked whole.
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def _read_environment() -> None:
    global _env_read
    if _env_read:
        return
    _env_read = True
    add_secrets(value for name, value in os.environ.items() if _SECRET_ENV.search(name) and len(value) >= 8)


def mask(text: str) -> str:
    """``text`` with every known secret replaced by :data:`MASK`."""
    if not _env_read:
        _read_environment()
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


#: Containers longer than this are not searched for secrets (a list of a million
#: numbers is data, and walking it would cost every task that takes it).
MAX_WALK = 10_000


def secrets_in(value: Any) -> list[str]:
    """The raw values of ``SecretStr``/``SecretBytes`` found in ``value`` (walked
    through lists, tuples, sets, dicts and pydantic models up to
    :data:`MAX_WALK` items each)."""
    found: list[str] = []
    seen: set[int] = set()

    def walk(item: Any, depth: int) -> None:
        if depth > 20 or id(item) in seen:
            return
        if isinstance(item, (SecretStr, SecretBytes)):
            raw = item.get_secret_value()
            found.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        elif isinstance(item, dict):
            seen.add(id(item))
            if len(item) <= MAX_WALK:
                for v in item.values():
                    walk(v, depth + 1)
        elif isinstance(item, (list, tuple, set, frozenset)) and len(item) <= MAX_WALK:
            seen.add(id(item))
            for v in item:
                walk(v, depth + 1)
        elif isinstance(item, BaseModel):
            seen.add(id(item))
            for name in type(item).model_fields:
                walk(getattr(item, name, None), depth + 1)

    walk(value, 0)
    return found


#: Longest text kept for a value that is not JSON (its repr): a parameter that is
#: an array must not put megabytes into a run record.
MAX_REPR = 500


def mask_value(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` with secrets masked: ``SecretStr`` becomes
    :data:`MASK`, strings are masked, other objects become their (cut) repr."""
    if isinstance(value, (SecretStr, SecretBytes)):
        return MASK
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return mask(value)
    if depth < 10:
        if isinstance(value, dict):
            return {mask(str(k)): mask_value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [mask_value(v, depth + 1) for v in value]
    text = _scalar(value)
    if text is not None:
        return text
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break the record
        text = f"<{type(value).__name__} (repr failed: {type(exc).__name__})>"
    if len(text) > MAX_REPR:
        text = text[: MAX_REPR - 20] + f"... [{len(text)} chars]"
    return mask(text)


def _scalar(value: Any) -> Any:
    """numpy scalars and the like as plain numbers (``item()``), else ``None``."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        try:
            plain = item()
        except Exception:
            return None
        if isinstance(plain, (bool, int, float, str)):
            return plain
    return None


class MaskingFilter(logging.Filter):
    """A logging filter that masks known secrets in each record's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = mask(message)
        if record.exc_info and record.exc_text is None:
            import traceback

            record.exc_text = mask("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        if masked != message:
            record.msg, record.args = masked, None
        return True
