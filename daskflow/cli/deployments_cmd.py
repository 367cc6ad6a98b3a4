"""``daskflow deploy``, ``daskflow deployments ...`` and ``daskflow backfill``."""

from __future__ import annotations

import datetime
import time
from typing import Any
from zoneinfo import ZoneInfo

import click

from ..deployments.deployment import next_slots, record_schedules
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

__all__ = ["COMMANDS", "watch_run"]


def _registry(storage: str | None) -> Any:
    from ..deployments.registry import Registry

    return Registry(open_store(storage))


def _get(registry: Any, name: str) -> dict[str, Any]:
    from ..exceptions import DeploymentNotFoundError, StorageError

    try:
        return registry.get(name)
    except DeploymentNotFoundError as exc:
        raise CLIError(str(exc)) from None
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None


def _named(deployments: list[Any], name: str) -> Any:
    """The deployment of the file called ``name``, else called so in the other spelling (``a_b``, ``a-b``)."""
    from .._names import same_name

    exact = [d for d in deployments if d.name == name]
    return (exact or [d for d in deployments if same_name(d.name, name)] or [None])[0]


# ---------------------------------------------------------------------- deploy
@click.command("deploy")
@click.argument("names", nargs=-1, metavar="[NAME ...]")
@click.option("--all", "deploy_all", is_flag=True, help="Register every deployment in the file.")
@click.option("--file", "path", default="daskflow.yaml", show_default=True, metavar="PATH", help="The project file.")
@storage_option
@json_option
def deploy_command(names: tuple[str, ...], deploy_all: bool, path: str, storage: str | None, as_json: bool) -> None:
    """Register deployments from daskflow.yaml (all, or those NAMEd) in the store.

    Everything is checked first (entrypoints, parameters against the flow's
    signature, schedules); a bad deployment registers nothing. --storage wins
    over the file's storage:.

    \b
    Examples:
      daskflow deploy --all
      daskflow deploy retrain-prod --storage s3://models/prod
    """
    from ..deployments.deployment import deploy, load_project
    from ..exceptions import InvalidOptionError, StorageError

    if not names and not deploy_all:
        raise CLIError("name the deployments to register (daskflow deploy NAME ...) or pass --all")
    try:
        file_storage, deployments = load_project(path)
    except InvalidOptionError as exc:
        raise CLIError(str(exc)) from None
    if names:
        chosen = [_named(deployments, n) for n in names]
        missing = [n for n, d in zip(names, chosen) if d is None]
        if missing:
            known = sorted(d.name for d in deployments)
            raise CLIError(f"{path} has no deployment {', '.join(map(repr, missing))}; it has: {', '.join(known) or 'none'}")
        deployments = [d for d in chosen if d is not None]
    store = open_store(storage or file_storage)
    try:
        records = deploy(*deployments, storage=store)
    except InvalidOptionError as exc:
        raise CLIError(str(exc)) from None
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if as_json:
        echo_json(records)
        return
    now = time.time()
    for record in records:
        nxt = next_slots(record, now, count=1)
        when = f"next run {format_time(nxt[0])}" if nxt else "paused" if record["paused"] else "no schedule (run it with daskflow deployments run)"
        click.echo(f"registered {record['name']!r} ({record['entrypoint']}, version {record['version']}): {when}")
    click.echo(f"serve them with: daskflow serve --storage {store.url}")


# ------------------------------------------------------------------ deployments
@click.group("deployments")
def deployments() -> None:
    """Deployments registered in a store: list, inspect, pause, resume, remove, run."""


@deployments.command("ls")
@storage_option
@json_option
def deployments_ls(storage: str | None, as_json: bool) -> None:
    """List deployments with their schedules, next and last runs."""
    from ..exceptions import StorageError
    from ..status.deployments import store_rows

    registry = _registry(storage)
    try:
        records = registry.all()
        # The page's rows: schedules in words, next fire times, the last run that started.
        rows = store_rows(registry.store, records)
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if as_json:
        echo_json([{**r, "next_runs": row["next_runs"], "last_run": row["last_run"]} for r, row in zip(records, rows)])
        return
    if not records:
        click.echo(f"No deployments in {registry.store.url}; register one with `daskflow deploy` or flow.to_deployment(...)")
        return
    table = []
    for row in rows:
        run = row["last_run"]
        table.append([
            row["name"], row["flow"], row["schedules"], row["queue"], "yes" if row["paused"] else "",
            format_time(row["next_runs"][0]) if row["next_runs"] else "-",
            f"{run['state_name']} {format_time(run['time'])}" if run else "-",
        ])
    click.echo(format_table(["NAME", "FLOW", "SCHEDULES", "QUEUE", "PAUSED", "NEXT RUN", "LAST RUN"], table, max_width=100))


