"""Prefect features that are not part of daskflow: one decision per name, in one place.

Used by the stub modules for Prefect's module paths (``daskflow.blocks``, ...), which
raise at import, and by the module ``__getattr__`` of every daskflow module on a
Prefect path (``daskflow``, ``daskflow.states``, ``daskflow.runtime.flow_run``, ...),
made by :func:`module_getattr`, for Prefect names those modules do not have.

This module imports nothing of daskflow at import time: ``daskflow.exceptions``
uses it too.
"""

from __future__ import annotations

import dis
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import NoReturn

__all__ = [
    "ABSENT_MODULES",
    "ABSENT_NAMES",
    "GUIDE",
    "absent_names",
    "daskflow_module",
    "missing_attribute",
    "module_getattr",
    "not_in_daskflow",
    "raise_for_module",
]

GUIDE = "docs/migrating-from-prefect.md"

_NO_SERVER = "daskflow has no API server: run history is in the store (daskflow.History, `daskflow runs`, the status page)"
_NO_PAUSE = "pausing, suspending and resuming flow runs are not part of daskflow (no server holds a paused run)"

# Prefect module path (after the prefect -> daskflow rewrite) -> what to use instead.
ABSENT_MODULES: dict[str, str] = {
    "automations": "automations are not part of daskflow (no server, no events); use on_completion/on_failure hooks",
    "blocks": "blocks are not part of daskflow: storage is a URL (result_storage='s3://...', daskflow.Store); "
    "secrets come from environment variables or dask config",
    "client": _NO_SERVER,
    "concurrency": "global concurrency slots are not part of daskflow; use task tag concurrency limits "
    "(daskflow.storage.limits)",
    "events": "events are not part of daskflow (no server); use hooks or artifacts",
    "filesystems": "filesystems are not part of daskflow: give result_storage a URL (fsspec) or a daskflow.Store",
    "flow_runs": _NO_PAUSE + "; to wait for a run, call the flow, or read daskflow.History",
    "infrastructure": "infrastructure blocks are not part of daskflow: tasks run on Dask workers (DaskTaskRunner)",
    "results": "result objects are not part of daskflow: use result_storage='URL', persist_result and daskflow.Store",
    "serializers": "serializer blocks are not part of daskflow: results are pickled by the store (daskflow.storage)",
    "server": _NO_SERVER,
    "testing": "no test harness is needed: daskflow has no server; call the flow in the test",
    "variables": "variables are not part of daskflow (no server); use environment variables or dask config",
    "workers": "work pools and workers are not part of daskflow: use serve() / `daskflow serve` and Dask workers",
}


def _each(reason: str, names: Iterable[str]) -> dict[str, str]:
    return dict.fromkeys(names, reason)


