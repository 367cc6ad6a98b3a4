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


from . import config  # noqa: F401  (registers the daskflow config defaults)
from ._absent import module_getattr as _module_getattr
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


# Prefect top-level names daskflow does not have raise one clear error (daskflow._absent).
__getattr__ = _module_getattr(__name__)
