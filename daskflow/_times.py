"""Times typed by users (``7d``, ``2026-11-20``) and times shown to them."""

from __future__ import annotations

import datetime
import time

__all__ = ["format_duration", "format_time", "parse_age", "parse_since"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """``30s``, ``15m``, ``12h``, ``7d`` or ``2w`` (or a number of seconds) as seconds.

    Raises
    ------
    ValueError
        Saying which forms are accepted (the caller names the option).
    """
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _UNITS else "s"
    number = value[:-1] if value[-1:] in _UNITS else value
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not an age; use a number with s, m, h, d or w, like 7d or 12h") from None
    if seconds < 0:
        raise ValueError(f"{text!r} is negative; use an age like 7d or 12h")
    return seconds


def parse_since(text: str) -> float:
    """An age ago (``12h``, ``7d``) or a date (``2026-11-20``, ``2026-11-20T08:00``) as a timestamp.

    Raises
    ------
    ValueError
        Naming the accepted forms.
    """
    try:
        return time.time() - parse_age(text)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is neither an age (7d, 12h) nor a date (2026-11-20 or 2026-11-20T08:00)") from None


def format_time(timestamp: float | None) -> str:
    """``2026-11-23 10:15:02`` in local time, or ``-``."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m`` or ``-``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