# Prefect module -> {name the daskflow module does not have: why, and what to use}.
# docs/migrating-from-prefect.md shows these reasons in its table (a test checks both agree).
ABSENT_NAMES: dict[str, dict[str, str]] = {
    "prefect": {
        "Transaction": "transactions are not part of daskflow: each task result is committed on its own",
        "allow_failure": "allow_failure is not part of daskflow: read future.state, or submit with return_state=True, in the flow",
        "aserve": "async serve is not part of daskflow; use serve()",
        "get_client": _NO_SERVER,
        **_each(_NO_PAUSE, ["apause_flow_run", "aresume_flow_run", "asuspend_flow_run", "pause_flow_run", "resume_flow_run", "suspend_flow_run"]),
    },
    "prefect_dask": {
        "get_async_dask_client": "no async Dask client helper; use get_dask_client() (a sync context manager) in a task",
    },
    "prefect.artifacts": _each(
        "Prefect's artifact model classes are not part of daskflow: create artifacts with the create_*_artifact functions; "
        "read the latest of a key with daskflow.artifacts.Artifact.get(key)",
        ["ImageArtifact", "LinkArtifact", "MarkdownArtifact", "ProgressArtifact", "TableArtifact"],
    ),
    "prefect.cache_policies": _each(
        "the policy classes are not exported: compose daskflow's policies with + (INPUTS + TASK_SOURCE)",
        ["CompoundCachePolicy", "FlowParameters", "Inputs", "RunId", "TaskSource"],
    ),
    "prefect.context": _each(
        "Prefect's engine, client and settings contexts are not part of daskflow; use get_run_context(), "
        "daskflow.runtime.flow_run / task_run and tags()",
        [
            "AssetContext", "AsyncClientContext", "ContextModel", "EngineContext", "GLOBAL_SETTINGS_CONTEXT", "RunContext",
            "SettingsContext", "SyncClientContext", "TagsContext", "get_settings_context", "hydrated_context",
            "refresh_global_settings_context", "root_settings_context", "serialize_context", "use_profile", "with_context",
        ],
    ),
    "prefect.exceptions": _each(
        "this Prefect API, block, profile, pause or infrastructure error has no daskflow counterpart; "
        "daskflow's errors derive from daskflow.exceptions.DaskflowError",
        [
            "Abort", "BlockMissingCapabilities", "ConfigurationError", "EventTooLarge", "ExternalSignal", "FlowPauseTimeout",
            "FlowRunWaitTimeout", "FlowRunWatchError", "HashError", "InfrastructureError", "InfrastructureNotAvailable",
            "InfrastructureNotFound", "InvalidNameError", "InvalidRepositoryURLError", "MappingMissingIterable",
            "MissingFlowError", "MissingProfileError", "MissingResult", "NotPausedError", "ObjectAlreadyExists",
            "ObjectLimitReached", "ObjectNotFound", "ObjectUnsupported", "ParameterBindError", "ParameterTypeError", "Pause",
            "PausedRun", "PrefectException", "PrefectHTTPStatusError", "PrefectImportError", "PrefectSignal",
            "ProfileSettingsValidationError", "ProtectedBlockError", "ReservedArgumentError", "ScriptError",
            "SignatureMismatchError", "TerminationSignal", "UnfinishedRun", "UnspecifiedFlowError", "exception_traceback",
        ],
    ),
    "prefect.flows": {
        "aserve": "async serve is not part of daskflow; use serve()",
        **_each(
            "Prefect's deployment and infrastructure machinery is not part of daskflow: run a flow from a file with "
            "`daskflow run file.py:flow`, deploy it with daskflow.deploy or serve()",
            [
                "FlowDecorator", "FlowStateHook", "InfrastructureBoundFlow", "bind_flow_to_infrastructure", "is_entrypoint_async",
                "load_flow_arguments_from_entrypoint", "load_flow_from_entrypoint", "load_flow_from_flow_run",
                "load_function_and_convert_to_flow", "load_placeholder_flow", "safe_load_flow_from_entrypoint", "select_flow",
            ],
        ),
    },
    "prefect.futures": _each(
        "Prefect's per-executor future classes are not part of daskflow: it has one future class, TaskFuture (PrefectFuture)",
        ["PrefectConcurrentFuture", "PrefectDistributedFuture", "PrefectFlowRunFuture", "PrefectTaskRunFuture", "PrefectWrappedFuture"],
    ),
    "prefect.runtime.flow_run": {
        **_each("daskflow has no API server or UI, so runs have no URLs (the Dask dashboard's status page shows them)", ["api_url", "ui_url"]),
        "job_variables": "daskflow has no work pools, so a run has no job variables",
    },
    "prefect.runtime.task_run": _each(
        "daskflow has no API server or UI, so runs have no URLs (the Dask dashboard's status page shows them)", ["api_url", "ui_url"]
    ),
    "prefect.states": _each(
        "this Prefect server state or state helper is not part of daskflow; read state.type, state.is_failed(), "
        "state.result() on daskflow's State",
        [
            "AwaitingConcurrencySlot", "Cancelling", "InfrastructurePending", "Paused", "StateGroup", "Submitting", "Suspended",
            "aget_state_exception", "araise_state_exception", "exception_to_crashed_state", "exception_to_failed_state",
            "format_exception", "get_state_exception", "get_state_result", "is_state_iterable", "raise_state_exception",
            "return_value_to_state", "to_state_create",
        ],
    ),
    "prefect.task_runners": _each(
        "not part of daskflow: DaskTaskRunner runs tasks in worker processes", ["PrefectTaskRunner", "ProcessPoolTaskRunner"]
    ),
    "prefect.tasks": _each("Prefect internals (typing helpers, asset tasks) with no daskflow counterpart", ["MaterializingTask", "TaskOptions", "TaskRunNameCallbackWithParameters"]),
}


