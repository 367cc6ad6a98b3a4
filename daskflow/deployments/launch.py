"""A deployment's flow run: created ahead as Scheduled, then driven by a task on a worker.

Who writes what, in order:

1. Whoever creates the run (the serve loop for a slot, ``deployments run``,
   ``backfill``) writes the run's first record, ``Scheduled``, create-only,
   holding the run's request (what its flow-run task needs, so a serve loop
   that starts later can submit it again) (:func:`create_run`), then submits the
   flow-run task (:func:`submit_run`) with a Dask key made from the run id: a
   second submit of the same run joins the first instead of running it twice.
2. The flow-run task (:func:`run_scheduled_flow`) runs on a worker of the
   deployment's work queue. From then on it alone writes ``run.json``: it waits
   for the deployment's and the queue's concurrency limits (seceded, holding no
   worker slot), loads the flow from the code snapshot in the store and drives
   it from the worker, its tasks running as ordinary Dask tasks.
3. The serve loop never rewrites a started run's record: a run that has not
   started in time gets a ``late.json`` mark beside it (:func:`mark_late`), which
   readers show as ``Late`` and the flow-run task keeps in the run's history.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ConcurrencyLimitReached
from ..masking import mask
from ..pipeline.history import run_record
from ..pipeline.runs import FlowRun, RunPlan
from ..pipeline.states import Cancelled, Crashed, Failed, Late, Scheduled, State, StateType
from ..storage.records import LATE, RunWriter, run_ended, run_folder
from ..storage.store import Store
from .deployment import DEFAULT_QUEUE

__all__ = [
    "DEPLOY_TOPIC",
    "RunRequest",
    "claim_slot",
    "create_run",
    "finish_crashed",
    "finish_unstarted",
    "mark_late",
    "new_request",
    "queue_resource",
    "request_of",
    "run_scheduled_flow",
    "submit_run",
    "submit_runs",
]

logger = logging.getLogger("daskflow.deployments")

#: The event topic flow-run tasks announce their start on (the serve loop listens).
DEPLOY_TOPIC = "daskflow-deployments"


def queue_resource(queue: str) -> str:
    """The Dask worker resource that makes a worker serve ``queue``."""
    return f"queue-{queue}"


@dataclass(frozen=True)
class RunRequest:
    """Everything a deployment's flow-run task needs, fixed when the run is created.

    Attributes
    ----------
    run_id, name, created
        The run's identity; ``created`` names its history folder.
    scheduled_time : float
        When it was meant to start (its slot, or the moment it was asked for).
    deployment : dict
        The deployment's record as it was when the run was created (code
        snapshot, parameters, queue, limits): a later registration does not
        change a run already made.
    parameters : dict
        The run's parameters (the deployment's, with any given for this run).
    trigger : dict
        What made it: ``{"kind": "schedule", "schedule": ID, "slot": T}``,
        ``{"kind": "backfill", ...}`` or ``{"kind": "manual"}``.
    """

    run_id: str
    name: str
    created: float
    scheduled_time: float
    deployment: dict[str, Any]
    parameters: dict[str, Any]
    trigger: dict[str, Any] = field(default_factory=lambda: {"kind": "manual"})

    @property
    def folder(self) -> str:
        return run_folder(self.run_id, self.created)

    @property
    def key(self) -> str:
        """The flow-run task's Dask key: one per run, so a repeated submit joins the first."""
        return f"deployment-{self.deployment['name']}-{self.run_id}"

    @property
    def queue(self) -> str:
        return self.deployment.get("work_queue_name") or DEFAULT_QUEUE

    @property
    def resources(self) -> dict[str, float] | None:
        """Dask resources of the run's tasks: membership of its queue, none of the amount."""
        return None if self.queue == DEFAULT_QUEUE else {queue_resource(self.queue): 0}

    def to_json(self) -> dict[str, Any]:
        # Shallow: the deployment record is JSON already (asdict would deep-copy it,
        # which is most of the cost of firing a thousand slots at once).
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRequest:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def new_request(
    deployment: dict[str, Any],
    scheduled_time: float,
    trigger: dict[str, Any],
    parameters: dict[str, Any] | None = None,
    now: float | None = None,
) -> RunRequest:
    """A new run of ``deployment`` (not yet written anywhere)."""
    run_id = uuid.uuid4().hex
    return RunRequest(
        run_id=run_id,
        name=f"{deployment['name']}-{run_id[:8]}",
        created=time.time() if now is None else now,
        scheduled_time=scheduled_time,
        deployment=deployment,
        parameters={**deployment.get("parameters", {}), **(parameters or {})},
        trigger=trigger,
    )


