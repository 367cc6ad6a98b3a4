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

Dask workers learn the secrets of the arguments they run: each task's arguments
travel with the known secrets that occur in them and the runs' ``SecretStr``
parameter values (see :func:`secrets_to_share`), never the driver's storage
credentials or environment otherwise. Exceptions are masked in place
(:func:`mask_exception`): their arguments at any depth, notes, attributes and
the exceptions they were raised from.

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
    "mask_exception",
    "mask_value",
    "secrets_in",
    "secrets_to_share",
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
#: Secrets every task submitted from this process takes to its worker (the runs'
#: SecretStr parameters): a task may get one from an upstream result.
_shared: set[str] = set()
_pattern: re.Pattern[str] | None = None
_env_read = False


def add_secrets(values: Iterable[str | bytes], share: bool = False) -> None:
    """Mask these values from now on, in this process.

    With ``share``, every task submitted from this process to a Dask worker
    takes them along, so the worker masks them too (a run's ``SecretStr``
    parameters); other secrets travel only with arguments that contain them.
    """
    global _pattern
    fresh = set()
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and len(value) >= MIN_LENGTH:
            if share:
                _shared.add(value)
            if value not in _known:
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


def _current_pattern() -> re.Pattern[str] | None:
    if not _env_read:
        _read_environment()
    return _pattern


def mask(text: str) -> str:
    """``text`` with every known secret replaced by :data:`MASK`."""
    pattern = _current_pattern()
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


def secrets_to_share(value: Any) -> tuple[str, ...]:
    """The secrets a task whose arguments are ``value`` takes to its worker: the
    known secrets that occur in its strings (walked like :func:`secrets_in`) and
    the shared ones (``add_secrets(..., share=True)``)."""
    pattern = _current_pattern()
    if pattern is None:
        return ()
    found = set(_shared)
    for text in _strings_in(value):
        found.update(match.group(0) for match in pattern.finditer(text))
    return tuple(sorted(found))


def _strings_in(value: Any) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()

    def walk(item: Any, depth: int) -> None:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, (bytes, bytearray)):
            texts.append(bytes(item).decode("utf-8", "replace"))
        elif depth > 20 or id(item) in seen:
            return
        elif isinstance(item, dict):
            seen.add(id(item))
            if len(item) <= MAX_WALK:
                for k, v in item.items():
                    walk(k, depth + 1)
                    walk(v, depth + 1)
        elif isinstance(item, (list, tuple, set, frozenset)) and len(item) <= MAX_WALK:
            seen.add(id(item))
            for v in item:
                walk(v, depth + 1)

    walk(value, 0)
    return texts


def mask_exception(exc: BaseException) -> bool:
    """Mask known secrets in ``exc`` in place, and in the exceptions it was raised
    from or during (``__cause__``, ``__context__``).

    Arguments are masked at any depth (strings, bytes, dicts, lists, tuples,
    sets); another object whose repr shows a secret is replaced by its masked
    repr. Notes and attributes are masked the same way.

    Returns
    -------
    bool
        Whether the exceptions now show no known secret (``str`` and ``repr`` of
        each, notes included). An exception class that builds its text from
        somewhere else can still show one: do not pass such an exception on.
    """
    pattern = _current_pattern()
    if pattern is None:
        return True
    clean = True
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            _mask_one_exception(current, pattern)
        except Exception:  # a type that refuses new args or attributes: judged by its text below
            pass
        try:
            text = f"{current}\n{current!r}\n" + "\n".join(str(n) for n in getattr(current, "__notes__", None) or ())
        except Exception:  # a broken __str__ shows nothing
            text = ""
        if pattern.search(text):
            clean = False
        stack.extend((current.__cause__, current.__context__))
    return clean


def _mask_one_exception(exc: BaseException, pattern: re.Pattern[str]) -> None:
    args = tuple(_masked(a, pattern, 0) for a in exc.args)
    if any(a is not b for a, b in zip(args, exc.args, strict=True)):
        exc.args = args
    names = [n for n in getattr(exc, "__dict__", {}) if n != "__traceback__"]
    if isinstance(exc, OSError):
        names += ["filename", "filename2", "strerror"]  # OSError's own fields, shown by its str
    for name in names:
        value = getattr(exc, name, None)
        masked = _masked(value, pattern, 0)
        if masked is not value:
            setattr(exc, name, masked)  # __notes__ included: it lives in __dict__


def _masked(value: Any, pattern: re.Pattern[str], depth: int) -> Any:
    """``value`` with known secrets masked; the same object when it holds none."""
    if value is None or isinstance(value, (bool, int, float, BaseException)):
        return value  # exceptions are masked as exceptions (args, chain), not as text
    if isinstance(value, str):
        return pattern.sub(MASK, value) if pattern.search(value) else value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "replace")
        if not pattern.search(text):
            return value
        masked = bytes(value)
        for secret in set(pattern.findall(text)):
            masked = masked.replace(secret.encode(), MASK.encode())
        return type(value)(masked)
    if depth < 20:
        if isinstance(value, dict) and len(value) <= MAX_WALK:
            pairs = [(_masked(k, pattern, depth + 1), _masked(v, pattern, depth + 1)) for k, v in value.items()]
            if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items(), strict=True)):
                return value
            return _rebuilt(value, dict(pairs))
        if isinstance(value, (list, tuple, set, frozenset)) and len(value) <= MAX_WALK:
            items = [_masked(v, pattern, depth + 1) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return _rebuilt(value, items)
    try:
        text = repr(value)
    except Exception:  # nothing to show, nothing to mask
        return value
    return pattern.sub(MASK, text) if pattern.search(text) else value


def _rebuilt(value: Any, items: Any) -> Any:
    """A container of ``value``'s type holding ``items`` (a plain one when the type
    cannot be built from them)."""
    kind = type(value)
    if kind in (dict, list, tuple, set, frozenset):
        return kind(items)
    try:
        return kind(*items) if isinstance(value, tuple) and hasattr(value, "_fields") else kind(items)
    except Exception:  # a subclass with another constructor: a plain container shows the same
        return dict(items) if isinstance(value, dict) else list(items) if isinstance(value, list) else tuple(items)