def daskflow_module(prefect_module: str) -> str:
    """The daskflow module that holds ``prefect_module``'s names (``prefect_dask``'s are top-level)."""
    if prefect_module in ("prefect", "prefect_dask"):
        return "daskflow"
    return prefect_module.replace("prefect", "daskflow", 1)


def absent_names(module: str) -> dict[str, tuple[str, str]]:
    """The Prefect names daskflow module ``module`` does not have: name -> (Prefect's full name, reason)."""
    found: dict[str, tuple[str, str]] = {}
    for prefect_module, names in ABSENT_NAMES.items():
        if daskflow_module(prefect_module) == module:
            found.update({name: (f"{prefect_module}.{name}", reason) for name, reason in names.items()})
    return found


def not_in_daskflow(prefect_name: str, advice: str) -> Exception:
    """Return the error for a Prefect name daskflow does not provide.

    Parameters
    ----------
    prefect_name
        The Prefect name as the user wrote it, e.g. ``prefect.blocks.system``.
    advice
        The daskflow equivalent, or why the feature is not part of daskflow.
    """
    from .exceptions import NotInDaskflowError  # imported when raised: daskflow.exceptions imports this module

    return NotInDaskflowError(f"{prefect_name} (Prefect) is not in daskflow: {advice}. See {GUIDE}.", name=prefect_name)


def raise_for_module(module_name: str) -> None:
    """Raise the error for importing ``daskflow.<path>``, a Prefect module daskflow does not have."""
    top = module_name.split(".")[1]
    raise not_in_daskflow(module_name.replace("daskflow", "prefect", 1), ABSENT_MODULES[top])


def missing_attribute(module: str, name: str, caller: FrameType | None, plain: str | None = None) -> Exception:
    """What looking up ``name`` on daskflow module ``module`` raises when it has no such attribute.

    For a Prefect name in :data:`ABSENT_NAMES`: :class:`~daskflow.exceptions.NotInDaskflowError`
    (an ``ImportError``) when ``caller`` is running ``from module import name``, so that
    statement shows why and what to use; an ``AttributeError`` with the same text otherwise,
    so ``hasattr`` answers ``False`` and ``getattr(module, name, default)`` works. CPython
    replaces an ``AttributeError`` raised during ``from X import Y`` with its own text, hence
    the look at the caller's instruction. Any other name: a plain ``AttributeError``
    (``plain`` is its message).

    Parameters
    ----------
    module
        The module's ``__name__``.
    name
        The attribute looked up.
    caller
        The frame that looked it up (``sys._getframe(1)`` in the module's ``__getattr__``).
    plain
        The message for names daskflow knows nothing about.
    """
    absent = absent_names(module).get(name)
    if absent is None:
        return AttributeError(plain or f"module {module!r} has no attribute {name!r}", name=name, obj=sys.modules.get(module))
    error = not_in_daskflow(*absent)
    if _runs_import_from(caller):
        return error
    return AttributeError(str(error), name=name, obj=sys.modules.get(module))


def module_getattr(module: str) -> Callable[[str], NoReturn]:
    """The module ``__getattr__`` of daskflow module ``module`` (``__getattr__ = module_getattr(__name__)``).

    It is called only for attributes the module lacks and raises what
    :func:`missing_attribute` says.
    """

    def __getattr__(name: str) -> NoReturn:
        raise missing_attribute(module, name, sys._getframe(1))

    __getattr__.__qualname__ = f"{module}.__getattr__"
    return __getattr__


def _runs_import_from(frame: FrameType | None) -> bool:
    """Whether ``frame`` is executing an ``IMPORT_FROM`` instruction (``from X import Y``)."""
    if frame is None:
        return False
    try:
        return dis.opname[frame.f_code.co_code[frame.f_lasti]] == "IMPORT_FROM"
    except IndexError:
        return False