def claim_slot(
    registry: Any, deployment: dict[str, Any], schedule_id: str, slot: Any, by: str, now: float, kind: str = "schedule"
) -> tuple[RunRequest, dict[str, Any] | None]:
    """Commit the fire record of one slot, naming a new run of it.

    Returns the run and ``None`` if this call won the slot (the caller creates
    the run), else the fire record that was there first (the slot was fired by
    a serve loop or a backfill; ``{}`` while its writer is still at it).
    """
    trigger = {"kind": kind, "schedule": schedule_id, "slot": slot.timestamp()}
    request = new_request(deployment, slot.timestamp(), trigger, now=now)
    fire = {"run_id": request.run_id, "folder": request.folder, "by": by, "created": now, "request": request.to_json()}
    return request, registry.claim(deployment["id"], schedule_id, slot, fire)


def _flow_run(request: RunRequest, states: list[State]) -> FlowRun:
    """The run's in-memory record before its flow has started."""
    deployment = request.deployment
    flow_run = FlowRun(
        id=request.run_id,
        name=request.name,
        flow_name=deployment["flow_name"],
        version=deployment.get("version"),
        parameters=request.parameters,
        tags=tuple(deployment.get("tags", ())),
        state=states[-1],
        state_history=list(states),
        start_time=request.scheduled_time,
    )
    flow_run.created = request.created
    flow_run.deployment_id = deployment["id"]
    flow_run.deployment_name = deployment["name"]
    flow_run.scheduled_time = request.scheduled_time
    flow_run.work_queue = request.queue
    return flow_run


def _record(request: RunRequest, store: Store, states: list[State], final: bool = False) -> dict[str, Any]:
    flow_run = _flow_run(request, states)
    flow_run.result_storage = store.url
    flow_run.history_url = store.describe(f"runs/{request.folder}")
    if final:
        flow_run.end_time = states[-1].timestamp
    record = run_record(flow_run, now=time.time())
    record["start_time"] = None  # not started (its slot is scheduled_time)
    return record


def create_run(store: Store, request: RunRequest, message: str = "") -> dict[str, Any] | None:
    """Write a new scheduled run's ``Scheduled`` record (holding its request).

    Returns the record, or ``None`` if the run exists already (made by another
    serve loop taking over the same slot); nothing is overwritten then.
    """
    writer = RunWriter(store, request.run_id, request.created)
    state = Scheduled(message, timestamp=request.created, scheduled_time=request.scheduled_time)
    record = _scheduled_record(request, store, [state])
    return record if writer.create_run(record) else None


def _scheduled_record(request: RunRequest, store: Store, states: list[State]) -> dict[str, Any]:
    # A run that has not started carries its request: whoever finds it
    # Scheduled later (a restarted serve loop) can submit it again. Its flow's
    # own records, once it starts, replace this one.
    return {**_record(request, store, states), "request": request.to_json()}


def request_of(record: dict[str, Any]) -> RunRequest | None:
    """The request a Scheduled run's record holds (``None`` once it has started)."""
    data = record.get("request")
    if not isinstance(data, dict):
        return None
    try:
        return RunRequest.from_json(data)
    except (KeyError, TypeError):
        return None


def mark_late(store: Store, request: RunRequest, message: str, now: float | None = None) -> bool:
    """Mark a run that has not started ``Late`` (once); False if it was marked already."""
    writer = RunWriter(store, request.run_id, request.created)
    mark = {"timestamp": time.time() if now is None else now, "message": message}
    return writer.put_extra(LATE, mark, create_only=True)


