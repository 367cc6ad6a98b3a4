"""``daskflow runs ls|show|graph``, ``daskflow logs``, ``daskflow artifacts``, ``daskflow cancel``."""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from .._names import same_name
from ..exceptions import RunNotFoundError, StorageError
from ..pipeline import states as _states
from ..storage.records import History, RunEntry, run_ended
from ._common import (
    EXIT_FAILED,
    CLIError,
    address_option,
    check_known,
    echo_json,
    format_duration,
    format_table,
    format_time,
    json_option,
    open_store,
    parse_since,
    storage_option,
)

__all__ = ["COMMANDS"]

def _history(storage: str | None) -> History:
    return History(open_store(storage, existing=True))


def _resolve(history: History, run: str) -> RunEntry:
    try:
        return history.resolve(run)
    except RunNotFoundError as exc:
        raise CLIError(str(exc)) from None
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None


def _sweep(history: History) -> None:
    """Best effort: a reader without write access still shows stale runs Crashed."""
    try:
        history.sweep()
    except (StorageError, OSError):
        logging.getLogger("daskflow").debug("heartbeat sweep failed", exc_info=True)


#: The state names and types ``--state`` knows without reading any run (a custom
#: named state a run really ended in is accepted too: see _check_run_filters).
STATE_NAMES = tuple(
    [maker.__name__ for maker in (
        _states.Scheduled, _states.AwaitingRetry, _states.Late, _states.Pending, _states.Running, _states.Retrying,
        _states.Completed, _states.Cached, _states.Failed, _states.TimedOut, _states.Crashed, _states.Cancelled,
        _states.UpstreamFailed,
    )]
    + [t.value for t in _states.StateType]
)


def _check_run_filters(history: History, flow_name: str | None, state: str | None, tag: str | None) -> None:
    """Called when ``runs ls`` matched nothing: a filter naming a state, flow or
    tag that no run has is a typo, not an empty answer (exit 2, nearest names)."""
    where = history.store.url
    if state and state.lower() not in {n.lower() for n in STATE_NAMES}:
        seen = _seen(history, lambda r: [str(r.get("state", {}).get("name", ""))])
        check_known(state, [*STATE_NAMES[: -len(_states.StateType)], *seen], f"unknown state {state!r}", fold_case=True)
    if flow_name:
        flows = _seen(history, lambda r: [str(r.get("flow_name") or "")])
        if not any(same_name(f, flow_name) for f in flows):
            check_known(flow_name, flows, f"no runs of a flow named {flow_name!r} in {where}")
    if tag:
        check_known(tag, _seen(history, lambda r: list(r.get("tags", ()))), f"no run tagged {tag!r} in {where}")


def _seen(history: History, values: Any) -> set[str]:
    """Every value ``values(record)`` gives over the store's runs (read only on the error path)."""
    try:
        return {v for record in history.runs() for v in values(record) if v}
    except StorageError:
        return set()


def _duration(record: dict[str, Any]) -> float | None:
    start, end = record.get("start_time"), record.get("end_time")
    if start is None:
        return None
    if end is None:
        return time.time() - start if not run_ended(record) else None
    return end - start


@click.group()
def runs() -> None:
    """Flow runs recorded in a store: list them, show one, export its graph."""


