"""``daskflow cache ls|inspect|clear|gc``: the results tasks stored, their quarantine, and what
interrupted writes left behind."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..exceptions import StorageError
from ..storage import entries as store_entries
from ..storage import gc as store_gc
from ..storage.entries import (
    Deleted,
    Entry,
    EntryNotFoundError,
    QuarantinedEntry,
    StoredFile,
    format_size,
)
from ..storage.gc import Leftover, Removed
from ..storage.store import Store
from ._common import (
    EXIT_FAILED,
    CLIError,
    echo_json,
    format_duration,
    format_table,
    format_time,
    json_option,
    open_store,
    parse_age,
    storage_option,
)

__all__ = ["COMMANDS"]

T = TypeVar("T")

_FIND_KEYS = "list keys with `daskflow cache ls`"


def _storage(call: Callable[[], T]) -> T:
    """``call()``, with a storage failure as a one-line error and exit code 1."""
    try:
        return call()
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _expires(entry: Entry) -> str:
    if entry.manifest is None or entry.manifest.expires is None:
        return "never" if entry.manifest is not None else "-"
    return format_time(entry.manifest.expires) + (" (expired)" if entry.expired else "")


def _quarantine_warning(store: Store, count: int) -> None:
    # stderr: keeps stdout a table or JSON document for scripts.
    click.echo(
        f"Warning: storage returned corrupted data for {_plural(count, 'entry')}, now in "
        f"{store.describe('quarantine/')} (their tasks recompute); see them with "
        "`daskflow cache ls --quarantine`, delete them with `daskflow cache clear --quarantine`",
        err=True,
    )


@click.group()
def cache() -> None:
    """Results stored by tasks: list, inspect and delete cache entries."""


@cache.command("ls")
@storage_option
@click.option("--task", "task_name", metavar="NAME", help="Only entries of this task (its name, e.g. load_data).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Show at most this many entries.")
@click.option("--quarantine", is_flag=True, help="List quarantined (corrupted) entries instead, with the reason when known.")
@click.option("--leftovers", is_flag=True, help="List what interrupted writes left instead: temporary files and unfinished S3 multipart uploads.")
@json_option
def cache_ls(storage: str | None, task_name: str | None, limit: int, quarantine: bool, leftovers: bool, as_json: bool) -> None:
    """List stored results, newest first.

    KIND is "cache" for a cache entry and "run" for the result of a task run
    that was not cached (kept so the flow run can load it). A note on stderr
    counts what interrupted writes left behind (`daskflow cache gc` removes it).
    """
    store = open_store(storage, existing=True)
    if leftovers:
        _ls_leftovers(store, limit, as_json)
        return
    if quarantine:
        _ls_quarantine(store, task_name, limit, as_json)
        return
    listing = _storage(lambda: store_entries.list_entries(store))
    matching = store_entries.select(listing.entries, task=task_name)
    shown = matching[:limit]
    quarantined = len(_storage(lambda: store_entries.list_quarantine(store)))
    if as_json:
        echo_json([entry.to_dict() for entry in shown])
    elif not matching:
        click.echo(f"No cache entries in {store.url}" + (f" for task {task_name!r}" if task_name else ""))
    else:
        rows = [
            [e.key[:16], e.kind, e.task if e.manifest else "?", format_size(e.manifest.size if e.manifest else e.payload_bytes),
             format_time(e.created), _expires(e), e.manifest.serializer if e.manifest else "?", e.task_run]
            for e in shown
        ]
        click.echo(format_table(["KEY", "KIND", "TASK", "SIZE", "CREATED", "EXPIRES", "SERIALIZER", "TASK RUN"], rows))
        click.echo(_summary(store, matching, shown, task_name))
        untrusted = sum(1 for e in matching if e.manifest is None)
        if untrusted:
            click.echo(f"{_plural(untrusted, 'entry')} (TASK ?) could not be read or verified; "
                       "`daskflow cache inspect KEY` says why", err=True)
        if listing.orphans and not task_name:
            click.echo(f"{_plural(len(listing.orphans), 'payload')} without a manifest "
                       f"({format_size(sum(f.size for f in listing.orphans.values()))}), left by interrupted "
                       "(or running) writes: `daskflow cache gc` deletes those over an hour old", err=True)
    if not task_name:
        found = _storage(lambda: store_gc.find_leftovers(store))
        if found:
            click.echo(f"{_leftover_summary(found)} left by interrupted (or running) writes: "
                       "`daskflow cache ls --leftovers` lists them, `daskflow cache gc` removes those over an hour old", err=True)
    if quarantined:
        _quarantine_warning(store, quarantined)


def _leftover_summary(found: list[Leftover]) -> str:
    """``2 temporary files (1.2 MB) and 1 unfinished multipart upload (100.0 MB), the oldest 3h old``."""
    parts = []
    for kind, word in (("temp", "temporary file"), ("upload", "unfinished multipart upload")):
        items = [f for f in found if f.kind == kind]
        if items:
            parts.append(f"{_plural(len(items), word)} ({format_size(sum(f.size for f in items))})")
    ages = [age for f in found if (age := f.age()) is not None]
    oldest = f", the oldest {format_duration(max(ages))} old" if ages else ""
    return " and ".join(parts) + oldest


def _ls_leftovers(store: Store, limit: int, as_json: bool) -> None:
    found = _storage(lambda: store_gc.find_leftovers(store))
    shown = found[:limit]
    if as_json:
        echo_json([f.to_dict() for f in shown])
        return
    if not found:
        click.echo(f"Nothing left by interrupted writes in {store.url}")
        return
    kinds = {"temp": "temp file", "upload": "upload"}
    rows = [[kinds[f.kind] + ("/" if f.folder else ""), f.path, format_size(f.size),
             format_duration(age) if (age := f.age()) is not None else "?", f.upload_id or "-"] for f in shown]
    click.echo(format_table(["KIND", "PATH", "SIZE", "AGE", "UPLOAD ID"], rows, max_width=100))
    more = f"; showing {len(shown)}, --limit shows more" if len(shown) < len(found) else ""
    click.echo(f"{_leftover_summary(found)} in {store.url}{more}; `daskflow cache gc` removes those over an hour old "
               "(--older-than for another age)")


def _summary(store: Store, matching: list[Entry], shown: list[Entry], task_name: str | None) -> str:
    total = format_size(sum(e.stored_bytes for e in matching))
    what = _plural(len(matching), "entry") + (f" of task {task_name!r}" if task_name else "")
    expired = sum(1 for e in matching if e.expired)
    if expired:  # still stored, but read as misses
        what += f" ({expired} expired)"
    if len(shown) < len(matching):
        return f"Showing {len(shown)} of {what} ({total} stored in all) in {store.url}; --limit shows more" + _store_size(store)
    return f"{what}, {total} stored in {store.url}" + _store_size(store)


def _store_size(store: Store) -> str:
    """``; the store holds 512.0 MB in all (results 500.0 MB, runs 12.0 MB)``: cache
    entries are not all a store keeps (run history, files flows write themselves)."""
    try:
        usage = store.usage()
    except StorageError:
        return ""
    parts = ", ".join(f"{folder or '(root)'} {format_size(size)}" for folder, size in sorted(usage.items(), key=lambda kv: -kv[1]) if size)
    return f"; the store holds {format_size(sum(usage.values()))} in all ({parts})" if parts else ""


def _ls_quarantine(store: Store, task_name: str | None, limit: int, as_json: bool) -> None:
    items = _storage(lambda: store_entries.list_quarantine(store, reasons=True))
    if task_name:
        items = [q for q in items if q.task == task_name]
    shown = items[:limit]
    if as_json:
        echo_json([q.to_dict() for q in shown])
        return
    if not items:
        click.echo(f"Nothing in quarantine in {store.url}")
        return
    rows = [[q.key[:16], q.task or "?", format_time(q.quarantined), format_size(q.size), q.reason or "unknown (it verifies now)"] for q in shown]
    click.echo(format_table(["KEY", "TASK", "QUARANTINED", "SIZE", "REASON"], rows, max_width=100))
    more = f"; showing {len(shown)}, --limit shows more" if len(shown) < len(items) else ""
    click.echo(f"{_plural(len(items), 'quarantined entry')}, {format_size(sum(q.size for q in items))} in "
               f"{store.describe('quarantine/')}{more}; `daskflow cache clear --quarantine` deletes quarantined entries")


@cache.command("inspect")
@click.argument("key")
@storage_option
@json_option
def cache_inspect(key: str, storage: str | None, as_json: bool) -> None:
    """Show an entry's manifest and check its payload's size and sha256.

    KEY is a full key or its first 6+ characters. The payload is hashed, never
    loaded. Exit code 1 if the entry is corrupted.
    """
    store = open_store(storage, existing=True)
    try:
        full = _storage(lambda: store_entries.resolve_key(store, key))
        found = _storage(lambda: store_entries.inspect_entry(store, full))
    except EntryNotFoundError as exc:
        raise CLIError(f"{exc}; {_FIND_KEYS}") from None
    if as_json:
        echo_json(found.to_dict())
    else:
        click.echo(_inspection_text(found))
    if not found.ok:
        raise click.exceptions.Exit(EXIT_FAILED)


def _inspection_text(found: store_entries.Inspection) -> str:
    fields = dict(found.fields or {})
    meta = fields.pop("meta", None)
    lines: list[tuple[str, Any]] = [("key", found.key), ("kind", found.kind)]
    for name, value in fields.items():
        if name == "key":
            continue
        if name in ("created", "expires") and isinstance(value, (int, float)):
            value = format_time(value) + (" (expired)" if name == "expires" and value <= time.time() else "")
        elif name == "expires" and value is None:
            value = "never"
        elif name == "size" and isinstance(value, int):
            value = f"{value} bytes ({format_size(value)})"
        lines.append((name, value))
    if isinstance(meta, dict):
        lines.extend((f"meta.{name}", value) for name, value in sorted(meta.items()))
    if found.fields is None:
        lines.append(("manifest", "not JSON"))
    lines += [
        ("manifest url", found.manifest_url),
        ("payload url", found.payload_url or "-"),
        ("payload bytes", "missing" if found.payload_url and found.payload_bytes is None else found.payload_bytes),
        ("signature", found.signature),
        ("status", "verified" if found.ok else f"CORRUPTED: {found.problem}"),
    ]
    width = max(len(name) for name, _ in lines)
    text = "\n".join(f"{name.ljust(width)}  {'-' if value is None else value}" for name, value in lines)
    if found.manifest is None:
        text += "\nThe manifest is not trusted; the next run that reads this key moves it to quarantine/ and recomputes it."
    elif not found.ok:
        text += "\nThe next run that reads this key moves it to quarantine/ and recomputes it."
    return text


@cache.command("clear")
@storage_option
@click.option("--older-than", metavar="AGE", help="Only entries created more than AGE ago: 30m, 12h, 7d, 2w.")
@click.option("--task", "task_name", metavar="NAME", help="Only entries of this task.")
@click.option("--quarantine", is_flag=True, help="Delete quarantined (corrupted) entries instead.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(storage: str | None, older_than: str | None, task_name: str | None, quarantine: bool, dry_run: bool, yes: bool) -> None:
    """Delete stored results: all of them, or those matching the filters.

    Deleting an entry makes its task recompute at its next run. Run history
    (runs/) is never touched. Without filters, what interrupted writes left
    (payloads without a manifest, temporary files, unfinished S3 multipart
    uploads) goes too, once an hour old, as with `daskflow cache gc`.
    """
    age = parse_age(older_than, "--older-than") if older_than is not None else None
    store = open_store(storage, existing=True)
    if quarantine:
        items = _storage(lambda: store_entries.list_quarantine(store, reasons=task_name is not None))
        now = time.time()
        items = [q for q in items if (task_name is None or q.task == task_name) and (age is None or q.quarantined <= now - age)]
        _clear(store, items, {}, [], "quarantined entry", dry_run, yes)
        return
    listing = _storage(lambda: store_entries.list_entries(store))
    selected = store_entries.select(listing.entries, task=task_name, older_than=age)
    everything = task_name is None and age is None
    leftovers = store_gc.stale(_storage(lambda: store_gc.find_leftovers(store))) if everything else []
    _clear(store, selected, listing.stale_orphans() if everything else {}, leftovers, "entry", dry_run, yes)


@cache.command("gc")
@storage_option
@click.option("--older-than", metavar="AGE", default="1h", show_default=True,
              help="Only what was left more than AGE ago (a younger one may be a write in progress): 30m, 12h, 7d.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
def cache_gc(storage: str | None, older_than: str, dry_run: bool) -> None:
    """Remove what interrupted writes left behind; keep every entry.

    A worker killed while storing a result leaves a temporary file (.tmp-*)
    on a local store, or an unfinished multipart upload on S3 (results of
    100 MB and more), and possibly a payload whose manifest it never wrote.
    None is ever read as a result, but each takes space (S3 bills the parts of
    an unfinished upload). Only leftovers under this store's root or prefix,
    and older than --older-than, are removed: a younger one may belong to a
    write still in progress. Safe to run while flows run.
    """
    grace = parse_age(older_than, "--older-than")
    store = open_store(storage, existing=True)
    listing = _storage(lambda: store_entries.list_entries(store))
    orphans = listing.stale_orphans(grace)
    leftovers = store_gc.stale(_storage(lambda: store_gc.find_leftovers(store)), grace)
    if not orphans and not leftovers:
        click.echo(f"Nothing left by interrupted writes over {older_than} old in {store.url}")
        return
    if dry_run:
        for item in leftovers:
            click.echo(f"  {item.kind:<6}  {item.path}" + (f"  (upload {item.upload_id})" if item.upload_id else ""))
        for path in orphans:
            click.echo(f"  orphan  {path}")
        click.echo(f"Would remove {_what(_delete(store, [], orphans, leftovers, dry_run=True), 'entry')} from {store.url}")
        return
    done = Deleted(), Removed()
    try:
        _delete(store, [], orphans, leftovers, dry_run=False, tally=done)
    except StorageError as exc:
        raise CLIError(f"{exc} (removed {_what(done, 'entry')} before this failure)", EXIT_FAILED) from None
    click.echo(f"Removed {_what(done, 'entry')} from {store.url}")


def _clear(store: Store, items: list[Any], orphans: dict[str, StoredFile], leftovers: list[Leftover], word: str,
           dry_run: bool, yes: bool) -> None:
    if not items and not orphans and not leftovers:
        click.echo(f"Nothing to delete in {store.url}")
        return
    planned = _delete(store, items, orphans, leftovers, dry_run=True)
    what = _what(planned, word)
    if dry_run:
        for item in items:
            click.echo(f"  {item.key}  {item.task or '?'}")
        click.echo(f"Would delete {what} from {store.url}")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise CLIError(f"not deleting {what} from {store.url} without confirmation: "
                           "stdin is not a terminal; pass --yes to delete without asking")
        click.confirm(f"Delete {what} from {store.url}?", abort=True)
    done = Deleted(), Removed()
    try:
        _delete(store, items, orphans, leftovers, dry_run=False, tally=done)
    except StorageError as exc:
        raise CLIError(f"{exc} (deleted {_what(done, word)} before this failure)", EXIT_FAILED) from None
    click.echo(f"Deleted {_what(done, word)} from {store.url}")


Tally = tuple[Deleted, Removed]


def _delete(store: Store, items: list[Any], orphans: dict[str, StoredFile], leftovers: list[Leftover], dry_run: bool,
            tally: Tally | None = None) -> Tally:
    deleted, removed = tally if tally is not None else (Deleted(), Removed())
    if items and isinstance(items[0], QuarantinedEntry):
        store_entries.delete_quarantined(store, items, dry_run=dry_run, tally=deleted)
    else:
        store_entries.delete_entries(store, items, orphans, dry_run=dry_run, tally=deleted)
    store_gc.remove_leftovers(store, leftovers, dry_run=dry_run, tally=removed)
    return deleted, removed


def _what(tally: Tally, word: str) -> str:
    deleted, removed = tally
    parts = [_plural(deleted.entries, word)] if deleted.entries or not (deleted.orphans or removed.temps or removed.uploads) else []
    if deleted.orphans:
        parts.append(f"{_plural(deleted.orphans, 'payload')} without a manifest")
    if removed.temps:
        parts.append(_plural(removed.temps, "temporary file"))
    if removed.uploads:
        parts.append(_plural(removed.uploads, "unfinished multipart upload"))
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{text} ({format_size(deleted.bytes + removed.bytes)})"


COMMANDS = [cache]
