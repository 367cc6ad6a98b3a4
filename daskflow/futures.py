"""Prefect's ``prefect.futures`` path: daskflow's own futures under Prefect's names.

``PrefectFuture`` is :class:`~daskflow.TaskFuture` and ``PrefectFutureList`` is
:class:`~daskflow.TaskFutureList`; nothing here is a second implementation.
"""

from __future__ import annotations

from typing import Any

from .pipeline.futures import DoneAndNotDoneFutures, TaskFuture, TaskFutureList, as_completed, wait
from .pipeline.states import State

PrefectFuture = TaskFuture
PrefectFutureList = TaskFutureList

from ._absent import module_getattr

__all__ = [
    "DoneAndNotDoneFutures",
    "PrefectFuture",
    "PrefectFutureList",
    "TaskFuture",
    "TaskFutureList",
    "as_completed",
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "wait",
]


def _resolve(value: Any, leaf: Any) -> Any:
    # Walk the containers Prefect walks (list, tuple, set, dict values) and replace each future.
    if isinstance(value, TaskFuture):
        return leaf(value)
    if isinstance(value, dict):
        return {k: _resolve(v, leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return type(value)(_resolve(v, leaf) for v in value)
    return value


def resolve_futures_to_states(value: Any) -> Any:
    """Return ``value`` with every :class:`TaskFuture` in it replaced by its final :class:`State`.

    Parameters
    ----------
    value
        A future, or a list, tuple, set or dict holding futures (nested too).
    """
    return _resolve(value, _final_state)


def resolve_futures_to_results(value: Any) -> Any:
    """Return ``value`` with every :class:`TaskFuture` in it replaced by its result.

    Raises the task's exception when a task failed, as ``future.result()`` does.
    """
    return _resolve(value, lambda f: f.result())


def _final_state(future: TaskFuture) -> State:
    future.wait()
    return future.state


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
