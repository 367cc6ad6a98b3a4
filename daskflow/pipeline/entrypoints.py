"""Find a flow by its entrypoint: ``path/to/file.py:flow`` or ``package.module:flow``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from ..exceptions import FlowImportError, InvalidOptionError

__all__ = ["flows_in", "load_flow"]


def load_flow(target: str) -> Any:
    """The :class:`~daskflow.Flow` named by ``PATH.py:FLOW`` or ``module:FLOW``.

    ``PATH.py`` alone works when the file defines exactly one flow. A file is
    imported under its file name (so its tasks share cache entries with
    ``python PATH.py``) and its functions are shipped to workers by value.

    Raises
    ------
    InvalidOptionError
        If the file, module or flow cannot be found.
    FlowImportError
        If importing the file raised (the cause is chained).
    """
    from .flow import Flow

    path, _, name = target.rpartition(":") if ":" in target and not _is_windows_drive(target) else (target, "", "")
    if path.endswith(".py") or os.sep in path or "/" in path:
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            raise InvalidOptionError(f"cannot import module {path!r} ({exc}); give PATH.py:FLOW or an importable module:FLOW") from None
    if name:
        flow = getattr(module, name, None)
        if not isinstance(flow, Flow):
            found = flows_in(module)
            raise InvalidOptionError(
                f"{path!r} has no flow named {name!r}" + (f"; its flows: {', '.join(found)}" if found else "; decorate a function with @flow")
            )
        return flow
    found = flows_in(module)
    if len(found) != 1:
        what = f"defines {len(found)} flows ({', '.join(found)})" if found else "defines no @flow"
        raise InvalidOptionError(f"{path!r} {what}; name one, like {path}:{found[0] if found else 'my_flow'}")
    return getattr(module, found[0])


def flows_in(module: Any) -> list[str]:
    """Names of the module's attributes that are flows, sorted."""
    from .flow import Flow

    return sorted(name for name, value in vars(module).items() if isinstance(value, Flow))


def _is_windows_drive(target: str) -> bool:
    return len(target) > 2 and target[1] == ":" and target[2] in "\\/"


def _nearby_files(path: str) -> str:
    """``(did you mean 'examples/quickstart.py'?)`` from the ``.py`` files that
    exist where ``path`` points, or how to name a file when none is close."""
    import difflib

    folder = os.path.dirname(path)
    try:
        names = [n for n in os.listdir(folder or ".") if n.endswith(".py")]
    except OSError:
        names = []
    close = difflib.get_close_matches(os.path.basename(path), names, n=3, cutoff=0.6)
    if close:
        return f" (did you mean {', '.join(repr(os.path.join(folder, n)) for n in close)}?)"
    return f"; give the path of a .py file that defines a @flow, as PATH.py:FLOW (from {os.getcwd()})"


def _import_file(path: str) -> Any:
    import cloudpickle

    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise InvalidOptionError(f"flow file {path!r} does not exist" + _nearby_files(path))
    name = os.path.splitext(os.path.basename(full))[0]
    existing = sys.modules.get(name)
    if existing is not None:
        if os.path.abspath(getattr(existing, "__file__", "") or "") == full:
            return existing  # imported already (a deployment registered twice in one process)
        if not getattr(existing, "__daskflow_flow_file__", False):
            # Importing it under its name would replace that module for everyone in
            # this process (a json.py would break every later json.dumps). Another
            # flow file of that name, imported here before, may be replaced.
            raise InvalidOptionError(
                f"flow file {path!r} is named like the module {name!r} already imported from "
                f"{getattr(existing, '__file__', None) or 'Python itself'}; rename the file"
            )
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise InvalidOptionError(f"cannot load {path!r} as Python; give a .py file")
    module = importlib.util.module_from_spec(spec)
    module.__daskflow_flow_file__ = True  # type: ignore[attr-defined]
    # Its siblings import as they would under `python PATH.py`.
    sys.path.insert(0, os.path.dirname(full))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise FlowImportError(f"importing {path!r} raised {type(exc).__name__}: {exc}") from exc
    # Workers cannot import a file by path: send its functions by value, as for a script.
    cloudpickle.register_pickle_by_value(module)
    return module
