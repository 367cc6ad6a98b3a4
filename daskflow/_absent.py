"""Prefect features that are not part of daskflow: one decision per name, in one place.

Used by the stub modules for Prefect's module paths (``daskflow.blocks``, ...), which
raise at import, and by ``daskflow.__getattr__`` for Prefect's top-level names.
"""

from __future__ import annotations

from .exceptions import NotInDaskflowError

__all__ = ["ABSENT_MODULES", "ABSENT_NAMES", "GUIDE", "not_in_daskflow", "raise_for_module"]

GUIDE = "docs/migrating-from-prefect.md"

_NO_SERVER = "daskflow has no API server: run history is in the store (daskflow.History, `daskflow runs`, the status page)"

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
    "infrastructure": "infrastructure blocks are not part of daskflow: tasks run on Dask workers (DaskTaskRunner)",
    "results": "result objects are not part of daskflow: use result_storage='URL', persist_result and daskflow.Store",
    "serializers": "serializer blocks are not part of daskflow: results are pickled by the store (daskflow.storage)",
    "server": _NO_SERVER,
    "testing": "no test harness is needed: daskflow has no server; call the flow in the test",
    "variables": "variables are not part of daskflow (no server); use environment variables or dask config",
    "workers": "work pools and workers are not part of daskflow: use serve() / `daskflow serve` and Dask workers",
}

# Prefect top-level name -> what to use instead.
ABSENT_NAMES: dict[str, str] = {
    "get_client": _NO_SERVER,
    "get_async_dask_client": "no async Dask client helper; use get_dask_client() (a sync context manager) in a task",
    "aserve": "async serve is not part of daskflow; use serve()",
    "pause_flow_run": "pausing a flow run is not part of daskflow (no server to resume it)",
    "resume_flow_run": "pausing a flow run is not part of daskflow (no server to resume it)",
    "suspend_flow_run": "suspending a flow run is not part of daskflow (no server to resume it)",
    "allow_failure": "allow_failure is not part of daskflow yet: read future.state inside the flow instead",
}


def not_in_daskflow(prefect_name: str, advice: str) -> NotInDaskflowError:
    """Return the error for a Prefect name daskflow does not provide.

    Parameters
    ----------
    prefect_name
        The Prefect name as the user wrote it, e.g. ``prefect.blocks.system``.
    advice
        The daskflow equivalent, or why the feature is not part of daskflow.
    """
    return NotInDaskflowError(f"{prefect_name} (Prefect) is not in daskflow: {advice}. See {GUIDE}.", name=prefect_name)


def raise_for_module(module_name: str) -> None:
    """Raise the error for importing ``daskflow.<path>``, a Prefect module daskflow does not have."""
    top = module_name.split(".")[1]
    raise not_in_daskflow(module_name.replace("daskflow", "prefect", 1), ABSENT_MODULES[top])
