"""``daskflow serve``, ``daskflow queues ...`` and ``daskflow limits ...``."""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from ._common import (
    EXIT_FAILED,
    CLIError,
    address_option,
    cluster_client,
    echo_json,
    format_table,
    format_time,
    json_option,
    open_store,
    storage_option,
)

__all__ = ["COMMANDS"]


@click.command("serve")
@address_option
@storage_option
@click.option("--queue", "queues", multiple=True, metavar="QUEUE", help="Serve only deployments of this work queue. Repeat for more.")
@click.option("--deployment", "names", multiple=True, metavar="NAME", help="Serve only this deployment. Repeat for more.")
def serve(address: str | None, storage: str | None, queues: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Fire the deployments' schedules and run them on the cluster, until stopped.

    Each slot becomes one run, recorded Scheduled in the store, then driven by a
    flow-run task on a worker of the deployment's queue. Any number of serve
    processes may share a store: each slot is fired once. Ctrl-C or SIGTERM
    stops it between slots; runs on the cluster go on (with --address).

    \b
    Examples:
      daskflow serve --address tcp://127.0.0.1:8786 --storage s3://models/prod
      daskflow serve --queue gpu
    """
    from ..deployments.serve import Serve
    from ..exceptions import InvalidOptionError
    from ..pipeline.context import configure_console_logging

    store = open_store(storage)
    configure_console_logging(True)
    logging.getLogger("daskflow").setLevel(logging.INFO)
    with cluster_client(address) as client:
        try:
            loop = Serve(store, client, names=names or None, queues=queues or None)
        except InvalidOptionError as exc:
            raise CLIError(str(exc)) from None
        where = address or f"a local cluster ({client.dashboard_link})"
        click.echo(f"serving deployments of {store.url} on {where}; stop with Ctrl-C", err=True)
        loop.run_until_signalled()
        click.echo(f"stopped; {loop.created_count} run(s) created", err=True)


# ---------------------------------------------------------------------- queues
@click.group("queues")
def queues() -> None:
    """Work queues: the workers that serve them and the runs waiting for them."""


def _waiting_runs(store: Any) -> list[dict[str, Any]]:
    """Scheduled and Late runs of deployments (from the ``active/`` listing)."""
    from ..storage.records import History

    return [r for r in History(store).active_runs() if r.get("deployment_id") and r.get("state", {}).get("type") == "SCHEDULED"]


def _workers_by_queue(address: str | None) -> dict[str, list[str]] | None:
    if address is None:
        return None
    from ..deployments.launch import queue_resource

    with cluster_client(address) as client:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
    out: dict[str, list[str]] = {"default": []}
    for worker_address, info in workers.items():
        label = str(info.get("name") or worker_address)
        out["default"].append(label)
        for resource in info.get("resources") or {}:
            if resource.startswith(queue_resource("")):
                out.setdefault(resource[len(queue_resource("")) :], []).append(label)
    return out


@queues.command("ls")
@address_option
@storage_option
@json_option
def queues_ls(address: str | None, storage: str | None, as_json: bool) -> None:
    """List work queues: their workers (with --address), deployments, waiting runs and next run."""
    from ..deployments.deployment import next_slots
    from ..deployments.registry import Registry
    from ..exceptions import StorageError
    from ..storage.limits import Limits

    store = open_store(storage)
    try:
        records = Registry(store).all()
        waiting = _waiting_runs(store)
        limits = Limits(store).all("queue")
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    workers = _workers_by_queue(address)
    now = time.time()
    names = sorted({r.get("work_queue_name", "default") for r in records} | set(limits) | set(workers or ()) | {"default"})
    rows = []
    for queue in names:
        deployments = [r for r in records if r.get("work_queue_name", "default") == queue]
        runs = [r for r in waiting if r.get("work_queue") == queue]
        nxt = min((t for r in deployments for t in next_slots(r, now, count=1)), default=None)
        rows.append({
            "queue": queue,
            "workers": None if workers is None else workers.get(queue, []),
            "deployments": [r["name"] for r in deployments],
            "limit": limits.get(queue),
            "waiting": [{"name": r["name"], "state": r["state"]["name"], "reason": r["state"].get("message", "")} for r in runs],
            "next_run": nxt,
        })
    if as_json:
        echo_json(rows)
        return
    table = []
    for row in rows:
        workers_text = "?" if row["workers"] is None else str(len(row["workers"])) + (f" ({', '.join(row['workers'][:3])})" if row["workers"] else "")
        late = sum(1 for w in row["waiting"] if w["state"] == "Late")
        table.append([
            row["queue"], workers_text, len(row["deployments"]), row["limit"] or "-",
            f"{len(row['waiting'])}" + (f" ({late} late)" if late else ""), format_time(row["next_run"]),
        ])
    click.echo(format_table(["QUEUE", "WORKERS", "DEPLOYMENTS", "LIMIT", "WAITING", "NEXT RUN"], table))
    reasons = [(row["queue"], w) for row in rows for w in row["waiting"] if w["reason"]]
    for queue, waiting_run in reasons[:10]:
        click.echo(f"  {waiting_run['name']} ({queue}, {waiting_run['state']}): {waiting_run['reason']}")
    if workers is None:
        click.echo("(pass --address to see each queue's workers)")


@queues.command("preview")
@click.argument("queue")
@click.option("--hours", default=24.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="How far ahead to look.")
@storage_option
@json_option
def queues_preview(queue: str, hours: float, storage: str | None, as_json: bool) -> None:
    """The runs QUEUE will get in the next --hours: waiting ones, then upcoming slots."""
    from ..deployments.deployment import next_slots
    from ..deployments.registry import Registry
    from ..exceptions import StorageError

    store = open_store(storage)
    try:
        records = [r for r in Registry(store).all() if r.get("work_queue_name", "default") == queue]
        waiting = [r for r in _waiting_runs(store) if r.get("work_queue") == queue]
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    now = time.time()
    until = now + hours * 3600
    rows = [
        {"time": r.get("scheduled_time"), "deployment": r.get("deployment_name"), "state": r["state"]["name"], "run": r["name"]}
        for r in waiting
    ]
    for record in records:
        for slot in next_slots(record, now, until=until):
            rows.append({"time": slot, "deployment": record["name"], "state": "upcoming", "run": None})
    rows.sort(key=lambda r: r["time"] or 0)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        known = "" if records else f" (no deployment uses queue {queue!r})"
        click.echo(f"nothing for queue {queue!r} in the next {hours:g} hours{known}")
        return
    click.echo(format_table(["TIME", "DEPLOYMENT", "STATE", "RUN"], [[format_time(r["time"]), r["deployment"], r["state"], r["run"]] for r in rows]))


# ---------------------------------------------------------------------- limits
@click.group("limits")
def limits() -> None:
    """Concurrency limits across all runs: per task tag, or per work queue (--queue)."""


def _kind(queue: bool) -> str:
    return "queue" if queue else "tag"


@limits.command("set")
@click.argument("name")
@click.argument("limit", type=int)
@click.option("--queue", "is_queue", is_flag=True, help="NAME is a work queue (flow runs), not a task tag (task runs).")
@storage_option
def limits_set(name: str, limit: int, is_queue: bool, storage: str | None) -> None:
    """At most LIMIT task runs tagged NAME at once, over all runs on the cluster.

    With --queue, at most LIMIT flow runs of work queue NAME at once. Applies to
    runs that start after it is set.

    \b
    Examples:
      daskflow limits set database 2
      daskflow limits set gpu 1 --queue
    """
    from ..exceptions import InvalidOptionError, StorageError
    from ..storage.limits import Limits

    try:
        Limits(open_store(storage)).set(_kind(is_queue), name, limit)
    except InvalidOptionError as exc:
        raise CLIError(str(exc)) from None
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    what = f"flow runs of queue {name!r}" if is_queue else f"task runs tagged {name!r}"
    click.echo(f"at most {limit} {what} at once")


@limits.command("ls")
@storage_option
@json_option
def limits_ls(storage: str | None, as_json: bool) -> None:
    """List the concurrency limits."""
    from ..exceptions import StorageError
    from ..storage.limits import LIMIT_KINDS, Limits

    try:
        found = {kind: Limits(open_store(storage)).all(kind) for kind in LIMIT_KINDS}
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if as_json:
        echo_json(found)
        return
    rows = [[kind, name, limit] for kind, items in found.items() for name, limit in items.items()]
    if not rows:
        click.echo("no concurrency limits; set one with `daskflow limits set TAG N`")
        return
    click.echo(format_table(["KIND", "NAME", "LIMIT"], rows))


@limits.command("rm")
@click.argument("name")
@click.option("--queue", "is_queue", is_flag=True, help="NAME is a work queue.")
@storage_option
def limits_rm(name: str, is_queue: bool, storage: str | None) -> None:
    """Remove a concurrency limit."""
    from ..exceptions import StorageError
    from ..storage.limits import Limits

    try:
        removed = Limits(open_store(storage)).remove(_kind(is_queue), name)
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if not removed:
        raise CLIError(f"no {_kind(is_queue)} limit {name!r}; list them with `daskflow limits ls`")
    click.echo(f"removed the limit of {_kind(is_queue)} {name!r}")


COMMANDS = [serve, queues, limits]
