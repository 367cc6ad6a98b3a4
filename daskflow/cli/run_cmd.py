"""``daskflow run PATH.py:FLOW|module:FLOW``: run a flow from the terminal."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

import click

from ._common import (
    EXIT_FAILED,
    CLIError,
    address_option,
    echo_json,
    format_duration,
    json_option,
    storage_option,
)

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "load_flow", "parse_parameters"]

#: The exit status of a run Ctrl-C stopped, as a shell reports a process SIGINT ended.
EXIT_INTERRUPTED = 130


def load_flow(target: str) -> Any:
    """The :class:`~daskflow.Flow` named by ``PATH.py:FLOW`` or ``module:FLOW``
    (see :func:`daskflow.pipeline.entrypoints.load_flow`).

    Raises
    ------
    CLIError
        If the file, module or flow cannot be found (exit code 2), or importing
        the file raised (exit code 1).
    """
    from ..exceptions import FlowImportError, InvalidOptionError
    from ..pipeline import entrypoints

    try:
        return entrypoints.load_flow(target)
    except InvalidOptionError as exc:
        raise CLIError(str(exc)) from None
    except FlowImportError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from exc


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``name=value`` pairs; a value is JSON when it parses as JSON, else a string.

    Raises
    ------
    CLIError
        For a pair without ``=`` (exit code 2).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise CLIError(f"-p {pair!r} is not name=value; write -p NAME=VALUE, like -p folds=5 or -p 'grid=[0.1, 1.0]'")
        try:
            out[name.strip()] = json.loads(value)
        except ValueError:
            out[name.strip()] = value
    return out


class _Progress:
    """A one-line progress bar on stderr, redrawn while the flow runs."""

    def __init__(self) -> None:
        self.flow_run: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="daskflow-progress", daemon=True)
        self._lock = threading.Lock()
        self._shown = False

    def observe(self, flow_run: Any) -> None:
        if self.flow_run is None:  # the top-level run, not its subflows
            self.flow_run = flow_run

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            if self._shown:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
                self._shown = False

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            run = self.flow_run
            if run is None:
                continue
            states = [tr.state for tr in list(run.task_runs.values())]
            total = len(states)
            done = sum(1 for s in states if s.is_final())
            bad = sum(1 for s in states if s.is_final() and not s.is_completed())
            cached = run.cache_hits()
            width = 30
            filled = int(width * done / total) if total else 0
            line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} task runs"
            if cached:
                line += f", {cached} cached"
            if bad:
                line += f", {bad} not completed"
            line += f"  {format_duration(time.time() - run.start_time)}"
            if run.activity:
                line += f"  ({run.activity})"  # e.g. the embedded cluster starting: why nothing moves yet
            with self._lock:
                sys.stderr.write("\r\x1b[K" + line)
                sys.stderr.flush()
                self._shown = True


class _ClearingStream:
    """stderr for log lines while the bar is shown: clears the bar line first."""

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        self.progress.clear()
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@click.command("run")
@click.argument("target", metavar="PATH.py:FLOW|module:FLOW")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A flow parameter; VALUE is JSON or a string. Repeat for more.")
@address_option
@storage_option
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: when stderr is a terminal).")
@json_option
def run(target: str, params: tuple[str, ...], address: str | None, storage: str | None, progress: bool | None, as_json: bool) -> None:
    """Run a flow and print a summary. Exit code 0 if it completed, 1 if not, 2 for bad usage, 130 after Ctrl-C.

    \b
    Examples:
      daskflow run examples/quickstart.py:estimate_pi -p batches=4 -p points=10000
      daskflow run examples/hpo_kfold.py:hpo_kfold -p folds=3 -p seed=1 --address tcp://127.0.0.1:8786 --storage s3://bucket/runs
    """
    from ..exceptions import InvalidOptionError, ParameterValidationError
    from ..pipeline.flow import RUN_OBSERVERS

    flow = load_flow(target)
    parameters = parse_parameters(params)
    try:
        flow.parameters.bind((), parameters, flow.validate_parameters)
    except ParameterValidationError as exc:
        errors = getattr(exc, "errors", None) or []
        detail = "; ".join(f"{e['field']}: {e['error']}" for e in errors) or str(exc).split("\n", 1)[0]
        raise CLIError(f"bad parameters for flow {flow.name!r}: {detail}; pass them as -p NAME=VALUE") from None
    changes: dict[str, Any] = {}
    if address:
        from ..runners.dask import DaskTaskRunner

        changes["task_runner"] = DaskTaskRunner(address=address)
    try:
        if storage:
            from ..storage.urls import check_url

            check_url(storage, "--storage")  # a mistyped protocol is a usage error, before any run starts
            changes["result_storage"] = storage
        if changes:
            flow = flow.with_options(**changes)
    except InvalidOptionError as exc:
        raise CLIError(str(exc)) from None

    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = _Progress()
    RUN_OBSERVERS.append(bar.observe)
    console = logging.getLogger("daskflow")
    saved_streams = []
    if show_bar:
        from ..pipeline.context import configure_console_logging

        configure_console_logging(True)
        for handler in console.handlers:
            if isinstance(handler, logging.StreamHandler):
                saved_streams.append((handler, handler.setStream(_ClearingStream(bar))))
        bar.start()
    try:
        state = flow(**parameters, return_state=True)
    except KeyboardInterrupt:
        # The run's last log line said it was cancelled and how to resume; not click's "Aborted!".
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    finally:
        RUN_OBSERVERS.remove(bar.observe)
        if show_bar:
            bar.stop()
            for handler, stream in saved_streams:
                handler.setStream(stream)
    _summary(bar.flow_run, state, as_json, live=address is not None)
    if not state.is_completed():
        raise click.exceptions.Exit(EXIT_FAILED)


def _summary(flow_run: Any, state: Any, as_json: bool, live: bool = False) -> None:
    """The run's summary; ``live``: its scheduler (``--address``) outlives the run,
    so its status page link still works and is printed."""
    from ..masking import mask, mask_value

    counts = flow_run.state_counts() if flow_run is not None else {}
    cached = flow_run.cache_hits() if flow_run is not None else 0
    duration = (flow_run.end_time or time.time()) - flow_run.start_time if flow_run is not None else None
    result = state.data if state.is_completed() else None
    if as_json:
        echo_json(
            {
                "id": getattr(flow_run, "id", None),
                "name": getattr(flow_run, "name", None),
                "state": state.name,
                "message": mask(state.message or ""),
                "duration": duration,
                "task_counts": counts,
                "cached": cached,
                "result_storage": getattr(flow_run, "result_storage", None),
                "history_url": getattr(flow_run, "history_url", None),
                "status_link": getattr(flow_run, "status_link", None),
                "result": mask_value(result),
            }
        )
        return
    name = getattr(flow_run, "name", "?")
    said = not state.is_completed() and state.message and _console_shows_errors()
    why = " (why: the log line above)" if said else f": {mask(state.message)}" if state.message and not state.is_completed() else ""
    lines = [f"Flow run {name!r} {state.name} in {format_duration(duration)}{why}"]
    if counts:
        lines.append("  task runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + (f" ({cached} reused from storage)" if cached else ""))
    if flow_run is not None and flow_run.result_storage:
        lines.append(f"  results:   {flow_run.result_storage}")
    if flow_run is not None and flow_run.history_url:
        storage = flow_run.result_storage or ""
        lines.append(f"  history:   daskflow runs show {flow_run.id[:12]}" + (f" --storage {storage}" if storage else ""))
        if live and flow_run.status_link:
            lines.append(f"  page:      {flow_run.status_link} (live on the scheduler)")
        lines.append("  page:      daskflow ui" + (f" --storage {storage}" if storage else "") + " (the status page, no cluster needed)")
    if state.is_completed() and result is not None:
        text = mask(repr(result))
        lines.append(f"  returned:  {text if len(text) <= 200 else text[:199] + '…'}")
    click.echo("\n".join(lines))


def _console_shows_errors() -> bool:
    """Whether the run's final ERROR line went to the console (then the summary
    does not print its message a second time)."""
    console = logging.getLogger("daskflow")
    return console.isEnabledFor(logging.ERROR) and any(isinstance(h, logging.StreamHandler) for h in console.handlers)


COMMANDS = [run]
