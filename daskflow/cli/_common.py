"""What every ``daskflow`` command shares: options, errors, tables, JSON, times."""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import click

from .. import _times
from .._times import format_duration, format_time

__all__ = [
    "CLIError",
    "address_option",
    "check_known",
    "cluster_client",
    "echo_json",
    "format_duration",
    "format_table",
    "format_time",
    "json_option",
    "open_store",
    "parse_age",
    "parse_since",
    "storage_option",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes: 0 completed, 1 failed or crashed, 2 bad usage.
EXIT_FAILED = 1
EXIT_USAGE = 2


class CLIError(click.ClickException):
    """A one-line error naming the bad value and the fix; no traceback.

    ``exit_code`` is 2 for usage mistakes (the default) and 1 for a failure
    of the thing asked for (a storage error, a run that failed).
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def check_known(value: str, known: Iterable[str], message: str, *, fix: str = "", fold_case: bool = False) -> None:
    """Refuse a filter value that matches nothing this command knows of.

    A filter such as ``--task fitt`` or ``--state Faild`` that names nothing
    would print nothing and exit 0, which reads as "no such lines"; this says
    so instead, with the nearest known values (:func:`difflib.get_close_matches`).

    Parameters
    ----------
    value : str
        What the user typed.
    known : iterable of str
        The values that exist (task run names, state names, flow names...).
    message : str
        The start of the error, e.g. ``"no task run named 'fitt' in run X"``.
    fix : str
        What to do instead, added when nothing is close (e.g. "list them with ...").
    fold_case : bool
        Compare and suggest ignoring case (state names).

    Raises
    ------
    CLIError
        Exit code 2, if ``value`` is not in ``known``.
    """
    known = sorted(set(known))
    fold = str.lower if fold_case else str
    by_key = {fold(k): k for k in known}  # compared as folded, suggested as spelled
    if fold(value) in by_key:
        return
    close = [by_key[k] for k in difflib.get_close_matches(fold(value), list(by_key), n=3, cutoff=0.6)]
    if close:
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)"
    elif fix:
        hint = f"; {fix}"
    elif known:
        shown = ", ".join(repr(k) for k in known[:8]) + (", ..." if len(known) > 8 else "")
        hint = f" (known: {shown})"
    else:
        hint = ""
    raise CLIError(message + hint)


def storage_option(fn: F) -> F:
    """``--storage URL``: the store holding results and run history."""
    return click.option(
        "--storage",
        "storage",
        metavar="URL",
        default=None,
        help="Store root: a folder or s3://bucket/prefix (default: config daskflow.storage.url, else ./.daskflow).",
    )(fn)


def address_option(fn: F) -> F:
    """``--address``: a running Dask scheduler."""
    return click.option(
        "--address",
        metavar="ADDRESS",
        default=None,
        help="Address of a running Dask scheduler, e.g. tcp://127.0.0.1:8786.",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


#: What a local folder holding a daskflow store has at least one of (results,
#: run history, deployments...): a folder with none of them is not a store.
STORE_FOLDERS = ("results", "runs", "active", "quarantine", "deployments", "fires", "limits", "code")


def open_store(url: str | None, existing: bool = False) -> Any:
    """The :class:`~daskflow.storage.Store` at ``url`` (or the configured default).

    Parameters
    ----------
    url : str, optional
        ``--storage``; ``None`` for config ``daskflow.storage.url``.
    existing : bool
        For commands that read a store (history, cache): a local folder that
        does not exist or holds no store is an error, not an empty store (it is
        most often a typo in ``--storage`` or a command run from another folder).

    Raises
    ------
    CLIError
        If the URL or its backend is unusable (exit code 2), or, with
        ``existing``, if there is no store there (exit code 1).
    """
    from ..exceptions import InvalidOptionError, StorageError
    from ..storage.store import Store

    try:
        store = Store(url)
    except (InvalidOptionError, StorageError) as exc:
        raise CLIError(f"--storage {url!r}: {exc}") from None
    if existing and store.local:
        _check_holds_a_store(store.root, url)
    return store


def _check_holds_a_store(folder: str, url: str | None) -> None:
    import os

    where = "--storage" if url is not None else "config daskflow.storage.url (or its default ./.daskflow)"
    fix = ("pass --storage with the folder or URL your flows store results in "
           "(their result_storage, or config daskflow.storage.url)")
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise CLIError(f"no daskflow store at {folder} (from {where}): the folder {what}; {fix}", EXIT_FAILED)
    try:
        names = set(os.listdir(folder))
    except OSError as exc:
        raise CLIError(f"cannot read the store folder {folder} (from {where}): {exc.strerror or exc}", EXIT_FAILED) from None
    if not names & set(STORE_FOLDERS):
        raise CLIError(f"{folder} (from {where}) holds no daskflow store: none of "
                       f"{', '.join(n + '/' for n in STORE_FOLDERS[:2])}... is in it; {fix}", EXIT_FAILED)


@contextlib.contextmanager
def cluster_client(address: str | None) -> Iterator[Any]:
    """:func:`daskflow.runners.dask.cluster_client` for a command.

    Raises
    ------
    CLIError
        If the scheduler cannot be reached (exit code 1).
    """
    from ..exceptions import RunnerError
    from ..runners.dask import cluster_client as connect

    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(connect(address))
        except RunnerError as exc:
            raise CLIError(f"{exc} (--address)", EXIT_FAILED) from None
        yield client


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON (sorted keys, one document) on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def format_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], max_width: int = 60) -> str:
    """A plain-text table: a header and left-aligned columns, cells cut at ``max_width``.

    Built as one string (a 10,000-row table is printed with one write).
    """
    cells = [[_cell(value, max_width) for value in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, value in enumerate(row):
            if len(value) > widths[i]:
                widths[i] = len(value)
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.extend("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)
    return "\n".join(lines)


def _cell(value: Any, max_width: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = text.replace("\n", " ")
    if len(text) > max_width:
        text = text[: max_width - 1] + "…"
    return text


def parse_age(text: str, option: str) -> float:
    """``30s``, ``15m``, ``12h``, ``7d`` or ``2w`` as seconds.

    Raises
    ------
    CLIError
        Naming ``option`` and the accepted forms.
    """
    try:
        return _times.parse_age(text)
    except ValueError as exc:
        raise CLIError(f"{option} {exc}") from None


def parse_since(text: str, option: str = "--since") -> float:
    """An age ago (``7d``) or a date (``2026-11-20``) as a timestamp.

    Raises
    ------
    CLIError
        Naming ``option`` and the accepted forms.
    """
    try:
        return _times.parse_since(text)
    except ValueError as exc:
        raise CLIError(f"{option} {exc}") from None

