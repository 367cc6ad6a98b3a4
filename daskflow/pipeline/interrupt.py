"""Ctrl-C on a flow run's driver: one line that says what happened, not tracebacks.

A top-level flow run that a ``KeyboardInterrupt`` stops is cancelled, recorded,
and its final log line says how to look at it and that running it again
resumes (task runs that completed are reused from storage). The interrupt then
goes on up to the caller, who may catch it; left uncaught, Python would print
a traceback of the engine's wait loop, which says nothing the line has not.
:func:`interrupted` marks the exception so that :func:`_excepthook` prints
nothing for it (the process still exits as an interrupted one, status 130).
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any

__all__ = ["INTERRUPTED", "interrupted", "resume_hint"]

#: The message of the Cancelled state of a run Ctrl-C stopped.
INTERRUPTED = "interrupted by KeyboardInterrupt (Ctrl-C)"

_hook_lock = threading.Lock()
_previous_hook: list[Any] = []


def resume_hint(flow_run: Any) -> str:
    """``; recorded: daskflow runs show ID --storage URL; run it again to resume ...``"""
    completed = sum(1 for tr in list(flow_run.task_runs.values()) if tr.state.is_completed())
    storage = f" --storage {flow_run.result_storage}" if flow_run.result_storage else ""
    recorded = f"; recorded: daskflow runs show {flow_run.id[:12]}{storage}" if flow_run.history_url else ""
    reused = ("nothing had completed yet" if not completed else "the task run that completed is reused" if completed == 1
              else f"the {completed} task runs that completed are reused")
    return f"{recorded}; run it again to resume ({reused})"


def interrupted(flow_name: str) -> KeyboardInterrupt:
    """A ``KeyboardInterrupt`` to raise in place of the one that stopped a top-level
    run: without the engine's frames, and printed as nothing if left uncaught."""
    error = KeyboardInterrupt(f"flow {flow_name!r} was interrupted; its run was cancelled and recorded")
    error.__daskflow_reported__ = True  # type: ignore[attr-defined]
    _install_hook()
    return error


def _install_hook() -> None:
    with _hook_lock:
        if _previous_hook:
            return
        _previous_hook.append(sys.excepthook)
        sys.excepthook = _excepthook


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """The log line said it all for an interrupt daskflow reported; anything else as before."""
    if isinstance(value, KeyboardInterrupt) and getattr(value, "__daskflow_reported__", False):
        return
    _previous_hook[0](kind, value, tb)
