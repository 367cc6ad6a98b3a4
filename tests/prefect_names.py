"""Write tests/prefect_names.json: the public names of Prefect's modules that migrating code imports.

Run with a Python that has Prefect and prefect-dask installed (not needed in CI)::

    DO_NOT_TRACK=1 python tests/prefect_names.py

A module's names are its ``__all__`` when it has one; otherwise the public names of
``dir(module)`` defined in that module itself (so helpers it imports from elsewhere in
Prefect, ``typing`` or the stdlib are left out), plus ``REEXPORTS``: names defined elsewhere
that Prefect's documentation imports from that module. Type variables are left out.
``prefect.runtime.*`` modules list their attributes (``__all__``). The test
tests/test_prefect_modules.py checks the migration guide against this file.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import types
import typing

MODULES = [
    "prefect",
    "prefect.flows",
    "prefect.tasks",
    "prefect.futures",
    "prefect.states",
    "prefect.task_runners",
    "prefect.cache_policies",
    "prefect.artifacts",
    "prefect.logging",
    "prefect.runtime",
    "prefect.runtime.flow_run",
    "prefect.runtime.task_run",
    "prefect.runtime.deployment",
    "prefect.context",
    "prefect.exceptions",
    "prefect_dask",
]

REEXPORTS = {
    "prefect.states": ["State", "StateType"],
    "prefect.futures": ["wait"],
    "prefect.tasks": ["task_input_hash", "exponential_backoff"],
    "prefect_dask": ["DaskTaskRunner", "get_async_dask_client", "get_dask_client"],
}


def public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return sorted(set(names))
    found = set(REEXPORTS.get(module.__name__, []))
    for name in dir(module):
        obj = getattr(module, name)
        if name.startswith("_") or isinstance(obj, (types.ModuleType, typing.TypeVar, typing.ParamSpec)):
            continue
        if getattr(obj, "__module__", None) == module.__name__:
            found.add(name)
    return sorted(found)


def main() -> None:
    import prefect

    out = {"prefect_version": prefect.__version__, "modules": {}}
    for name in MODULES:
        out["modules"][name] = public_names(importlib.import_module(name))
    path = pathlib.Path(__file__).with_name("prefect_names.json")
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: {sum(map(len, out['modules'].values()))} names")


if __name__ == "__main__":
    main()
