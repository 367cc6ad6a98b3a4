"""Every exception daskflow raises, in one place.

Hierarchy::

    DaskflowError
    ├── InvalidOptionError (ValueError)        a decorator or runner option is wrong
    │   ├── InvalidScheduleError               a cron, interval or rrule schedule is unusable
    │   └── InvalidDeploymentError             a deployment (or daskflow.yaml) is unusable
    ├── ParameterValidationError (ValueError)  flow parameters rejected before any task ran
    ├── RunNotFoundError (LookupError)         no run in the history matches an id or name
    ├── DeploymentNotFoundError (LookupError)  no deployment of that name in the store
    ├── MappingLengthMismatch (ValueError)     ``Task.map`` over iterables of unequal length
    ├── MissingContextError (RuntimeError)     ``get_run_logger()`` outside a flow or task
    ├── FlowImportError (ImportError)          importing a flow's file raised
    ├── RunnerError (RuntimeError)             the task runner could not start or submit
    ├── TaskTimeoutError (TimeoutError)        a task overran ``timeout_seconds``
    ├── FlowTimeoutError (TimeoutError)        a flow overran ``timeout_seconds``
    ├── CrashedError                           infrastructure failed: a worker died, ...
    ├── UpstreamFailedError                    a task did not run because an input failed
    ├── CancelledRun                           the run was cancelled
    │   └── ConcurrencyLimitReached            a run met a full limit with ``cancel-new``
    ├── FailedRun                              a failed task whose exception could not be
    │                                          sent back from the worker
    ├── CacheKeyError (ValueError)             an input cannot be hashed deterministically
    ├── SerializationError (ValueError)        a result could not be (de)serialised
    ├── StorageError (OSError)                 result storage failed: names URL and operation
    │   ├── CorruptedResultError               a stored entry failed verification
    │   └── StorageURLError (InvalidOptionError) a storage URL is mistyped (s3:/bucket)
    └── NotInDaskflowError (ImportError)       a Prefect name or module daskflow does not have

Prefect's names for the same exceptions are aliases: ``CrashedRun`` is
``CrashedError`` and ``UpstreamTaskError`` is ``UpstreamFailedError``.

``CacheKeyWarning`` (a ``UserWarning``) is issued when a task with the default
cache policy gets an input that cannot be hashed deterministically.

User exceptions raised inside a task are re-raised as they are (with the remote
traceback attached as a note), as Prefect does.
"""

from __future__ import annotations

from ._absent import module_getattr

__all__ = [
    "CacheKeyError",
    "CacheKeyWarning",
    "CancelledRun",
    "ConcurrencyLimitReached",
    "CorruptedResultError",
    "CrashedError",
    "CrashedRun",
    "DaskflowError",
    "DeploymentNotFoundError",
    "FailedRun",
    "FlowImportError",
    "FlowTimeoutError",
    "InvalidDeploymentError",
    "InvalidOptionError",
    "InvalidScheduleError",
    "MappingLengthMismatch",
    "MissingContextError",
    "NoWorkersError",
    "NotInDaskflowError",
    "ParameterValidationError",
    "ReturnedStateError",
    "RunNotFoundError",
    "RunnerError",
    "SerializationError",
    "StorageError",
    "StorageURLError",
    "TaskTimeoutError",
    "UpstreamFailedError",
    "UpstreamTaskError",
]


class DaskflowError(Exception):
    """Base class of every error daskflow raises itself."""


class InvalidOptionError(DaskflowError, ValueError):
    """An option given to ``@task``, ``@flow`` or a runner is invalid."""


class InvalidScheduleError(InvalidOptionError):
    """A schedule cannot be used: a bad cron, timezone, rrule or interval, or one
    that never fires. The message names the field, the bad value and the fix."""


class InvalidDeploymentError(InvalidOptionError):
    """A deployment cannot be registered: a bad entrypoint, parameters that do not
    fit the flow, an unknown option, a malformed ``daskflow.yaml``."""


