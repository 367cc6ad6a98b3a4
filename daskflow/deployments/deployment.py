"""Deployments: a flow, its parameters, schedules, work queue and limits, registered in a store.

A :class:`Deployment` is made with :meth:`Flow.to_deployment
<daskflow.Flow.to_deployment>` or read from a ``daskflow.yaml`` file
(:func:`load_project`), and registered with :func:`deploy`. Registering checks
everything before anything is written: the entrypoint resolves to a flow, the
parameters fit the flow's signature, every schedule parses and fires. It then
stores a snapshot of the flow's code (see :mod:`~daskflow.deployments.snapshot`) and
the deployment's record under ``deployments/`` of the store, where every serve
loop and worker that sees the store finds it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._names import name_key
from ..exceptions import FlowImportError, InvalidDeploymentError, InvalidOptionError, InvalidScheduleError, ParameterValidationError
from ..masking import secrets_in
from ..pipeline.names import check_tag_texts
from ..storage.store import Store, resolve_store
from .registry import Registry, check_deployment_name, deployment_id
from .schedules import Schedule, make_schedule, schedule_from_dict
from .snapshot import CodeRef, build_snapshot, locate_entrypoint, publish_snapshot

__all__ = [
    "CATCHUP_POLICIES",
    "COLLISION_STRATEGIES",
    "DEFAULT_QUEUE",
    "Deployment",
    "check_parameters",
    "deploy",
    "load_project",
    "next_slots",
    "record_schedules",
    "schedules_from_options",
]

#: What happens to slots the serve loop reached too late (it was down, or behind).
CATCHUP_POLICIES = ("skip", "latest", "all")
#: What a run does when its deployment's concurrency limit is reached.
COLLISION_STRATEGIES = ("enqueue", "cancel-new")
#: The queue whose runs go to any worker.
DEFAULT_QUEUE = "default"
#: Record layout version.
FORMAT = 1


class Deployment:
    """A flow with what it takes to run on a schedule: parameters, schedules, queue, limits.

    Make one with :meth:`Flow.to_deployment <daskflow.Flow.to_deployment>` (or
    from ``daskflow.yaml``) and register it with :func:`deploy`. Everything is
    checked here, when it is made, except what needs the flow itself (the
    parameters against its signature), which :func:`deploy` checks.

    Parameters
    ----------
    name : str
        Unique per store: registering the same name again updates it.
    entrypoint : str
        ``path/to/file.py:flow`` or ``package.module:flow``.
    flow : Flow, optional
        The flow, if at hand (``to_deployment``); else it is imported from the entrypoint.
    parameters : dict, optional
        Parameters of every run (JSON values), checked against the flow's signature.
    tags, description, version
        Kept with the deployment; tags are added to each run's. ``version``
        defaults to the git commit of the flow file's repository, else a hash of the code.
    schedules : list of Schedule or dict
        Any number of cron, interval and rrule schedules (none: runs only on demand).
    work_queue_name : str
        The queue: runs go to workers started with ``--resources queue-NAME=1``;
        ``"default"`` runs on any worker.
    paused : bool
        A paused deployment fires nothing until resumed.
    concurrency_limit : int, optional
        At most this many of its runs at once; ``collision_strategy`` says what
        a run beyond the limit does: ``"enqueue"`` (wait) or ``"cancel-new"``.
    catchup : str
        Slots the serve loop reached too late: ``"skip"`` them, run the
        ``"latest"`` one (default), or ``"all"`` of them, at most ``catchup_limit``.
    on_completion, on_failure, on_crashed, on_cancellation : callable, str or list, optional
        Hooks of this deployment's runs, called after the flow's own, on the
        worker that ran the flow: ``hook(flow, flow_run, state)``. A function
        defined at the top level of the flow's file or package (or of an
        installed module), or its ``"module:function"`` name.
    """

    def __init__(
        self,
        *,
        name: str,
        entrypoint: str | None = None,
        flow: Any = None,
        parameters: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        description: str | None = None,
        version: str | None = None,
        schedules: Sequence[Schedule | Mapping[str, Any]] | None = None,
        work_queue_name: str | None = None,
        paused: bool = False,
        concurrency_limit: int | Mapping[str, Any] | None = None,
        collision_strategy: str | None = None,
        catchup: str = "latest",
        catchup_limit: int = 10,
        on_completion: Any = None,
        on_failure: Any = None,
        on_crashed: Any = None,
        on_cancellation: Any = None,
    ) -> None:
        self.name = check_deployment_name(name)
        owner = f"deployment {name!r}"
        if entrypoint is None and flow is None:
            raise InvalidDeploymentError(f"{owner}: give an entrypoint like 'flows/train.py:train'")
        self.entrypoint = entrypoint
        #: The folder a relative file entrypoint is relative to (default: the working directory).
        self.root: str | None = None
        self.flow = flow
        self.parameters = check_parameters(owner, parameters)
        self.tags = _check_strings(owner, "tags", tags)
        self.description = _check_optional_str(owner, "description", description)
        self.version = _check_optional_str(owner, "version", version)
        self.schedules = tuple(_check_schedule(owner, i, s) for i, s in enumerate(schedules or ()))
        ids = [s.id for s in self.schedules]
        if len(set(ids)) != len(ids):
            raise InvalidDeploymentError(f"{owner}: the same schedule is given twice; drop the repeat")
        queue = DEFAULT_QUEUE if work_queue_name is None else work_queue_name
        if not isinstance(queue, str) or not queue or not all(c.isalnum() or c in "_.-" for c in queue):
            raise InvalidDeploymentError(f"{owner}: work_queue_name {queue!r} must be letters, digits, '_', '.' or '-', like 'gpu'")
        self.work_queue_name = queue
        if not isinstance(paused, bool):
            raise InvalidDeploymentError(f"{owner}: paused must be true or false, got {paused!r}")
        self.paused = paused
        self.concurrency_limit, self.collision_strategy = _check_concurrency(owner, concurrency_limit, collision_strategy)
        if catchup not in CATCHUP_POLICIES:
            raise InvalidDeploymentError(f"{owner}: catchup {catchup!r} must be one of {', '.join(CATCHUP_POLICIES)}")
        self.catchup = catchup
        if isinstance(catchup_limit, bool) or not isinstance(catchup_limit, int) or catchup_limit < 1:
            raise InvalidDeploymentError(f"{owner}: catchup_limit must be a whole number of 1 or more, got {catchup_limit!r}")
        self.catchup_limit = catchup_limit
        self.hooks = {
            kind: _check_hooks(owner, kind, value)
            for kind, value in (("on_completion", on_completion), ("on_failure", on_failure), ("on_crashed", on_crashed),
                                ("on_cancellation", on_cancellation))
            if value
        }

    @property
    def id(self) -> str:
        return deployment_id(self.name)

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r}, entrypoint={self.entrypoint!r})"

    # ---------------------------------------------------------- registering
    def _resolve(self) -> tuple[Any, str]:
        """The flow and the entrypoint (found from the flow when not given)."""
        from ..pipeline.entrypoints import load_flow
        from ..pipeline.flow import Flow

        if self.flow is not None:
            entrypoint = self.entrypoint or _entrypoint_of(self.flow)
            return self.flow, entrypoint
        assert self.entrypoint is not None
        locate_entrypoint(self._located_entrypoint())  # refuses a file named like a standard module before importing it
        try:
            flow = load_flow(self._located_entrypoint())
        except FlowImportError as exc:
            raise InvalidDeploymentError(f"deployment {self.name!r}: {exc}") from exc
        except InvalidOptionError as exc:
            raise InvalidDeploymentError(f"deployment {self.name!r}: entrypoint {self.entrypoint!r}: {exc}") from None
        assert isinstance(flow, Flow)
        return flow, self.entrypoint

    def _located_entrypoint(self) -> str:
        """The entrypoint with a relative file path made absolute against :attr:`root`."""
        assert self.entrypoint is not None
        target, _, attr = self.entrypoint.rpartition(":")
        if self.root is not None and (target.endswith(".py") or "/" in target) and not os.path.isabs(target):
            return f"{os.path.normpath(os.path.join(self.root, target))}:{attr}"
        return self.entrypoint

    def _record(self, registry: Registry, now: float) -> tuple[dict[str, Any], CodeRef, bytes]:
        """Everything checked, the snapshot built: the record to write (nothing written yet)."""
        flow, entrypoint = self._resolve()
        try:
            flow.parameters.bind((), dict(self.parameters), flow.validate_parameters)
        except ParameterValidationError as exc:
            detail = "; ".join(f"{e['field']}: {e['error']}" for e in exc.errors) or str(exc)
            raise InvalidDeploymentError(f"deployment {self.name!r}: parameters do not fit flow {flow.name!r}: {detail}") from None
        located = locate_entrypoint(self._located_entrypoint() if self.flow is None else entrypoint)
        hooks = {kind: [_hook_reference(self.name, kind, hook, located) for hook in items] for kind, items in self.hooks.items()}
        ref, data = build_snapshot(located)
        try:
            previous = registry.get(self.name)
        except LookupError:
            previous = None
        since = dict((previous or {}).get("schedule_since", {}))
        schedules = []
        for schedule in self.schedules:
            since.setdefault(schedule.id, now)  # a new schedule starts now: nothing before it is "missed"
            schedules.append({**schedule.to_dict(), "id": schedule.id})
        record = {
            "format": FORMAT,
            # Registered before under the other spelling (``nightly_train``): that record is
            # updated, keeping its name and id, so its schedules' fire records and cursors go on.
            "id": (previous or {}).get("id", self.id),
            "name": (previous or {}).get("name", self.name),
            "flow_name": flow.name,
            "entrypoint": entrypoint,
            "code": ref.to_dict(),
            "parameters": self.parameters,
            "tags": list(self.tags),
            "description": self.description if self.description is not None else flow.description,
            "version": self.version or flow.version or _default_version(located.source, ref),
            "schedules": schedules,
            "schedule_since": {sid: t for sid, t in since.items() if sid in {s.id for s in self.schedules}},
            "work_queue_name": self.work_queue_name,
            "paused": self.paused,
            "concurrency_limit": self.concurrency_limit,
            "collision_strategy": self.collision_strategy,
            "catchup": self.catchup,
            "catchup_limit": self.catchup_limit,
            "hooks": hooks,
            "created": (previous or {}).get("created", now),
            "updated": now,
        }
        return record, ref, data


def deploy(*deployments: Deployment, storage: Store | str | None = None) -> list[dict[str, Any]]:
    """Register deployments in a store; returns their records.

    Every deployment is checked (entrypoint, parameters, schedules) before any
    is written, so one bad deployment registers none.

    Parameters
    ----------
    *deployments : Deployment
        Made with :meth:`Flow.to_deployment` or :func:`load_project`.
    storage : str or Store, optional
        The store (a folder, ``s3://bucket/prefix``); default config
        ``daskflow.storage.url``, else ``./.daskflow``. Serve loops and workers
        must use the same store.

    Raises
    ------
    InvalidDeploymentError
        Naming the deployment, the field and the fix; nothing is registered.
    """
    if not deployments:
        raise InvalidDeploymentError("deploy() needs at least one deployment, like deploy(train.to_deployment(name='nightly'))")
    for item in deployments:
        if not isinstance(item, Deployment):
            raise InvalidDeploymentError(f"deploy() takes deployments made with flow.to_deployment(...), got {item!r}")
    # Names in either spelling (``a_b``, ``a-b``) are one deployment's name.
    names = [name_key(d.name) for d in deployments]
    repeated = sorted({d.name for d in deployments if names.count(name_key(d.name)) > 1})
    if repeated:
        raise InvalidDeploymentError(f"deployment names must be unique; given more than once: {', '.join(repeated)}")
    store = resolve_store(storage)
    registry = Registry(store)
    now = time.time()
    prepared = [d._record(registry, now) for d in deployments]
    for record, ref, data in prepared:
        publish_snapshot(store, ref, data)
        registry.put(record)
    return [record for record, _, _ in prepared]


def record_schedules(record: Mapping[str, Any]) -> list[Schedule]:
    """The schedules of a stored deployment record."""
    return [schedule_from_dict({k: v for k, v in s.items() if k != "id"}) for s in record.get("schedules", [])]


def next_slots(record: Mapping[str, Any], after: float, until: float | None = None, count: int = 3) -> list[float]:
    """The next slots of a stored deployment over all its schedules, as timestamps
    (none while it is paused): the next ``count``, or all up to ``until``."""
    from datetime import datetime, timezone

    if record.get("paused"):
        return []
    start = datetime.fromtimestamp(after, tz=timezone.utc)
    out: set[float] = set()
    for schedule in record_schedules(record):
        if until is None:
            out.update(s.timestamp() for s in schedule.upcoming(count, start))
        else:
            end = datetime.fromtimestamp(until, tz=timezone.utc)
            out.update(s.timestamp() for s in schedule.slots_between(start, end, limit=10_000))
    slots = sorted(out)
    return slots if until is not None else slots[:count]


# -------------------------------------------------------------- daskflow.yaml
def load_project(path: str | os.PathLike[str] = "daskflow.yaml") -> tuple[str | None, list[Deployment]]:
    """Read a ``daskflow.yaml`` project file: its ``storage`` and its deployments.

    Entrypoints are relative to the file's folder. The file plays the role of
    Prefect's ``prefect.yaml``; see ``docs/deployments.md`` for its fields.

    Raises
    ------
    InvalidDeploymentError
        For a missing or malformed file, naming the field and the fix.
    """
    import yaml

    path = os.fspath(path)
    try:
        with open(path) as file:
            data = yaml.safe_load(file)
    except FileNotFoundError:
        raise InvalidDeploymentError(f"{path} does not exist; write one (see docs/deployments.md) or pass --file PATH") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InvalidDeploymentError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidDeploymentError(f"{path} must be a mapping with a 'deployments:' list, got {type(data).__name__}")
    unknown = set(data) - {"storage", "deployments"}
    if unknown:
        raise InvalidDeploymentError(f"{path}: unknown top-level keys {sorted(unknown)}; use 'storage' and 'deployments'")
    storage = data.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise InvalidDeploymentError(f"{path}: storage must be a URL or folder like 's3://bucket/prefix', got {storage!r}")
    entries = data.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise InvalidDeploymentError(f"{path}: 'deployments' must be a list of deployments (name, entrypoint, schedules, ...)")
    base = os.path.dirname(os.path.abspath(path))
    deployments = [_from_yaml(path, base, i, entry) for i, entry in enumerate(entries)]
    return storage, deployments


_YAML_FIELDS = {
    "name", "entrypoint", "parameters", "tags", "description", "version", "schedules", "work_queue_name",
    "paused", "concurrency_limit", "collision_strategy", "catchup", "catchup_limit",
    "on_completion", "on_failure", "on_crashed", "on_cancellation",
}


def _from_yaml(path: str, base: str, index: int, entry: Any) -> Deployment:
    where = f"{path}: deployments[{index}]"
    if not isinstance(entry, dict):
        raise InvalidDeploymentError(f"{where} must be a mapping with name, entrypoint and schedules, got {entry!r}")
    if "name" in entry:
        where = f"{path}: deployment {entry['name']!r}"
    unknown = set(entry) - _YAML_FIELDS
    if unknown:
        hint = ""
        if "schedule" in unknown:
            hint = " ('schedule' is written 'schedules:', a list)"
        elif "work_pool" in unknown:
            hint = " (daskflow has no work pools: a work queue is a worker resource, 'work_queue_name: gpu')"
        raise InvalidDeploymentError(f"{where}: unknown fields {sorted(unknown)}{hint}; valid: {', '.join(sorted(_YAML_FIELDS))}")
    for required in ("name", "entrypoint"):
        if required not in entry:
            raise InvalidDeploymentError(f"{where}: '{required}' is missing")
    entrypoint = entry["entrypoint"]
    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        raise InvalidDeploymentError(f"{where}: entrypoint must be 'path/to/file.py:flow' or 'module:flow', got {entrypoint!r}")
    schedules = entry.get("schedules") or []
    if not isinstance(schedules, list):
        raise InvalidDeploymentError(f"{where}: schedules must be a list, like [{{cron: '0 3 * * *', timezone: Europe/Berlin}}]")
    options = {k: v for k, v in entry.items() if k not in ("entrypoint", "schedules")}
    try:
        deployment = Deployment(entrypoint=entrypoint, schedules=schedules, **options)
    except InvalidOptionError as exc:
        error = type(exc) if isinstance(exc, InvalidDeploymentError | InvalidScheduleError) else InvalidDeploymentError
        raise error(f"{path}: {exc}") from None
    deployment.root = base  # its entrypoint is relative to the file, not to where `daskflow deploy` runs
    return deployment


# ------------------------------------------------------------------ checks
def _check_schedule(owner: str, index: int, value: Schedule | Mapping[str, Any]) -> Schedule:
    if isinstance(value, Schedule):
        return value
    if isinstance(value, Mapping):
        try:
            return schedule_from_dict(value)
        except InvalidOptionError as exc:
            raise type(exc)(f"{owner}: schedules[{index}]: {exc}") from None
    raise InvalidDeploymentError(f"{owner}: schedules[{index}] must be a schedule or a mapping like {{cron: '0 3 * * *'}}, got {value!r}")


def check_parameters(owner: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``parameters`` as they will be stored: JSON values, no secrets.

    Raises
    ------
    InvalidDeploymentError
        Naming the parameter and the fix.
    """
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise InvalidDeploymentError(f"{owner}: parameters must be a mapping of names to values, got {parameters!r}")
    out = dict(parameters)
    for name, value in out.items():
        if not isinstance(name, str):
            raise InvalidDeploymentError(f"{owner}: parameter names must be strings, got {name!r}")
        if secrets_in(value):
            raise InvalidDeploymentError(
                f"{owner}: parameter {name!r} holds a secret; deployments are stored in plain JSON: give the run "
                "a setting it reads on the worker instead (an environment variable or dask config)"
            )
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidDeploymentError(
                f"{owner}: parameter {name!r} = {value!r:.80} cannot be stored as JSON ({exc}); give numbers, strings, "
                "lists or mappings (the flow's type hints convert them when the run starts)"
            ) from None
        out[name] = json.loads(text)  # stored as it will be read back (tuples become lists)
    return out


def _check_strings(owner: str, label: str, values: Iterable[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    out = tuple(values)
    for value in out:
        if not isinstance(value, str) or not value:
            raise InvalidDeploymentError(f"{owner}: {label} must be non-empty strings, got {value!r}")
    # The rule of flow and task tags (they are added to each run's).
    return check_tag_texts(owner, out, InvalidDeploymentError)


def _check_optional_str(owner: str, label: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidDeploymentError(f"{owner}: {label} must be a string, got {value!r}")
    return value


def _check_concurrency(owner: str, limit: Any, strategy: Any) -> tuple[int | None, str]:
    if isinstance(limit, Mapping):  # Prefect's {limit: 1, collision_strategy: CANCEL_NEW}
        unknown = set(limit) - {"limit", "collision_strategy"}
        if unknown:
            raise InvalidDeploymentError(f"{owner}: concurrency_limit has unknown keys {sorted(unknown)}; use limit and collision_strategy")
        if strategy is not None and limit.get("collision_strategy") is not None:
            raise InvalidDeploymentError(f"{owner}: give collision_strategy once, not both inside and beside concurrency_limit")
        strategy = limit.get("collision_strategy", strategy)
        limit = limit.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidDeploymentError(f"{owner}: concurrency_limit must be a whole number of 1 or more, got {limit!r}")
    name = "enqueue" if strategy is None else str(strategy).strip().lower().replace("_", "-")
    if name not in COLLISION_STRATEGIES:
        raise InvalidDeploymentError(f"{owner}: collision_strategy {strategy!r} must be 'enqueue' or 'cancel-new'")
    return limit, name


def schedules_from_options(
    owner: str,
    *,
    cron: str | Sequence[str] | None = None,
    interval: Any = None,
    rrule: str | Sequence[str] | None = None,
    schedules: Sequence[Schedule | Mapping[str, Any]] | None = None,
    timezone: str | None = None,
    anchor_date: Any = None,
) -> list[Schedule | Mapping[str, Any]]:
    """Prefect's ``to_deployment``/``serve`` schedule arguments as a list of schedules.

    ``cron``, ``interval`` and ``rrule`` each take one value or a list (one
    schedule each); ``schedules`` adds more; ``timezone`` and ``anchor_date``
    apply to the ones made here.
    """
    out: list[Schedule | Mapping[str, Any]] = list(schedules or ())
    for label, values in (("cron", cron), ("interval", interval), ("rrule", rrule)):
        if values is None:
            continue
        if isinstance(values, (str, int, float)) or not isinstance(values, Iterable):
            values = [values]
        for value in values:
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidDeploymentError(f"{owner}: interval {value!r} must be a finite number of seconds > 0")
            extra = {"anchor_date": anchor_date} if label == "interval" and anchor_date is not None else {}
            out.append(make_schedule(**{label: value}, timezone=timezone, **extra))
    return out


def _check_hooks(owner: str, kind: str, value: Any) -> tuple[Any, ...]:
    hooks = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for hook in hooks:
        if not (callable(hook) or (isinstance(hook, str) and ":" in hook)):
            raise InvalidDeploymentError(f"{owner}: {kind} takes functions or 'module:function' names, got {hook!r}")
    return hooks


def _hook_reference(name: str, kind: str, hook: Any, located: Any) -> str:
    """``module:function`` of a deployment hook, checked to be importable where runs go."""
    owner = f"deployment {name!r}: {kind}"
    if isinstance(hook, str):
        module_name, _, attr = hook.rpartition(":")
    else:
        module_name, attr = getattr(hook, "__module__", "") or "", getattr(hook, "__qualname__", "") or ""
        if module_name == "__main__" or os.path.abspath(getattr(sys.modules.get(module_name), "__file__", "") or "") == located.file:
            module_name = located.module  # the flow's own file, as workers import it from the snapshot
    if not attr.isidentifier():
        raise InvalidDeploymentError(f"{owner}: {hook!r} is not a top-level function; define it at the top level of the flow's file")
    top = module_name.split(".")[0]
    in_snapshot = top == located.module.split(".")[0]
    if not in_snapshot:
        import importlib.util

        try:
            found = importlib.util.find_spec(module_name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise InvalidDeploymentError(
                f"{owner}: module {module_name!r} of hook {attr!r} is neither in the flow's code nor installed; "
                "define the hook in the flow's file or package"
            )
    return f"{module_name}:{attr}"


def _entrypoint_of(flow: Any) -> str:
    """``file.py:name`` of a flow defined at the top level of a module."""
    module = sys.modules.get(getattr(flow.fn, "__module__", ""), None)
    file = getattr(module, "__file__", None)
    names = [name for name, value in vars(module).items() if value is flow] if module is not None else []
    if not file or not names:
        raise InvalidDeploymentError(
            f"flow {flow.name!r} is not defined at the top level of a file, so workers could not import it; "
            "define it in a module (flows.py) or pass entrypoint='flows.py:my_flow'"
        )
    path = os.path.relpath(os.path.abspath(file))
    if path.startswith(".."):
        path = os.path.abspath(file)
    return f"{path}:{names[0]}"


def _default_version(source: str, ref: CodeRef) -> str:
    """The git commit of the repository ``source`` (the snapshot's file or package)
    is in, with ``-dirty`` if it has uncommitted changes; else the code's hash."""
    folder = source if os.path.isdir(source) else os.path.dirname(source)
    try:
        commit = subprocess.run(
            ["git", "-C", folder, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--", source],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"code-{ref.hash[:12]}"
    if not commit:
        return f"code-{ref.hash[:12]}"
    return f"{commit}-dirty" if changed else commit