def finish_unstarted(store: Store, request: RunRequest, state: State) -> None:
    """Give a run that never reached its flow its final record (Cancelled, Failed, Crashed)."""
    writer = RunWriter(store, request.run_id, request.created, active=True)
    current = writer.read_run()
    if current is not None and run_ended(current):
        return
    writer.write_run(_record(request, store, [*_prior_states(writer, current), state], final=True))


def finish_crashed(store: Store, request: RunRequest, message: str) -> None:
    """End a run whose flow-run task died on the cluster (``KilledWorker``, a lost task) Crashed."""
    writer = RunWriter(store, request.run_id, request.created, active=True)
    current = writer.read_run()
    if current is None or current.get("state", {}).get("type") == StateType.SCHEDULED.value:
        finish_unstarted(store, request, Crashed(message))
        return
    if run_ended(current):
        return
    now = time.time()
    crashed = {"type": "CRASHED", "name": "Crashed", "timestamp": now, "message": mask(message)}
    writer.write_run(dict(current, state=crashed, state_history=[*current.get("state_history", []), crashed], end_time=now))


def submit_run(client: Any, store: Store, request: RunRequest) -> Any:
    """Hand the run to the cluster: its flow-run task on a worker of its queue.

    The task is ``fire_and_forget``: it runs to its end even if the submitter
    (a serve loop, the CLI) goes away. Returns the future.
    """
    return submit_runs(client, store, [request])[0]


def submit_runs(client: Any, store: Store, requests: list[RunRequest]) -> list[Any]:
    """:func:`submit_run` for many runs: one scheduler message per work queue, not
    one per run (a thousand slots of one minute reach the cluster at once)."""
    from distributed import fire_and_forget

    by_queue: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        by_queue.setdefault(request.queue, []).append(i)
    futures: list[Any] = [None] * len(requests)
    for indices in by_queue.values():
        batch = [requests[i] for i in indices]
        submitted = client.map(
            run_scheduled_flow, [store] * len(batch), batch, key=[r.key for r in batch], resources=batch[0].resources,
            pure=False, priority=10, batch_size=None,
        )
        for i, future in zip(indices, submitted):
            futures[i] = future
    fire_and_forget(futures)
    return futures


# ------------------------------------------------------------- on the worker
def _prior_states(writer: RunWriter, record: dict[str, Any] | None) -> list[State]:
    """The states a run had before its flow started: Scheduled, then Late if marked."""
    states = []
    for item in (record or {}).get("state_history", []):
        if item.get("type") == StateType.SCHEDULED.value:
            states.append(State(StateType.SCHEDULED, item.get("name", "Scheduled"), item.get("message", ""), item.get("timestamp") or 0.0))
    late = writer.get_extra(LATE)
    if late is not None and not any(s.name == "Late" for s in states):
        states.append(Late(late.get("message", ""), timestamp=late.get("timestamp") or time.time()))
    return states


def _announce(request: RunRequest, event: str) -> None:
    try:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(DEPLOY_TOPIC, {"ev": event, "run": request.run_id, "worker": worker.address, "t": time.time()})
    except Exception:  # an announcement is for the serve loop's Late check: never fail a run for it
        logger.debug("announcing %s of %s failed", event, request.name, exc_info=True)


def _summary(state_type: str, name: str, message: str, request: RunRequest) -> dict[str, Any]:
    return {"run": request.run_id, "type": state_type, "name": name, "message": mask(message or "")}


