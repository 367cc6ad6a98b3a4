"""The current run, and the run logger (``get_run_logger``, ``log_prints``)."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exceptions import InvalidOptionError, MissingContextError
from ..masking import MaskingFilter, mask
from ..runners.execute import TASK_RUN_CONTEXT, record_text, task_run_logger
from .names import check_tag_texts
from .runs import FlowRun, LogLine

if TYPE_CHECKING:
    from .engine import FlowRunEngine
    from .flow import Flow

__all__ = [
    "FLOW_RUN_CONTEXT",
    "LOCAL_FLOW_RUNS",
    "FlowRunContext",
    "disable_run_logger",
    "emit_line",
    "get_run_logger",
    "lineage",
    "run_tags",
    "tags",
]

#: Parent of every run logger on the driver; the console handler hangs here.
RUNS_LOGGER = "daskflow.runs"


@dataclass
class FlowRunContext:
    """The flow run whose body the current thread is executing."""

    flow: Flow
    flow_run: FlowRun
    engine: FlowRunEngine
    log_level: int = logging.INFO
    _logger: logging.Logger | None = None

    def __post_init__(self) -> None:
        # Tasks run in this process (thread runners) find their flow run here
        # (``runtime.flow_run.parameters``): the pool threads do not inherit the
        # body's context variables.
        LOCAL_FLOW_RUNS[self.flow_run.id] = self

    def logger(self) -> logging.Logger:
        if self._logger is None:
            logger = logging.Logger(f"{RUNS_LOGGER}.{self.flow_run.name}", self.log_level)
            logger.parent = logging.getLogger(RUNS_LOGGER)
            logger.addHandler(_FlowRunHandler(self.flow_run))
            self._logger = logger
        return self._logger


FLOW_RUN_CONTEXT: contextvars.ContextVar[FlowRunContext | None] = contextvars.ContextVar(
    "daskflow_flow_run", default=None
)
#: The flow runs of this process by id, while their context lives (weakly held).
LOCAL_FLOW_RUNS: weakref.WeakValueDictionary[str, FlowRunContext] = weakref.WeakValueDictionary()


def lineage(flow_run: FlowRun) -> tuple[str, FlowRun | None]:
    """The id of ``flow_run``'s root flow run (the top of its chain of parents;
    its own id without a parent) and its parent's record, if in this process.

    A subflow's parents run in this process (their bodies wait for it); should
    one not be found here, the last parent id known is the root's best answer.
    """
    parent_id = flow_run.parent_flow_run_id
    parent = LOCAL_FLOW_RUNS.get(parent_id) if parent_id is not None else None
    root_id = flow_run.id
    while parent_id is not None:
        root_id = parent_id
        context = LOCAL_FLOW_RUNS.get(parent_id)
        parent_id = context.flow_run.parent_flow_run_id if context is not None else None
    return root_id, parent.flow_run if parent is not None else None


#: Tags added by the enclosing ``with tags(...)`` blocks of this thread.
_TAGS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("daskflow_tags", default=())


@contextmanager
def tags(*names: str) -> Iterator[set[str]]:
    """Add tags to the task runs and flow runs started inside the block.

    Blocks nest: the tags of every enclosing block apply. A tag follows the
    rule of task and flow tags, and counts for tag concurrency limits
    (``daskflow limits``) like a tag given to ``@task``.

    Yields
    ------
    set of str
        All tags in force inside the block.

    Examples
    --------
    >>> from daskflow import flow, task, tags
    >>> @task
    ... def load():
    ...     return 1
    >>> @flow
    ... def etl():
    ...     with tags("db", "nightly"):
    ...         return load()  # the task run has the tags db and nightly
    """
    for name in names:
        if not isinstance(name, str):
            raise InvalidOptionError(f"tags() takes tag strings, got {name!r}; write tags('a', 'b')")
    added = check_tag_texts("tags()", names)
    current = _TAGS.get()
    token = _TAGS.set(tuple(dict.fromkeys((*current, *added))))
    try:
        yield set(_TAGS.get())
    finally:
        _TAGS.reset(token)


def run_tags(own: Iterable[str]) -> tuple[str, ...]:
    """The tags of a task run or flow run started here: its own (from ``@task``,
    ``@flow`` or a deployment) then those of the enclosing ``tags()`` blocks.

    The one place run tags are decided: tag concurrency limits read the run's tags.
    """
    own = tuple(own)
    extra = _TAGS.get()
    return tuple(dict.fromkeys((*own, *extra))) if extra else own


class _FlowRunHandler(logging.Handler):
    """Keeps the flow body's own log lines in the flow run's record."""

    def __init__(self, flow_run: FlowRun) -> None:
        super().__init__()
        self.flow_run = flow_run
        self.label = f"Flow run {flow_run.name!r}"

    def handle(self, record: logging.LogRecord) -> bool:
        record.daskflow_run = self.label
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        self.flow_run.logs.append(LogLine(record.created, record.levelno, mask(record_text(record))))


def get_run_logger() -> logging.Logger:
    """The logger of the current task run or flow run.

    Lines go into the run's record (and, for tasks on remote workers, travel back
    to the driver through the Dask scheduler) and are printed by the driver.

    Raises
    ------
    MissingContextError
        Outside a flow or task run.

    Examples
    --------
    >>> from daskflow import flow, task, get_run_logger
    >>> @task
    ... def fit(c):
    ...     get_run_logger().info("fitting C=%s", c)
    """
    if _disabled[0]:
        return _null_logger()
    task_context = TASK_RUN_CONTEXT.get()
    if task_context is not None:
        return task_run_logger(task_context)
    flow_context = FLOW_RUN_CONTEXT.get()
    if flow_context is not None:
        return flow_context.logger()
    raise MissingContextError(
        "get_run_logger() was called outside a flow or task run; "
        "call it inside a @flow or @task function, or use logging.getLogger(__name__)"
    )


#: How many ``disable_run_logger()`` blocks are open (process-wide, like the
#: loggers they silence: tasks in runner threads are silenced too).
_disabled = [0]
_disabled_lock = threading.Lock()


def _null_logger() -> logging.Logger:
    logger = logging.getLogger(f"{RUNS_LOGGER}.disabled")
    logger.disabled = True
    return logger


@contextmanager
def disable_run_logger() -> Iterator[None]:
    """Silence run loggers inside the block: ``get_run_logger()`` returns a
    disabled logger, also outside a run (for testing ``my_task.fn()``)."""
    with _disabled_lock:
        _disabled[0] += 1
    try:
        yield
    finally:
        with _disabled_lock:
            _disabled[0] -= 1


class _ConsoleFormatter(logging.Formatter):
    """``12:00:01.234 | INFO    | Task run 'fit-3' - message``"""

    def format(self, record: logging.LogRecord) -> str:
        label = getattr(record, "daskflow_run", None)
        record.run_prefix = f"{label} - " if label else ""
        return super().format(record)


_console_lock = threading.Lock()


def configure_console_logging(enabled: bool = True) -> None:
    """Print run log lines on stderr, once per process, unless the user configured
    the ``daskflow`` logger themselves."""
    if not enabled:
        return
    with _console_lock:
        root = logging.getLogger("daskflow")
        if root.handlers:
            return
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(MaskingFilter())
        handler.setFormatter(_ConsoleFormatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(run_prefix)s%(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def emit_line(flow_run: FlowRun, line: LogLine) -> None:
    """Keep a task's log line in the record and print it like a local one."""
    flow_run.logs.append(line)
    logger = logging.getLogger(RUNS_LOGGER)
    if logger.isEnabledFor(line.level):
        record = logging.LogRecord(RUNS_LOGGER, line.level, "", 0, line.message, None, None)
        record.created = line.timestamp
        record.msecs = (line.timestamp % 1) * 1000
        record.daskflow_run = f"Task run {line.task_run_name!r}"
        logger.handle(record)

