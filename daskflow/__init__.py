"""daskflow: Prefect-style flows and tasks that run as a dynamic Dask graph.

Examples
--------
>>> from daskflow import flow, task
>>> @task
... def double(x: int) -> int:
...     return 2 * x
>>> @flow
... def pipeline(n: int = 3) -> list[int]:
...     return double.map(range(n)).result()
"""


import sys as _sys

from . import config  # noqa: F401  (registers the daskflow config defaults)
from .context import get_run_context
from .deployments.deployment import Deployment, deploy
from .deployments.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from .deployments.serve import serve
from .exceptions import (
    CacheKeyError,
    CacheKeyWarning,
    CancelledRun,
    ConcurrencyLimitReached,
    CorruptedResultError,
    CrashedError,
    DeploymentNotFoundError,
    FailedRun,
    FlowImportError,
    FlowTimeoutError,
    InvalidDeploymentError,
    InvalidScheduleError,
    MappingLengthMismatch,
    ParameterValidationError,
    RunNotFoundError,
    SerializationError,
    StorageError,
    TaskTimeoutError,
    UpstreamFailedError,
)
from .pipeline.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from .pipeline.cache import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    NONE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyContext,
    CacheKeyFnPolicy,
    CachePolicy,
    task_input_hash,
)
from .pipeline.context import get_run_logger, tags
from .pipeline.flow import RUN_WATCHERS as _RUN_WATCHERS
from .pipeline.flow import Flow, flow
from .pipeline.futures import PrefectFuture, TaskFuture, TaskFutureList, as_completed, unmapped, wait
from .pipeline.retries import exponential_backoff
from .pipeline.runs import FlowRun, TaskRun
from .pipeline.states import State, StateType
from .pipeline.task import Task, task
from .runners import (
    ConcurrentTaskRunner,
    DaskTaskRunner,
    SequentialTaskRunner,
    TaskRunner,
    ThreadPoolTaskRunner,
)
from .status.feed import watch as _watch_on_status_page
from .storage import Store
from .storage.records import History
from .task_runners import get_dask_client

# Runs on a Dask cluster feed the status page of its dashboard (``daskflow.status``).
_RUN_WATCHERS.append(_watch_on_status_page)

__version__ = "0.1.0"

__all__ = [
    "CacheKeyContext",
    "CacheKeyError",
    "CacheKeyFnPolicy",
    "CacheKeyWarning",
    "CachePolicy",
    "CancelledRun",
    "ConcurrencyLimitReached",
    "ConcurrentTaskRunner",
    "CorruptedResultError",
    "CrashedError",
    "CronSchedule",
    "DEFAULT",
    "DaskTaskRunner",
    "Deployment",
    "DeploymentNotFoundError",
    "FLOW_PARAMETERS",
    "FailedRun",
    "Flow",
    "FlowImportError",
    "FlowRun",
    "FlowTimeoutError",
    "History",
    "INPUTS",
    "IntervalSchedule",
    "InvalidDeploymentError",
    "InvalidScheduleError",
    "MappingLengthMismatch",
    "NONE",
    "NO_CACHE",
    "ParameterValidationError",
    "PrefectFuture",
    "RRuleSchedule",
    "RUN_ID",
    "RunNotFoundError",
    "SequentialTaskRunner",
    "SerializationError",
    "State",
    "StateType",
    "StorageError",
    "Store",
    "TASK_SOURCE",
    "Task",
    "TaskFuture",
    "TaskFutureList",
    "TaskRun",
    "TaskRunner",
    "TaskTimeoutError",
    "ThreadPoolTaskRunner",
    "UpstreamFailedError",
    "as_completed",
    "create_image_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_progress_artifact",
    "create_table_artifact",
    "deploy",
    "exponential_backoff",
    "flow",
    "get_dask_client",
    "get_run_context",
    "get_run_logger",
    "serve",
    "tags",
    "task",
    "task_input_hash",
    "unmapped",
    "update_progress_artifact",
    "wait",
]

# Tracebacks and reprs show the public path (daskflow.Task), not the module that defines it.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("daskflow."):
        try:
            _obj.__module__ = "daskflow"
        except (AttributeError, TypeError):
            pass
del _name, _obj


def __getattr__(name: str) -> object:
    # Prefect top-level names daskflow does not have: one clear error (daskflow._absent).
    # ``from daskflow import get_client`` must show that message, but CPython replaces an
    # AttributeError raised during ``from X import Y`` with its own text, and ``hasattr`` needs
    # an AttributeError to answer False; so the error raised depends on the caller's instruction.
    from ._absent import ABSENT_NAMES, not_in_daskflow

    if name not in ABSENT_NAMES:
        raise AttributeError(f"module 'daskflow' has no attribute {name!r}")
    error = not_in_daskflow(f"prefect.{name}", ABSENT_NAMES[name])
    if _called_by_import_from():
        raise error
    raise AttributeError(str(error), name=name, obj=_sys.modules[__name__])


def _called_by_import_from() -> bool:
    import dis

    frame = _sys._getframe(2)  # the frame running ``from daskflow import name``
    try:
        return dis.opname[frame.f_code.co_code[frame.f_lasti]] == "IMPORT_FROM"
    except IndexError:
        return False