@deployments.command("inspect")
@click.argument("name")
@storage_option
@json_option
def deployments_inspect(name: str, storage: str | None, as_json: bool) -> None:
    """Show one deployment: entrypoint, code, parameters, schedules, limits, next runs."""
    registry = _registry(storage)
    record = _get(registry, name)
    now = time.time()
    nxt = next_slots(record, now, count=5)
    if as_json:
        echo_json({**record, "next_runs": nxt})
        return
    limit = record.get("concurrency_limit")
    rows = [
        ("name", record["name"]),
        ("flow", record["flow_name"]),
        ("entrypoint", record["entrypoint"]),
        ("version", record.get("version")),
        ("code", f"{record['code']['hash'][:12]} ({record['code']['kind']} {record['code']['root']}, {record['code']['size']} bytes)"),
        ("description", (record.get("description") or "-").strip().split("\n", 1)[0]),
        ("parameters", ", ".join(f"{k}={v!r}" for k, v in record.get("parameters", {}).items()) or "-"),
        ("tags", ", ".join(record.get("tags", [])) or "-"),
        ("queue", record.get("work_queue_name")),
        ("paused", "yes" if record.get("paused") else "no"),
        ("concurrency", f"{limit} at once, {record.get('collision_strategy')}" if limit else "no limit"),
        ("catchup", record.get("catchup") + (f" (at most {record.get('catchup_limit')})" if record.get("catchup") == "all" else "")),
        ("registered", format_time(record.get("created"))),
        ("updated", format_time(record.get("updated"))),
    ]
    for i, schedule in enumerate(record_schedules(record)):
        rows.append((f"schedule {i + 1}", f"{schedule.describe()} [{schedule.id}]"))
    rows.append(("next runs", ", ".join(format_time(t) for t in nxt) or "-"))
    width = max(len(k) for k, _ in rows)
    click.echo("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))


def _set_paused(name: str, storage: str | None, paused: bool) -> None:
    from ..exceptions import StorageError

    registry = _registry(storage)
    record = _get(registry, name)
    if record.get("paused") == paused:
        click.echo(f"deployment {name!r} is {'paused' if paused else 'not paused'} already")
        return
    record = dict(record, paused=paused, updated=time.time())
    if not paused:
        record["resumed"] = time.time()  # slots while it was paused are not caught up
    try:
        registry.put(record)
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    click.echo(f"deployment {name!r} {'paused: it fires nothing until resumed' if paused else 'resumed'}")


@deployments.command("pause")
@click.argument("name")
@storage_option
def deployments_pause(name: str, storage: str | None) -> None:
    """Stop firing a deployment's schedules (runs already made go on)."""
    _set_paused(name, storage, True)


@deployments.command("resume")
@click.argument("name")
@storage_option
def deployments_resume(name: str, storage: str | None) -> None:
    """Fire a paused deployment's schedules again (from now on; no catch-up)."""
    _set_paused(name, storage, False)


@deployments.command("rm")
@click.argument("name")
@storage_option
def deployments_rm(name: str, storage: str | None) -> None:
    """Remove a deployment (its runs and their history stay)."""
    from ..exceptions import StorageError

    registry = _registry(storage)
    _get(registry, name)
    try:
        registry.remove(name)
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    click.echo(f"removed deployment {name!r}")


@deployments.command("run")
@click.argument("name")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter for this run; VALUE is JSON or a string.")
@address_option
@storage_option
@click.option("--watch/--no-watch", default=None, help="Wait for the run and follow its state (default: with a local cluster).")
@json_option
def deployments_run(name: str, params: tuple[str, ...], address: str | None, storage: str | None, watch: bool | None, as_json: bool) -> None:
    """Run a deployment now, through the same path as its schedule.

    The run is created Scheduled in the store and handed to the cluster at
    --address (it goes on after this command exits); without --address a local
    cluster runs it here and the command waits.

    \b
    Examples:
      daskflow deployments run retrain-dev -p sample=false --address tcp://127.0.0.1:8786 --watch
    """
    from ..deployments.launch import create_run, new_request, submit_run
    from ..exceptions import StorageError
    from .run_cmd import parse_parameters

    registry = _registry(storage)
    record = _get(registry, name)
    parameters = parse_parameters(params)
    _check_parameters(record, parameters)
    request = new_request(record, time.time(), {"kind": "manual"}, parameters)
    watch = address is None if watch is None else watch
    if address is None and not watch:
        raise CLIError("--no-watch needs --address: a local cluster stops when this command exits")
    with cluster_client(address) as client:
        try:
            create_run(registry.store, request)
        except StorageError as exc:
            raise CLIError(str(exc), EXIT_FAILED) from None
        future = submit_run(client, registry.store, request)
        if not as_json:
            click.echo(f"created run {request.name!r} of deployment {name!r} (queue {request.queue})")
        if not watch:
            if as_json:
                echo_json({"id": request.run_id, "name": request.name, "state": "Scheduled"})
            return
        record = watch_run(registry.store, request, future, quiet=as_json)
    if as_json:
        echo_json(record)
    if record["state"]["type"] != "COMPLETED":
        raise click.exceptions.Exit(EXIT_FAILED)


def _check_parameters(record: dict[str, Any], parameters: dict[str, Any]) -> None:
    from ..deployments.deployment import check_parameters as check
    from ..exceptions import InvalidOptionError

    try:
        check(f"deployment {record['name']!r}", parameters)
    except InvalidOptionError as exc:
        raise CLIError(str(exc)) from None


def watch_run(store: Any, request: Any, future: Any = None, *, quiet: bool = False, poll: float = 0.5) -> dict[str, Any]:
    """Follow a deployment's run in the store until it ends; print each new state. Returns its record."""
    from ..storage.records import LATE, RunWriter, run_ended, with_late_mark

    writer = RunWriter(store, request.run_id, request.created)
    seen: set[tuple[str, float]] = set()
    while True:
        record = writer.read_run()
        if record is not None and record.get("state", {}).get("name") == "Scheduled":
            late = writer.get_extra(LATE)
            if late is not None:
                record = with_late_mark(record, late)
        if record is not None:
            for state in record.get("state_history", []):
                key = (state.get("name", ""), state.get("timestamp") or 0)
                if key in seen:
                    continue
                seen.add(key)
                if not quiet:
                    message = f": {state['message']}" if state.get("message") else ""
                    click.echo(f"{format_time(state.get('timestamp'))}  {state.get('name')}{message}")
            if run_ended(record):
                return record
        if future is not None and future.done() and future.status != "finished":
            from ..deployments.launch import finish_crashed

            error = future.exception()
            finish_crashed(store, request, f"its flow-run task ended without a result: {type(error).__name__}: {error}")
            future = None
            continue
        time.sleep(poll)


# -------------------------------------------------------------------- backfill
def _parse_date(text: str, option: str, tz: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CLIError(f"{option} {text!r} is not a date; write 2026-11-01 or 2026-11-01T08:00 (or with an offset, +01:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value


@click.command("backfill")
@click.argument("name")
@click.option("--start", required=True, metavar="DATE", help="First slot time (inclusive); without an offset, in the schedule's timezone.")
@click.option("--end", required=True, metavar="DATE", help="Last slot time (inclusive).")
@click.option("--max-runs", default=100, show_default=True, type=click.IntRange(min=1), help="Refuse a range with more slots than this.")
@address_option
@storage_option
@click.option("--watch/--no-watch", default=None, help="Wait for the runs (default: with a local cluster).")
def backfill(name: str, start: str, end: str, max_runs: int, address: str | None, storage: str | None, watch: bool | None) -> None:
    """Create one run per slot of NAME's schedules between --start and --end.

    Each slot runs once: a slot fired before (by a serve loop or an earlier
    backfill) is skipped, so a backfill can be repeated safely.

    \b
    Examples:
      daskflow backfill retrain-prod --start 2026-01-01 --end 2026-06-30 --address tcp://127.0.0.1:8786
    """
    from ..deployments.launch import claim_slot, create_run, submit_run

    registry = _registry(storage)
    record = _get(registry, name)
    schedules = record_schedules(record)
    if not schedules:
        raise CLIError(f"deployment {name!r} has no schedule to backfill; run it with `daskflow deployments run {name}`")
    slots: list[tuple[Any, datetime.datetime]] = []
    for schedule in schedules:
        first = _parse_date(start, "--start", schedule.timezone)
        last = _parse_date(end, "--end", schedule.timezone)
        if last < first:
            raise CLIError(f"--end {end!r} is before --start {start!r}")
        found = schedule.slots_between(first - datetime.timedelta(microseconds=1), last, limit=max_runs + 1)
        slots.extend((schedule, slot) for slot in found)
    if len(slots) > max_runs:
        raise CLIError(f"the range holds more than {max_runs} slots of {name!r}; narrow it or raise --max-runs")
    if not slots:
        click.echo(f"no slot of {name!r} falls between {start} and {end}")
        return
    slots.sort(key=lambda item: item[1])
    watch = address is None if watch is None else watch
    if address is None and not watch:
        raise CLIError("--no-watch needs --address: a local cluster stops when this command exits")
    made = []
    now = time.time()
    with cluster_client(address) as client:
        for schedule, slot in slots:
            request, existing = claim_slot(registry, record, schedule.id, slot, "backfill", now, kind="backfill")
            if existing is not None:
                click.echo(f"{format_time(slot.timestamp())}  fired before (run {existing.get('run_id', '?')[:8]}): skipped")
                continue
            create_run(registry.store, request)
            made.append((request, submit_run(client, registry.store, request)))
            click.echo(f"{format_time(slot.timestamp())}  created run {request.name!r}")
        click.echo(f"backfill of {name!r}: {len(made)} run(s) created, {len(slots) - len(made)} slot(s) fired before")
        if not watch:
            return
        failed = 0
        for request, future in made:
            final = watch_run(registry.store, request, future, quiet=True)
            click.echo(f"{request.name}: {final['state']['name']}")
            failed += final["state"]["type"] != "COMPLETED"
    if failed:
        raise click.exceptions.Exit(EXIT_FAILED)


COMMANDS = [deploy_command, deployments, backfill]
