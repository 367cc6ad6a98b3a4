"""Code snapshots: a deployment's flow code, stored by hash, loaded on any worker.

Registering a deployment zips the code its entrypoint lives in (the flow file,
or the whole top-level package it belongs to) and stores the zip under
``code/<sha256>.zip`` in the store. A worker that runs the deployment fetches
the zip once, unpacks it into a local cache folder named by the hash and imports
the entrypoint from there, so workers need no checkout of the user's repository,
and a run always uses the code that was registered, whatever has changed since.

The zip is deterministic (sorted entries, fixed timestamps and modes): the same
code gives the same hash on every machine, so registering it again stores
nothing new. Functions of the imported module are pickled by value (as for a
script), so the run's tasks reach workers that never saw the snapshot.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from dataclasses import asdict, dataclass
from typing import Any

import dask.config

from ..exceptions import CorruptedResultError, InvalidDeploymentError
from ..storage.store import Store

__all__ = ["CodeRef", "build_snapshot", "load_snapshot_flow", "locate_entrypoint", "publish_snapshot"]

#: The largest snapshot accepted; code, not data, belongs in one.
MAX_BYTES = 64 * 2**20
CODE = "code"
_SKIP_DIRS = {"__pycache__", "node_modules"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class CodeRef:
    """Where a deployment's flow lives inside its snapshot.

    Attributes
    ----------
    hash : str
        sha256 of the snapshot's zip (its name in the store).
    kind : str
        ``"file"`` (one ``.py`` file) or ``"package"`` (a top-level package folder).
    root : str
        The file's or the package folder's name inside the zip.
    module : str
        The import name of the entrypoint's module (``flows``, ``mypkg.pipelines``).
    attr : str
        The flow's attribute in that module.
    size : int
        Bytes of the zip.
    """

    hash: str
    kind: str
    root: str
    module: str
    attr: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodeRef:
        return cls(**{name: data[name] for name in ("hash", "kind", "root", "module", "attr", "size")})


@dataclass(frozen=True)
class Located:
    """An entrypoint resolved on the registering machine."""

    source: str  # the file, or the top-level package folder
    kind: str
    module: str
    attr: str
    file: str  # the file that defines the flow


def locate_entrypoint(entrypoint: str) -> Located:
    """Resolve ``path/to/file.py:flow`` or ``package.module:flow`` to the code to snapshot.

    Raises
    ------
    InvalidDeploymentError
        Naming the entrypoint and what to write instead.
    """
    if not isinstance(entrypoint, str) or ":" not in entrypoint.strip(":"):
        raise InvalidDeploymentError(
            f"entrypoint {entrypoint!r} must name a file and a flow, like 'flows/train.py:train' or 'mypkg.flows:train'"
        )
    target, _, attr = entrypoint.rpartition(":")
    if not attr.isidentifier():
        raise InvalidDeploymentError(f"entrypoint {entrypoint!r}: {attr!r} is not a Python name; write PATH.py:FLOW or module:FLOW")
    if target.endswith(".py") or "/" in target or os.sep in target:
        file = os.path.abspath(target)
        if not os.path.isfile(file):
            raise InvalidDeploymentError(f"entrypoint {entrypoint!r}: file {target!r} does not exist (paths are relative to {os.getcwd()})")
        return _from_file(file, attr, entrypoint)
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError) as exc:
        spec = None
        reason = f" ({exc})"
    else:
        reason = ""
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        raise InvalidDeploymentError(
            f"entrypoint {entrypoint!r}: module {target!r} cannot be found{reason}; give PATH.py:FLOW or an importable module:FLOW"
        )
    return _from_file(os.path.abspath(spec.origin), attr, entrypoint)


def _from_file(file: str, attr: str, entrypoint: str) -> Located:
    folder = os.path.dirname(file)
    stem = os.path.splitext(os.path.basename(file))[0]
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        if not stem.isidentifier():
            raise InvalidDeploymentError(f"entrypoint {entrypoint!r}: {os.path.basename(file)!r} cannot be imported; name the file like a module (train_flow.py)")
        _refuse_shadowing(stem, entrypoint)
        return Located(file, "file", stem, attr, file)
    parts = [] if stem == "__init__" else [stem]
    top = folder
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        top, folder = folder, parent
    _refuse_shadowing(parts[0], entrypoint)
    return Located(top, "package", ".".join(parts), attr, file)


def _refuse_shadowing(name: str, entrypoint: str) -> None:
    # A file named like a standard-library module would be shadowed by (or
    # shadow) that module on workers.
    if name in sys.stdlib_module_names:
        raise InvalidDeploymentError(
            f"entrypoint {entrypoint!r}: its module name {name!r} is a standard-library module's; rename the file or package"
        )


def build_snapshot(located: Located) -> tuple[CodeRef, bytes]:
    """The deterministic zip of ``located.source`` and its reference.

    Raises
    ------
    InvalidDeploymentError
        If the code is larger than :data:`MAX_BYTES`.
    """
    if located.kind == "file":
        files = [(os.path.basename(located.source), located.source)]
    else:
        files = sorted(_package_files(located.source))
    total = sum(os.path.getsize(path) for _, path in files)
    if total > MAX_BYTES:
        biggest = sorted(files, key=lambda item: os.path.getsize(item[1]), reverse=True)[:3]
        names = ", ".join(f"{name} ({os.path.getsize(path) / 2**20:.1f} MB)" for name, path in biggest)
        raise InvalidDeploymentError(
            f"the code of {located.source!r} is {total / 2**20:.0f} MB, over the {MAX_BYTES // 2**20} MB a snapshot may hold "
            f"(largest: {names}); keep data out of the package and read it from storage instead"
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as file:
                archive.writestr(info, file.read())
    data = buffer.getvalue()
    root = os.path.basename(located.source)
    ref = CodeRef(hashlib.sha256(data).hexdigest(), located.kind, root, located.module, located.attr, len(data))
    return ref, data


def _package_files(top: str) -> list[tuple[str, str]]:
    base = os.path.dirname(top)
    out = []
    for folder, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in names:
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                out.append((os.path.relpath(path, base).replace(os.sep, "/"), path))
    return out


def publish_snapshot(store: Store, ref: CodeRef, data: bytes) -> None:
    """Store the zip at ``code/<hash>.zip`` unless it is there already."""
    path = f"{CODE}/{ref.hash}.zip"
    if store.exists(path):
        return
    try:
        store.put(path, data, create_only=True)
    except FileExistsError:
        pass  # the same code, registered at the same moment elsewhere


# ------------------------------------------------------------------ worker side
_import_lock = threading.Lock()
#: Top-level module name -> hash of the snapshot it was imported from, in this process.
_loaded: dict[str, str] = {}


def _cache_root() -> str:
    configured = dask.config.get("daskflow.deployments.code-cache", None)
    if configured:
        return os.path.abspath(os.path.expanduser(str(configured)))
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"daskflow-code-{uid}")


def _unpacked(store: Store, ref: CodeRef) -> str:
    """The local folder holding the snapshot's files (fetched and unpacked once per machine)."""
    root = _cache_root()
    folder = os.path.join(root, ref.hash)
    if os.path.isdir(folder):
        return folder
    data = store.get(f"{CODE}/{ref.hash}.zip")
    if hashlib.sha256(data).hexdigest() != ref.hash:
        raise CorruptedResultError(
            f"the code snapshot {ref.hash[:12]} in {store.url} does not match its hash; register the deployment again (daskflow deploy)",
            store.url, "read",
        )
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(dir=root, prefix=".tmp-")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                # A name that climbs out of the folder (zip slip) is never unpacked.
                target = os.path.realpath(os.path.join(staging, member))
                if not target.startswith(os.path.realpath(staging) + os.sep):
                    raise CorruptedResultError(f"the code snapshot {ref.hash[:12]} holds an unsafe path {member!r}", store.url, "read")
            archive.extractall(staging)
        try:
            os.rename(staging, folder)  # atomic: concurrent loaders see all or nothing
        except OSError:
            if not os.path.isdir(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_snapshot_flow(store: Store, ref: CodeRef) -> Any:
    """Import the deployment's flow from its snapshot; returns the :class:`~daskflow.Flow`.

    Raises
    ------
    InvalidDeploymentError
        If the module has no flow of that name, or a module of the same name
        that is not the snapshot's is already imported here.
    Exception
        Whatever importing the user's module raises.
    """
    import cloudpickle

    from ..pipeline.flow import Flow

    folder = _unpacked(store, ref)
    top = ref.module.split(".")[0]
    with _import_lock:
        previous = _loaded.get(top)
        if previous is None and top in sys.modules:
            raise InvalidDeploymentError(
                f"module {top!r} of the deployment's code is already imported on this worker from "
                f"{getattr(sys.modules[top], '__file__', '?')}; rename the flow's file or package"
            )
        if previous is not None and previous != ref.hash:
            # Another version of the same code ran here before: forget its modules
            # (runs still using them keep their own references).
            for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
                del sys.modules[name]
            importlib.invalidate_caches()
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
        module = importlib.import_module(ref.module)
        _loaded[top] = ref.hash
        cloudpickle.register_pickle_by_value(sys.modules[top])
    flow = getattr(module, ref.attr, None)
    if not isinstance(flow, Flow):
        raise InvalidDeploymentError(f"{ref.module!r} in the code snapshot {ref.hash[:12]} has no flow named {ref.attr!r}")
    return flow