class ParameterValidationError(DaskflowError, ValueError):
    """Flow parameters failed validation; no task was submitted.

    Attributes
    ----------
    errors : list of dict
        One entry per bad field: ``{"field": ..., "error": ...}``.
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    def __reduce__(self):  # keep ``errors`` across pickling
        return (type(self), (self.args[0], self.errors))


class MappingLengthMismatch(DaskflowError, ValueError):
    """``Task.map`` was given iterables of different lengths."""


class MissingContextError(DaskflowError, RuntimeError):
    """A run-scoped helper was called outside any flow or task run."""


class FlowImportError(DaskflowError, ImportError):
    """Importing the file or module of a flow's entrypoint raised; the cause is chained."""


class RunnerError(DaskflowError, RuntimeError):
    """The task runner could not start, connect or submit."""


class TaskTimeoutError(DaskflowError, TimeoutError):
    """A task run exceeded its ``timeout_seconds``."""


class FlowTimeoutError(DaskflowError, TimeoutError):
    """A flow run exceeded its ``timeout_seconds``."""


class CrashedError(DaskflowError):
    """A run did not finish because of infrastructure, not user code.

    Raised for a worker that died (``KilledWorker``), a lost connection or a
    result that vanished with its worker.
    """


class NoWorkersError(CrashedError):
    """No Dask worker was left to run a task for ``daskflow.dask.no-workers-timeout`` seconds."""


class UpstreamFailedError(DaskflowError):
    """A task run never started because one of its inputs did not complete."""


class CancelledRun(DaskflowError):
    """The flow or task run was cancelled."""


class ConcurrencyLimitReached(CancelledRun):
    """A deployment's run found its concurrency limit taken, and its collision
    strategy is ``cancel-new``: the run is Cancelled without starting."""


class ReturnedStateError(DaskflowError):
    """A task returned a state that is not Completed (``return Failed(message=...)``):
    as in Prefect, the task run ends in that state; its message is the state's."""


class FailedRun(DaskflowError):
    """A task failed with an exception that could not be sent back intact.

    The message holds the remote exception's type, text and traceback.
    """


class CacheKeyError(DaskflowError, ValueError):
    """A task input cannot be hashed deterministically, and caching was asked for."""


class CacheKeyWarning(UserWarning):
    """A task runs uncached because an input cannot be hashed deterministically."""


class SerializationError(DaskflowError, ValueError):
    """A task result could not be serialised for storage, or a stored one read back."""


class RunNotFoundError(DaskflowError, LookupError):
    """No run in a store's history matches the id, id prefix or name given (or
    several do); the message says how to list runs."""


class DeploymentNotFoundError(DaskflowError, LookupError):
    """No deployment of that name is registered in the store; the message says how
    to list them."""


class StorageError(DaskflowError, OSError):
    """Result storage failed for a reason other than a missing entry.

    The message names the storage URL (never credentials), the operation and the
    likely fix. A missing entry is not an error: it is a cache miss.

    Attributes
    ----------
    url : str
        The store or object URL involved.
    operation : str
        What was being done: ``"write"``, ``"read"``, ``"delete"``, ``"list"``, ``"probe"``.
    """

    def __init__(self, message: str, url: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.operation = operation

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return (type(self), (str(self), self.url, self.operation))


class CorruptedResultError(StorageError):
    """A stored entry failed its size, digest or signature check; it was not deserialised."""


class StorageURLError(InvalidOptionError, StorageError):
    """A storage URL that looks like a mistyped protocol (``s3:/bucket``,
    ``s3//bucket``, ``gs:bucket``) or names no bucket: refused before anything is
    written, with the correction, instead of making a local folder named ``s3:``.

    Both an :class:`InvalidOptionError` (a bad value) and a :class:`StorageError`.
    """


class NotInDaskflowError(DaskflowError, ImportError):
    """A Prefect module or name that daskflow does not provide.

    The message names the Prefect name, the daskflow equivalent (or says that
    the feature is not part of daskflow) and links ``docs/migrating-from-prefect.md``.
    An ``ImportError``, so ``from daskflow.X import Y`` shows this message.
    """


# Prefect's names for the same things (``prefect.exceptions``), for migrating ``except`` clauses.
CrashedRun = CrashedError
UpstreamTaskError = UpstreamFailedError


# Prefect exceptions daskflow does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
