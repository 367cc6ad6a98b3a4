"""Retry delays: a number, a list, or a callable, with optional jitter."""

from __future__ import annotations

import random
from typing import Callable, Sequence, Union

from ..exceptions import InvalidOptionError

__all__ = ["RetryDelay", "exponential_backoff", "retry_delay", "validate_retry_options"]

RetryDelay = Union[float, int, Sequence[Union[float, int]], Callable[[int], Sequence[Union[float, int]]], None]


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Delays ``backoff_factor * 2**n`` seconds before retry ``n`` (Prefect's helper).

    Examples
    --------
    >>> exponential_backoff(10)(3)
    [10, 20, 40]
    """
    if backoff_factor < 0:
        raise InvalidOptionError(f"backoff_factor must be >= 0, got {backoff_factor!r}")
    return lambda retries: [backoff_factor * 2**n for n in range(retries)]


def validate_retry_options(owner: str, retries: int, delay: RetryDelay, jitter: float | None) -> RetryDelay:
    """Check retry options at decoration time; return the delay in canonical form."""
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidOptionError(f"{owner}: retries must be an integer >= 0, got {retries!r}")
    if callable(delay):
        delay = list(delay(retries))
    if delay is None:
        delay = 0
    values = list(delay) if isinstance(delay, (list, tuple)) else [delay]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidOptionError(
                f"{owner}: retry_delay_seconds must be a number >= 0 or a list of them, got {delay!r}"
            )
    if isinstance(delay, (list, tuple)) and not delay:
        raise InvalidOptionError(f"{owner}: retry_delay_seconds is an empty list; give at least one delay")
    if jitter is not None and (isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or jitter < 0):
        raise InvalidOptionError(f"{owner}: retry_jitter_factor must be a number >= 0, got {jitter!r}")
    return delay


def retry_delay(delay: RetryDelay, retry_number: int, jitter: float | None) -> float:
    """Seconds to wait before retry ``retry_number`` (1 for the first retry).

    A list gives one delay per retry and repeats its last value; jitter spreads
    the delay uniformly over ``delay * [1 - jitter, 1 + jitter]`` (never below 0)
    so a failed batch does not retry all at once.
    """
    if isinstance(delay, (list, tuple)):
        base = float(delay[min(retry_number - 1, len(delay) - 1)])
    else:
        base = float(delay or 0)
    if jitter:
        base = max(0.0, random.uniform(base * (1 - jitter), base * (1 + jitter)))
    return base