def run_scheduled_flow(store: Store, request: RunRequest) -> dict[str, Any]:
    """The flow-run task: drive a deployment's run from the worker it landed on.

    Returns a summary of the run's final state (``type``, ``name``, ``message``).
    A run whose record is final already (it ran before, and this is a repeated
    submit) is not run again.
    """
    from ..runners.dask import ensure_seceded, hold_slots
    from ..storage.limits import Limits

    # Never hold a worker slot while waiting for limits or for the flow's tasks.
    ensure_seceded()
    writer = RunWriter(store, request.run_id, request.created, active=True)
    current = writer.read_run()
    if current is not None and run_ended(current):
        state = current["state"]
        return _summary(state["type"], state["name"], state.get("message", ""), request)
    _announce(request, "started")
    deployment = request.deployment
    limits: list[tuple[str, str, int]] = []
    limit = deployment.get("concurrency_limit")
    try:
        queue_limit = Limits(store).all("queue").get(request.queue)
    except Exception as exc:  # unreadable limits: run, and say so
        logger.warning("Flow run %r - cannot read the queue's concurrency limit, running without it: %s", request.name, exc)
        queue_limit = None

    def waiting(what: str) -> None:
        states = _prior_states(writer, current)
        states.append(Scheduled(f"waiting for a free slot of the concurrency limit of {what}"))
        writer.write_run(_scheduled_record(request, store, states))

    try:
        with hold_slots(
            [("deployment", deployment["id"], limit)] if limit else [],
            wait=deployment.get("collision_strategy") != "cancel-new",
            rejoin_after_wait=False,
            on_wait=waiting,
        ):
            if queue_limit:
                limits.append(("queue", request.queue, queue_limit))
            with hold_slots(limits, rejoin_after_wait=False, on_wait=waiting):
                return _run_flow(store, request, writer)
    except ConcurrencyLimitReached as exc:
        message = f"{exc} and the deployment's collision strategy is cancel-new: this run was not started"
        finish_unstarted(store, request, Cancelled(message))
        return _summary("CANCELLED", "Cancelled", message, request)


def _deployment_hooks(flow: Any, deployment: dict[str, Any], request: RunRequest) -> dict[str, Any]:
    """The deployment's hooks added after the flow's own (``with_options`` changes)."""
    import importlib

    changes: dict[str, Any] = {}
    for kind, references in (deployment.get("hooks") or {}).items():
        hooks = []
        for reference in references:
            module_name, _, attr = reference.rpartition(":")
            try:
                hooks.append(getattr(importlib.import_module(module_name), attr))
            except Exception as exc:  # a hook reports on the run; it must not stop it
                logger.error("Flow run %r - hook %s of deployment %r cannot be loaded: %s: %s", request.name, reference,
                             deployment["name"], type(exc).__name__, exc)
        if hooks:
            changes[kind] = (*getattr(flow, kind), *hooks)
    return changes


def _run_flow(store: Store, request: RunRequest, writer: RunWriter) -> dict[str, Any]:
    from ..runners.dask import DaskTaskRunner
    from .snapshot import CodeRef, load_snapshot_flow

    deployment = request.deployment
    try:
        flow = load_snapshot_flow(store, CodeRef.from_dict(deployment["code"]))
    except Exception as exc:
        message = (
            f"cannot load flow {deployment['entrypoint']!r} of deployment {deployment['name']!r} from its code snapshot: "
            f"{type(exc).__name__}: {exc}"
        )
        logger.error("Flow run %r - %s", request.name, message)
        finish_unstarted(store, request, Failed(message, data=exc))
        return _summary("FAILED", "Failed", message, request)
    changes: dict[str, Any] = _deployment_hooks(flow, deployment, request)
    if flow.task_runner is None or isinstance(flow.task_runner, DaskTaskRunner):
        # On the cluster the run is on: its tasks are Dask tasks of the same queue.
        changes["task_runner"] = DaskTaskRunner(resources=request.resources)
    if flow.result_storage is None:
        changes["result_storage"] = store
    flow = flow.with_options(**changes) if changes else flow
    plan = RunPlan(
        id=request.run_id,
        name=request.name,
        created=request.created,
        states=tuple(_prior_states(writer, writer.read_run())),
        tags=tuple(deployment.get("tags", ())),
        deployment_id=deployment["id"],
        deployment_name=deployment["name"],
        scheduled_time=request.scheduled_time,
        work_queue=request.queue,
        history_store=store,
    )
    state = flow._run_planned(plan, request.parameters)
    if state.run is not None and state.run.history_url is None:
        # It ended before its recorder started (bad parameters, a storage probe
        # that failed): its record must still say how it ended.
        finish_unstarted(store, request, state if state.is_final() else Crashed(state.message))
    return _summary(state.type.value, state.name, state.message, request)
