"""The status page: live runs on the Dask scheduler's dashboard, stored runs in ``daskflow ui``.

On a scheduler started by hand, install it at start with::

    dask scheduler --preload daskflow.status

A flow run on a :class:`~daskflow.DaskTaskRunner` registers it from its client
otherwise (a LocalCluster that daskflow starts always has it). The page is at
``http://<dashboard>/daskflow``; its JSON at ``/daskflow/api/runs``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PLUGIN_NAME", "ROUTE", "StatusPlugin", "dask_setup"]


def dask_setup(scheduler: Any) -> None:
    """The ``--preload`` entry point: add the plugin (the scheduler starts it)."""
    from .plugin import StatusPlugin

    # Only add: Scheduler.start calls start() on every plugin after the preloads
    # ran; starting it here as well would run it twice.
    scheduler.add_plugin(StatusPlugin())


def __getattr__(name: str) -> Any:
    # Lazy: ``import daskflow`` loads the driver's feed from this package, and
    # must not pay for importing distributed's plugin machinery and bokeh.
    if name in ("PLUGIN_NAME", "ROUTE", "StatusPlugin"):
        from . import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