@runs.command("ls")
@storage_option
@click.option("--flow", "flow_name", metavar="NAME", help="Only runs of this flow.")
@click.option("--state", metavar="STATE", help="Only runs in this state (Completed, Failed, Running, Crashed, ...).")
@click.option("--tag", metavar="TAG", help="Only runs with this tag.")
@click.option("--since", metavar="AGE|DATE", help="Only runs started since then: 12h, 7d or 2026-11-20.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="Show at most this many runs.")
@json_option
def runs_ls(storage: str | None, flow_name: str | None, state: str | None, tag: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """List flow runs, newest first."""
    history = _history(storage)
    since_time = parse_since(since) if since else None
    _sweep(history)
    try:
        records = history.runs(flow=flow_name, state=state, tag=tag, since=since_time, limit=limit)
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if not records:
        _check_run_filters(history, flow_name, state, tag)
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo(f"No runs in {history.store.url}" + (" match" if any((flow_name, state, tag, since)) else ""))
        return
    rows = []
    for r in records:
        counts = r.get("task_counts", {})
        bad = sum(n for name, n in counts.items() if name not in ("Completed", "Cached", "Running", "Pending", "Retrying", "AwaitingRetry"))
        rows.append(
            [r["id"][:12], r.get("flow_name"), r["state"].get("name"), format_time(r.get("start_time")), format_duration(_duration(r)),
             r.get("task_runs", 0), r.get("cached", 0), bad, ",".join(r.get("tags", []))]
        )
    click.echo(format_table(["ID", "FLOW", "STATE", "STARTED", "DURATION", "TASKS", "CACHED", "NOT OK", "TAGS"], rows))


@runs.command("show")
@click.argument("run")
@storage_option
@click.option("--tracebacks", is_flag=True, help="Print the traceback of every failed task run.")
@json_option
def runs_show(run: str, storage: str | None, tracebacks: bool, as_json: bool) -> None:
    """Show a flow run and its task runs. RUN is a run id, its first 6+ characters, or a run name."""
    history = _history(storage)
    entry = _resolve(history, run)
    try:
        record = history.run(entry)
        tasks = history.tasks(entry)
    except RunNotFoundError as exc:
        raise CLIError(str(exc)) from None
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if as_json:
        echo_json({"run": record, "task_runs": tasks})
        return
    state = record["state"]
    counts = ", ".join(f"{n} {name}" for name, n in sorted(record.get("task_counts", {}).items())) or "none"
    header = [
        ("run", f"{record.get('name')} ({record['id']})"),
        ("flow", f"{record.get('flow_name')}" + (f" version {record['version']}" if record.get("version") else "")),
        ("state", state.get("name") + (f": {state['message']}" if state.get("message") else "")),
        ("started", format_time(record.get("start_time"))),
        ("duration", format_duration(_duration(record))),
        ("parameters", ", ".join(f"{k}={v!r}" for k, v in record.get("parameters", {}).items()) or "-"),
        ("tags", ", ".join(record.get("tags", [])) or "-"),
        ("task runs", f"{record.get('task_runs', 0)}: {counts}; {record.get('cached', 0)} cached"),
        ("results", record.get("result_storage") or "-"),
        ("history", record.get("history_url") or "-"),
    ]
    if record.get("parent_flow_run_id"):
        header.append(("parent run", _named(record.get("parent_flow_run_name"), record["parent_flow_run_id"])))
    if record.get("parent_task_run_id"):
        header.append(("started by", _started_by(record)))
    if record.get("subflow_run_ids"):
        header.append(("subflow runs", ", ".join(record["subflow_run_ids"])))
    nested = [(t["name"], run) for t in tasks for run in t.get("nested_runs") or ()]
    if nested:
        header.append(("nested runs", ", ".join(f"{_named(run[1] if len(run) > 1 else None, run[0])} from {name}" for name, run in nested)))
    width = max(len(k) for k, _ in header)
    lines = [f"{k.ljust(width)}  {v}" for k, v in header]
    if tasks:
        rows = [
            [t["name"], t["state"]["name"], _attempts(t), format_duration(_task_duration(t)), t.get("worker"),
             "yes" if t.get("cache_hit") else "", _final_error(t)]
            for t in tasks
        ]
        lines += ["", format_table(["TASK RUN", "STATE", "ATTEMPTS", "DURATION", "WORKER", "CACHED", "ERROR"], rows, max_width=80)]
        retried = [(t["name"], message) for t in tasks if _final_error(t) == "" for message in _failed_attempts(t)]
        if retried:
            lines += ["", "Attempts that failed before a retry succeeded:"]
            lines += [f"  {name}: {message.split(chr(10), 1)[0]}" for name, message in retried]
    if tracebacks:
        for t in tasks:
            if t.get("traceback"):
                lines += ["", f"Traceback of task run {t['name']!r}:", t["traceback"]]
    if record.get("traceback"):
        lines += ["", "The flow run's error:", record["traceback"]]
    click.echo("\n".join(lines))


_FAILED_ATTEMPT = ("FAILED", "CRASHED")
_NOT_OK = (*_FAILED_ATTEMPT, "CANCELLED")


def _failed_attempts(task: dict[str, Any]) -> list[str]:
    """The messages of the attempts that failed or crashed before the final state."""
    history = task.get("history") or []
    return [str(h[3]) for h in history[:-1] if len(h) > 3 and h[0] in _FAILED_ATTEMPT]


def _attempts(task: dict[str, Any]) -> str:
    """``2 (1 failed)`` for a task run that needed a retry; the count alone otherwise."""
    attempts = task.get("attempts")
    if not attempts:
        return "-"
    failed = len(_failed_attempts(task)) if _final_error(task) == "" else 0
    return f"{attempts} ({failed} failed)" if failed else str(attempts)


def _final_error(task: dict[str, Any]) -> str:
    """The error that ended the task run: none for one that completed after a retry
    (its earlier attempts' errors are listed apart, as retried attempts)."""
    if task["state"].get("type") not in _NOT_OK:
        return ""
    return (task.get("error") or "").split("\n", 1)[0]


def _named(name: str | None, run_id: str) -> str:
    return f"{name} ({run_id})" if name else run_id


def _started_by(record: dict[str, Any]) -> str:
    """What started a nested run (daskflow.pipeline.nested): ``task run X of run Y (id)``."""
    return (
        f"task run {record.get('parent_task_run_name') or record.get('parent_task_run_id')} "
        f"of run {_named(record.get('parent_flow_run_name'), record.get('parent_flow_run_id') or '?')}"
    )


def _task_duration(task: dict[str, Any]) -> float | None:
    start, end = task.get("start_time"), task.get("end_time")
    return None if start is None or end is None else end - start


_STATE_COLORS = {
    "COMPLETED": "palegreen", "FAILED": "lightcoral", "CRASHED": "orange", "CANCELLED": "lightgrey",
    "SKIPPED": "khaki", "RUNNING": "lightblue", "PENDING": "white", "SCHEDULED": "white",
}


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@runs.command("graph")
@click.argument("run")
@storage_option
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the dot text to this file instead of stdout.")
def runs_graph(run: str, storage: str | None, output: str | None) -> None:
    """Print a run's task graph as Graphviz dot (render with: dot -Tsvg)."""
    history = _history(storage)
    entry = _resolve(history, run)
    record = history.run(entry)
    tasks = history.tasks(entry)
    lines = [f"digraph {_dot_string(record.get('name') or entry.run_id)} {{", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for t in tasks:
        color = _STATE_COLORS.get(t["state"]["type"], "white")
        label = f"{t['name']}\n{t['state']['name']}" + (" (cached)" if t.get("cache_hit") else "")
        lines.append(f"  {_dot_string(t['id'])} [label={_dot_string(label)}, fillcolor={color}];")
    for t in tasks:
        for up in t.get("upstream", []):
            lines.append(f"  {_dot_string(up)} -> {_dot_string(t['id'])};")
        for up in t.get("wait_for", []):
            lines.append(f"  {_dot_string(up)} -> {_dot_string(t['id'])} [style=dashed];")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if output:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)
        click.echo(f"wrote {len(tasks)} task runs to {output}", err=True)
    else:
        click.echo(text, nl=False)


@click.command("logs")
@click.argument("run")
@storage_option
@click.option("--task", metavar="NAME", help="Only lines of this task run (fit-3) or task (fit); '-' for the flow body's own.")
@click.option("--level", default="DEBUG", show_default=True, help="Lowest level shown: DEBUG, INFO, WARNING, ERROR.")
@json_option
def logs(run: str, storage: str | None, task: str | None, level: str, as_json: bool) -> None:
    """Print the log lines of a flow run (task lines from every worker included)."""
    threshold = logging.getLevelName(level.upper())
    if not isinstance(threshold, int):
        check_known(level, ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], f"--level {level!r} is not a level",
                    fix="use DEBUG, INFO, WARNING or ERROR", fold_case=True)
    history = _history(storage)
    entry = _resolve(history, run)
    try:
        lines = history.logs(entry, None if task == "-" else task)
        if task not in (None, "-") and not lines:
            # A name no task run has is a typo, not a quiet task run. Read the task
            # records (and every line: a running run's records may lag its logs).
            names = [n for t in history.tasks(entry) for n in (t.get("name"), t.get("task_name")) if n]
            names += [str(line["tn"]) for line in history.logs(entry) if line.get("tn")]
            check_known(task, names, f"no task run named {task!r} in run {entry.run_id}",
                        fix=f"list its task runs with `daskflow runs show {run}`")
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    if task == "-":
        lines = [line for line in lines if line.get("tn") is None]
    lines = [line for line in lines if line.get("l", 0) >= threshold]
    if as_json:
        echo_json([{"time": l.get("t"), "level": logging.getLevelName(l.get("l", 0)), "task_run": l.get("tn"), "message": l.get("m")} for l in lines])
        return
    out = []
    for line in lines:
        stamp = line.get("t", 0)
        clock = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
        who = f"Task run {line['tn']!r}" if line.get("tn") else "Flow run"
        out.append(f"{clock} | {logging.getLevelName(line.get('l', 0)):<7} | {who} - {line.get('m', '')}")
    if out:
        click.echo("\n".join(out))


@click.group()
def artifacts() -> None:
    """Tables, markdown, links, progress and images attached to runs."""


@artifacts.command("ls")
@click.argument("run")
@storage_option
@json_option
def artifacts_ls(run: str, storage: str | None, as_json: bool) -> None:
    """List the artifacts of a flow run."""
    history = _history(storage)
    entry = _resolve(history, run)
    found = history.artifacts(entry)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("No artifacts")
        return
    rows = [[a["id"][:12], a.get("key"), a["type"], a.get("task_run_name") or "(flow)", format_time(a.get("created")), _summary(a)] for a in found]
    click.echo(format_table(["ID", "KEY", "TYPE", "TASK RUN", "CREATED", "CONTENT"], rows))


@artifacts.command("show")
@click.argument("run")
@click.argument("artifact")
@storage_option
def artifacts_show(run: str, artifact: str, storage: str | None) -> None:
    """Print one artifact of a run (by key or id prefix); tables as text."""
    history = _history(storage)
    entry = _resolve(history, run)
    found = [a for a in history.artifacts(entry) if a.get("key") == artifact or a["id"].startswith(artifact)]
    if not found:
        keys = [str(a["key"]) for a in history.artifacts(entry) if a.get("key")]
        check_known(artifact, keys, f"run {entry.run_id} has no artifact {artifact!r}", fix=f"list them with `daskflow artifacts ls {run}`")
    a = found[-1]  # the latest version of a key
    if a.get("description"):
        click.echo(a["description"] + "\n")
    data = a.get("data")
    if a["type"] == "table" and isinstance(data, dict):
        click.echo(format_table(data.get("columns", []), data.get("rows", []), max_width=40))
    elif a["type"] == "link" and isinstance(data, dict):
        click.echo(f"{data.get('text') or ''} {data.get('url')}".strip())
    elif a["type"] == "progress" and isinstance(data, (int, float)):
        click.echo(f"{float(data):.1f}%")
    elif a["type"] == "image" and isinstance(data, dict):
        click.echo(str(data.get("url")))
    else:
        click.echo(str(data))


def _summary(artifact: dict[str, Any]) -> str:
    data = artifact.get("data")
    if artifact["type"] == "table" and isinstance(data, dict):
        return f"{len(data.get('rows', []))} rows x {len(data.get('columns', []))} columns"
    if artifact["type"] == "link" and isinstance(data, dict):
        return str(data.get("url"))
    if artifact["type"] == "progress" and isinstance(data, (int, float)):
        return f"{float(data):.1f}%"
    if artifact["type"] == "image" and isinstance(data, dict):
        return str(data.get("url"))
    return str(data).strip().split("\n", 1)[0]


@click.command("cancel")
@click.argument("run")
@storage_option
@address_option
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait for the run to stop (0: do not wait).")
def cancel(run: str, storage: str | None, address: str | None, timeout: float) -> None:
    """Cancel a running flow run.

    The request is written next to the run's record; its driver checks for it
    at each heartbeat. With --address it is also sent through the Dask
    scheduler, which the driver hears at once. Exit code 0 once the run is
    Cancelled, 1 if it had already finished or does not stop in time.
    """
    history = _history(storage)
    entry = _resolve(history, run)
    record = history.run(entry)
    state = record["state"]
    if run_ended(record):
        raise CLIError(f"run {record['name']} already finished in state {state.get('name')}; nothing to cancel", EXIT_FAILED)
    reason = "cancelled with daskflow cancel"
    history.request_cancel(entry, reason)
    if address:
        _send_cancel(address, entry.run_id, reason)
    click.echo(f"Asked run {record['name']} to cancel")
    if timeout == 0:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = history.run(entry)
        if run_ended(record):
            click.echo(f"Run {record['name']} ended {record['state'].get('name')}")
            if record["state"].get("type") != "CANCELLED":
                raise click.exceptions.Exit(EXIT_FAILED)
            return
        time.sleep(0.5)  # polling another process's record: nothing to wait on
    raise CLIError(
        f"run {record['name']} has not stopped after {timeout:g} s; its driver checks every heartbeat "
        "(daskflow.history.heartbeat); pass --address to reach it through the scheduler",
        EXIT_FAILED,
    )


def _send_cancel(address: str, run_id: str, reason: str) -> None:
    from distributed import Client

    from ..runners.dask import REPORT_TOPIC

    try:
        with Client(address, timeout=10, set_as_default=False) as client:
            client.log_event(REPORT_TOPIC, {"ev": "cancel", "fr": run_id, "reason": reason})
    except OSError as exc:
        raise CLIError(f"cannot reach the Dask scheduler at --address {address!r}: {exc}; the request is in storage and the driver will see it at its next heartbeat", EXIT_FAILED) from None


COMMANDS = [runs, logs, artifacts, cancel]
