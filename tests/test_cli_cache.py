"""``daskflow cache ls|inspect|clear`` on real stores filled by real flows.

Entries come from flows run with the sequential runner (or ``Store.write_result``
where a test needs a chosen key); damage is done to the stored files themselves.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import dask
import pytest
from click.testing import CliRunner, Result

from daskflow import NONE, CorruptedResultError, SequentialTaskRunner, Store, flow
from daskflow.cli import cli
from daskflow.storage.entries import format_size
from daskflow.storage.store import Manifest

from .conftest import assert_error
from .s3 import bucket_keys
from .tasks import add, describe, total


@flow
def two_kinds(x: int):
    """Two cached tasks (add, total) and one uncached (describe): 3 entries."""
    a = add.submit(x)
    b = total.submit([a, 10])
    return describe.with_options(cache_policy=NONE).submit(b).result()


def run_flow(x: int = 1) -> None:
    two_kinds.with_options(task_runner=SequentialTaskRunner())(x)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def manifests(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in root.glob("results/*/*/*.json")}


def stored_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def table_rows(output: str) -> list[list[str]]:
    """The rows of the table printed first (up to the first blank or summary line)."""
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["KEY", "KIND", "TASK"], output
    rows = []
    for line in lines[1:]:
        if re.match(r"^(\d+ entr|Showing )", line):  # the summary line
            break
        rows.append(line.split())
    return rows


def truncate_payload(store: Store, key: str) -> Manifest:
    manifest = store.read_manifest(key)
    path = Path(store.root) / store.payload_path(manifest)
    path.write_bytes(path.read_bytes()[:-2])
    return manifest


def backdate(store: Store, key: str, seconds: float) -> None:
    """Rewrite an (unsigned) entry's manifest as if it had been written ``seconds`` ago."""
    manifest = store.read_manifest(key)
    store.put(store.manifest_path(key), Manifest(**{**asdict(manifest), "created": manifest.created - seconds}).to_bytes())


# ------------------------------------------------------------------------ ls
def test_ls_lists_a_flows_entries_newest_first(_result_storage):
    run_flow()
    result = invoke("cache", "ls")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert sorted((r[1], r[2]) for r in rows) == [("cache", "add"), ("cache", "total"), ("run", "describe")]
    assert "3 entries" in result.stdout.splitlines()[-1]
    assert result.stderr == ""  # no quarantine warning, nothing unreadable
    # The whole store's size, by top-level folder: results and the run history.
    on_disk = {folder.name: sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
               for folder in _result_storage.iterdir() if folder.is_dir()}
    summary = result.stdout.splitlines()[-1]
    total = sum(on_disk.values())
    assert f"; the store holds {format_size(total)} in all (" in summary
    assert f"results {format_size(on_disk['results'])}" in summary and f"runs {format_size(on_disk['runs'])}" in summary

    listed = json.loads(invoke("cache", "ls", "--json").stdout)
    on_disk = manifests(_result_storage)
    assert sorted(e["key"] for e in listed) == sorted(on_disk)  # full keys
    assert [e["created"] for e in listed] == sorted((e["created"] for e in listed), reverse=True)
    assert [r[0] for r in rows] == [e["key"][:16] for e in listed]  # the table in the same order
    by_task = {e["task"]: e for e in listed}
    assert by_task["describe"]["key"].startswith("r") and by_task["describe"]["kind"] == "run"
    assert by_task["add"]["size"] == len(pickle.dumps(2)) and by_task["add"]["serializer"] == "pickle"
    assert by_task["add"]["task_run"] == "add-0"


def test_ls_filters_by_task_and_limits(_result_storage):
    run_flow()
    only_add = invoke("cache", "ls", "--task", "add")
    assert [r[2] for r in table_rows(only_add.stdout)] == ["add"]
    assert "1 entry of task 'add'" in only_add.stdout
    limited = invoke("cache", "ls", "--limit", "2")
    assert len(table_rows(limited.stdout)) == 2
    assert "Showing 2 of 3 entries" in limited.stdout
    assert len(json.loads(invoke("cache", "ls", "--limit", "1", "--json").stdout)) == 1
    assert json.loads(invoke("cache", "ls", "--task", "nope", "--json").stdout) == []
    assert_error(invoke("cache", "ls", "--limit", "0"), 2, "--limit")


def test_a_store_without_results_is_empty_everywhere_and_a_missing_one_is_an_error(tmp_path):
    store = tmp_path / "history-only"
    (store / "runs").mkdir(parents=True)  # a store whose flows cached nothing yet
    missing = str(tmp_path / "never-written")
    for args, expected in [
        (["ls"], "No cache entries in"),
        (["ls", "--quarantine"], "Nothing in quarantine"),
        (["ls", "--leftovers"], "Nothing left by interrupted writes"),
        (["clear"], "Nothing to delete"),
        (["clear", "--quarantine"], "Nothing to delete"),
        (["gc"], "Nothing left by interrupted writes"),
    ]:
        result = invoke("cache", *args, "--storage", str(store))
        assert result.exit_code == 0 and expected in result.stdout, (args, result.output)
        assert_error(invoke("cache", *args, "--storage", missing), 1, "no daskflow store at", "does not exist")
    assert json.loads(invoke("cache", "ls", "--storage", str(store), "--json").stdout) == []
    assert not Path(missing).exists()  # reading created nothing


# ------------------------------------------------------------------- inspect
def test_inspect_by_prefix_shows_the_manifest_and_verifies(_result_storage):
    run_flow()
    store = Store()
    key = next(k for k in manifests(_result_storage) if not k.startswith("r"))
    manifest = store.read_manifest(key)
    result = invoke("cache", "inspect", key[:8])
    assert result.exit_code == 0, result.output
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
    assert fields["key"] == key and fields["sha256"] == manifest.sha256 and fields["serializer"] == "pickle"
    assert fields["meta.task"] == manifest.meta["task"] and fields["meta.flow_run_id"] == manifest.meta["flow_run_id"]
    assert fields["status"] == "verified"
    assert fields["manifest url"] == store.describe(store.manifest_path(key))
    assert fields["payload url"] == store.describe(store.payload_path(manifest))
    assert fields["payload bytes"] == str(manifest.size)

    as_json = json.loads(invoke("cache", "inspect", key, "--json").stdout)
    assert as_json["manifest"] == json.loads((_result_storage / store.manifest_path(key)).read_text())
    assert as_json["status"] == "verified" and as_json["kind"] == "cache" and as_json["trusted"] is True


class _OpensAFile:
    """Unpickling this creates a file: proof of whether a payload was deserialised."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_inspect_never_deserialises_the_payload(tmp_path):
    marker = tmp_path / "unpickled"
    store = Store()
    store.commit("feedbeef0001", pickle.dumps(_OpensAFile(marker)))
    result = invoke("cache", "inspect", "feedbeef0001")
    assert result.exit_code == 0 and "verified" in result.stdout
    assert not marker.exists()
    store.read_result("feedbeef0001").close()  # the payload does what the test says it does
    assert marker.exists()


def test_inspect_reports_a_truncated_payload_as_corrupted_and_leaves_it(_result_storage):
    run_flow()
    store = Store()
    key = next(iter(manifests(_result_storage)))
    manifest = truncate_payload(store, key)
    result = invoke("cache", "inspect", key)
    assert result.exit_code == 1
    assert f"CORRUPTED: the payload has {manifest.size - 2} bytes, the manifest says {manifest.size}" in result.stdout
    assert "Traceback" not in result.output
    as_json = invoke("cache", "inspect", key, "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["status"] == "corrupted"
    assert store.read_manifest(key) == manifest  # inspecting is read-only: not quarantined
    assert not (_result_storage / "quarantine").exists()


def test_inspect_unknown_short_and_ambiguous_keys_exit_2():
    store = Store()
    store.write_result("abcdef01aaaa", 1)
    store.write_result("abcdef02bbbb", 2)
    assert_error(invoke("cache", "inspect", "0123456789"), 2, "'0123456789'", "daskflow cache ls")
    assert_error(invoke("cache", "inspect", "abc"), 2, "'abc'", "at least 6", "daskflow cache ls")
    assert_error(invoke("cache", "inspect", "abcdef"), 2, "matches 2 entries", "abcdef01aaaa", "abcdef02bbbb")
    assert invoke("cache", "inspect", "abcdef0").exit_code == 2
    assert invoke("cache", "inspect", "abcdef02").exit_code == 0


def test_a_signed_store_reports_manifests_that_do_not_verify():
    with dask.config.set({"daskflow.storage.signing-key": "the-right-key"}):
        Store().write_result("5157ed00aaaa", {"x": 1}, meta={"task": "signed_task"})
        good = invoke("cache", "inspect", "5157ed00aaaa")
        assert good.exit_code == 0, good.output
        assert "verified with this store's signing key" in good.stdout
    with dask.config.set({"daskflow.storage.signing-key": "another-key"}):
        bad = invoke("cache", "inspect", "5157ed00aaaa")
        assert bad.exit_code == 1
        assert "DOES NOT VERIFY" in bad.stdout and "CORRUPTED: entry 5157ed00aaaa" in bad.stdout
        assert "not trusted" in bad.stdout
        listed = invoke("cache", "ls")
        assert table_rows(listed.stdout)[0][2] == "?"  # its task name is not trusted
        assert "could not be read or verified" in listed.stderr
        # Nor is it selected by task: its meta is not trusted.
        assert "Nothing to delete" in invoke("cache", "clear", "--task", "signed_task", "--yes").stdout


# ---------------------------------------------------------------- quarantine
def test_quarantined_entries_are_counted_listed_and_explained(_result_storage):
    run_flow()
    store = Store()
    key = next(k for k in manifests(_result_storage) if not k.startswith("r"))
    manifest = truncate_payload(store, key)
    with pytest.raises(CorruptedResultError):
        store.read_result(key)  # what a flow's read does: moves the entry to quarantine/
    listed = invoke("cache", "ls")
    assert listed.exit_code == 0 and len(table_rows(listed.stdout)) == 2
    assert "storage returned corrupted data for 1 entry" in listed.stderr
    assert "daskflow cache ls --quarantine" in listed.stderr

    quarantined = invoke("cache", "ls", "--quarantine")
    assert quarantined.exit_code == 0
    assert key[:16] in quarantined.stdout
    assert f"the payload has {manifest.size - 2} bytes, the manifest says {manifest.size}" in quarantined.stdout
    [item] = json.loads(invoke("cache", "ls", "--quarantine", "--json").stdout)
    assert item["key"] == key and item["task"] == manifest.meta["task"]
    assert item["size"] == sum(p.stat().st_size for p in (_result_storage / "quarantine").rglob("*") if p.is_file())
    assert_error(invoke("cache", "inspect", key), 2, "quarantine")


def test_clear_quarantine_deletes_only_the_quarantine(_result_storage):
    run_flow()
    store = Store()
    key = next(iter(manifests(_result_storage)))
    truncate_payload(store, key)
    with pytest.raises(CorruptedResultError):
        store.read_result(key)
    remaining = manifests(_result_storage)
    result = invoke("cache", "clear", "--quarantine", "--yes")
    assert result.exit_code == 0 and "Deleted 1 quarantined entry" in result.stdout
    assert list((_result_storage / "quarantine").iterdir()) == []
    assert manifests(_result_storage) == remaining
    assert invoke("cache", "ls").stderr == ""  # no more warning


# --------------------------------------------------------------------- clear
def test_clear_deletes_every_entry_and_keeps_run_history(_result_storage):
    run_flow()
    history = sorted(p for p in (_result_storage / "runs").rglob("*") if p.is_file())
    assert history and len(manifests(_result_storage)) == 3
    result = invoke("cache", "clear", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted 3 entries" in result.stdout
    assert [p for p in (_result_storage / "results").rglob("*") if p.is_file()] == []
    assert sorted(p for p in (_result_storage / "runs").rglob("*") if p.is_file()) == history
    assert "No cache entries" in invoke("cache", "ls").stdout


def test_a_dry_run_deletes_nothing(_result_storage):
    run_flow()
    before = stored_files(_result_storage)
    result = invoke("cache", "clear", "--dry-run")
    assert result.exit_code == 0
    assert "Would delete 3 entries" in result.stdout
    assert all(key in result.stdout for key in manifests(_result_storage))
    assert stored_files(_result_storage) == before


def test_clear_by_task_and_age(_result_storage):
    run_flow()
    store = Store()
    keys = {store.read_manifest(k).meta["task"]: k for k in manifests(_result_storage)}
    backdate(store, keys["add"], 8 * 86400)
    backdate(store, keys["describe"], 8 * 86400)

    old_describe = invoke("cache", "clear", "--older-than", "7d", "--task", "describe", "--yes")
    assert "Deleted 1 entry" in old_describe.stdout
    assert sorted(manifests(_result_storage)) == sorted([keys["add"], keys["total"]])
    assert "Deleted 1 entry" in invoke("cache", "clear", "--older-than", "7d", "--yes").stdout
    assert list(manifests(_result_storage)) == [keys["total"]]
    assert "Nothing to delete" in invoke("cache", "clear", "--older-than", "1d", "--yes").stdout
    assert "Deleted 1 entry" in invoke("cache", "clear", "--task", "total", "--yes").stdout
    assert manifests(_result_storage) == {}
    assert_error(invoke("cache", "clear", "--older-than", "soon"), 2, "--older-than", "'soon'")


def test_clear_refuses_to_ask_without_a_terminal(_result_storage):
    run_flow()
    before = stored_files(_result_storage)
    assert_error(invoke("cache", "clear"), 2, "pass --yes to delete without asking", "3 entries")
    assert stored_files(_result_storage) == before


def test_payloads_without_a_manifest_go_only_with_a_full_clear_once_an_hour_old(_result_storage):
    run_flow()
    store = Store()
    orphan = "results/0f/0f/0f0f0f0f0f0f.0123456789abcdef"  # its writer died before the manifest
    in_flight = "results/0e/0e/0e0e0e0e0e0e.0123456789abcdef"  # its writer publishes it any moment
    store.put(orphan, b"half a result")
    store.put(in_flight, b"a result")
    two_hours_ago = time.time() - 7200
    os.utime(_result_storage / orphan, (two_hours_ago, two_hours_ago))
    assert "2 payloads without a manifest" in invoke("cache", "ls").stderr
    invoke("cache", "clear", "--task", "add", "--yes")
    assert (_result_storage / orphan).exists()
    result = invoke("cache", "clear", "--yes")
    assert "2 entries and 1 payload without a manifest" in result.stdout
    assert not (_result_storage / orphan).exists()
    assert (_result_storage / in_flight).exists()


def test_a_storage_failure_is_one_line_and_exit_code_1(_result_storage):
    run_flow()
    key = next(iter(manifests(_result_storage)))
    broken = manifests(_result_storage)[key]
    broken.unlink()
    broken.symlink_to(broken.name)  # reading it fails with ELOOP: a real OSError
    for args in (["ls"], ["inspect", key], ["clear", "--yes"]):
        assert_error(invoke("cache", *args), 1, "Too many levels of symbolic links")


def test_expired_entries_are_marked():
    store = Store()
    store.write_result("e0e0e0e00001", 1, meta={"task": "old"}, expires=time.time() - 60)
    store.write_result("e0e0e0e00002", 2, meta={"task": "new"}, expires=time.time() + 3600)
    result = invoke("cache", "ls")
    rows = {r[2]: r for r in table_rows(result.stdout)}
    assert rows["old"][-3] == "(expired)" and "(expired)" not in rows["new"]
    assert "2 entries (1 expired)" in result.stdout
    assert [e["expired"] for e in json.loads(invoke("cache", "ls", "--json").stdout)] == [False, True]


# ------------------------------------------------------------------------ S3
def test_the_cache_commands_on_s3(s3_server, s3_store_url):
    url, options = s3_store_url
    bucket = url.split("/")[2]
    with dask.config.set({"daskflow.storage.options": options}):
        store = Store(url)
        store.write_result("abcdef000001", [1, 2], meta={"task": "a"})
        store.write_result("abcdef000002", "x" * 1000, meta={"task": "b"})
        damaged = store.read_manifest("abcdef000002")
        store.put(store.payload_path(damaged), store.get(store.payload_path(damaged))[:-1])

        listed = json.loads(invoke("cache", "ls", "--storage", url, "--json").stdout)
        assert sorted(e["key"] for e in listed) == ["abcdef000001", "abcdef000002"]
        assert invoke("cache", "inspect", "abcdef000001", "--storage", url).exit_code == 0
        corrupted = invoke("cache", "inspect", "abcdef000002", "--storage", url)
        expected = f"CORRUPTED: the payload has {damaged.size - 1} bytes, the manifest says {damaged.size}"
        assert corrupted.exit_code == 1 and expected in corrupted.stdout

        with pytest.raises(CorruptedResultError):
            store.read_result("abcdef000002")
        [item] = json.loads(invoke("cache", "ls", "--quarantine", "--storage", url, "--json").stdout)
        assert item["key"] == "abcdef000002" and f"{damaged.size - 1} bytes" in item["reason"]

        assert "Deleted 1 entry" in invoke("cache", "clear", "--storage", url, "--yes").stdout
        assert all(k.startswith("prefix/quarantine/") for k in bucket_keys(s3_server, bucket))
        assert "Deleted 1 quarantined entry" in invoke("cache", "clear", "--quarantine", "--storage", url, "--yes").stdout
        assert bucket_keys(s3_server, bucket) == []

        missing = url.replace(bucket, bucket + "-missing")  # a typo is an error, not an empty store
        for args in (["ls"], ["clear", "--yes"], ["inspect", "abcdef000001"]):
            assert_error(invoke("cache", *args, "--storage", missing), 1, "does not exist")


# ------------------------------------------------------- the console script
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_the_console_script_configures_lists_and_asks_before_clearing(tmp_path):
    """The installed ``daskflow`` script: the config it writes is the one it reads,
    and ``cache clear`` asks on a terminal (answered through a pseudo-terminal)."""
    script = Path(sys.executable).parent / "daskflow"
    store_dir = tmp_path / "store"
    store = Store(store_dir)
    store.write_result("c0ffee000001", "one", meta={"task": "first"})
    store.write_result("c0ffee000002", "two", meta={"task": "second"})
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DASK_DASKFLOW__")}
    env["DASK_CONFIG"] = str(tmp_path / "dask-config")  # never the real ~/.config/dask

    def run(*args: str, answer: str | None = None) -> subprocess.CompletedProcess:
        if answer is None:
            return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        main, terminal = os.openpty()
        try:
            os.write(main, answer.encode())  # typed ahead: the terminal holds it until read
            return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=120, stdin=terminal)
        finally:
            os.close(terminal)
            os.close(main)

    configured = run("config", "set", "storage.url", str(store_dir))
    assert configured.returncode == 0, configured.stderr
    assert (tmp_path / "dask-config" / "daskflow.yaml").exists()
    listed = run("cache", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(e["key"] for e in json.loads(listed.stdout)) == ["c0ffee000001", "c0ffee000002"]

    declined = run("cache", "clear", "--task", "first", answer="n\n")
    assert declined.returncode == 1 and "Delete 1 entry" in declined.stdout and "Aborted." in declined.stderr
    assert store.read_manifest("c0ffee000001") is not None
    accepted = run("cache", "clear", "--task", "first", answer="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "Deleted 1 entry" in accepted.stdout
    assert store.read_manifest("c0ffee000001") is None and store.read_manifest("c0ffee000002") is not None
    assert "Traceback" not in declined.stderr + accepted.stderr


# ------------------------------------------- leftovers of interrupted writes
def _plant_temp(root: Path, relative: str, data: bytes, age: float = 0.0) -> Path:
    """A temporary file as ``Store.put`` leaves it when its writer is killed
    (``mkstemp(dir=<final folder>, prefix=".tmp-")``), modified ``age`` seconds ago."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_temporary_files_are_listed_and_only_stale_ones_collected(_result_storage):
    run_flow()
    before = {k: v for k, v in stored_files(_result_storage).items() if ".tmp-" not in k}
    old = _plant_temp(_result_storage, "results/ab/cd/.tmp-k2j4h1x", b"x" * 3000, age=2 * 3600)
    young = _plant_temp(_result_storage, "results/ab/ce/.tmp-p9q8r7s", b"y" * 500)  # a write in progress
    staging = _plant_temp(_result_storage, "code/.tmp-3fz9/flow.py", b"z" * 100, age=3 * 3600)

    listed = invoke("cache", "ls")
    assert listed.exit_code == 0 and len(table_rows(listed.stdout)) == 3  # entries unchanged
    assert "3 temporary files (3.6 KB)" in listed.stderr and "the oldest 3h00m old" in listed.stderr, listed.stderr
    assert "daskflow cache gc" in listed.stderr
    found = json.loads(invoke("cache", "ls", "--leftovers", "--json").stdout)
    assert [(f["kind"], f["path"], f["size"], f["folder"]) for f in found] == [
        ("temp", "code/.tmp-3fz9", 100, True), ("temp", "results/ab/cd/.tmp-k2j4h1x", 3000, False),
        ("temp", "results/ab/ce/.tmp-p9q8r7s", 500, False),
    ]
    assert 7100 < found[1]["age"] < 7300
    assert "temp file/" in invoke("cache", "ls", "--leftovers").stdout

    dry = invoke("cache", "gc", "--dry-run")
    assert dry.exit_code == 0 and "Would remove 2 temporary files (3.1 KB)" in dry.stdout, dry.output
    assert old.exists() and staging.exists()
    collected = invoke("cache", "gc")
    assert collected.exit_code == 0 and "Removed 2 temporary files (3.1 KB)" in collected.stdout, collected.output
    assert not old.exists() and not staging.parent.exists() and young.exists()
    assert {k: v for k, v in stored_files(_result_storage).items() if ".tmp-" not in k} == before  # every entry kept
    assert "Nothing left by interrupted writes over 1h old" in invoke("cache", "gc").stdout
    assert "Removed 1 temporary file (500 B)" in invoke("cache", "gc", "--older-than", "0s").stdout
    assert invoke("cache", "ls").stderr == ""
    assert_error(invoke("cache", "gc", "--older-than", "soon"), 2, "--older-than", "'soon'")


def test_a_full_clear_removes_stale_temporary_files_too(_result_storage):
    run_flow()
    stale = _plant_temp(_result_storage, "results/ab/cd/.tmp-aaaa", b"x" * 10, age=7200)
    fresh = _plant_temp(_result_storage, "results/ab/cd/.tmp-bbbb", b"x" * 10)
    assert "Deleted 1 entry" in invoke("cache", "clear", "--task", "add", "--yes").stdout  # a filtered clear keeps them
    assert stale.exists()
    result = invoke("cache", "clear", "--yes")
    assert "Deleted 2 entries and 1 temporary file" in result.stdout, result.output
    assert not stale.exists() and fresh.exists()


def test_unfinished_multipart_uploads_under_the_prefix_are_reported_and_aborted(s3_server, s3_store_url):
    """Only uploads under the store's prefix: not the bucket's others, nor those of
    a store whose prefix merely starts the same."""
    from .s3 import s3_client

    url, options = s3_store_url
    bucket = url.split("/")[2]
    client = s3_client(s3_server)
    part = b"p" * (5 * 2**20)  # S3's smallest part but the last

    def start_upload(key: str, parts: int = 1) -> str:
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        for number in range(1, parts + 1):
            client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=part)
        return upload

    with dask.config.set({"daskflow.storage.options": options}):
        Store(url).write_result("abcdef000001", [1, 2], meta={"task": "a"})
        mine = start_upload("prefix/results/ab/cd/abcdef000002.0123456789abcdef", parts=2)
        others = [start_upload("prefix2/results/x.0123456789abcdef"), start_upload("elsewhere/big.bin")]
        listed = invoke("cache", "ls", "--storage", url)
        assert listed.exit_code == 0, listed.output
        assert "1 unfinished multipart upload (10.5 MB)" in listed.stderr, listed.stderr
        [found] = json.loads(invoke("cache", "ls", "--leftovers", "--json", "--storage", url).stdout)
        assert found["kind"] == "upload" and found["upload_id"] == mine and found["size"] == 2 * len(part)
        assert found["path"] == "results/ab/cd/abcdef000002.0123456789abcdef" and found["age"] < 600

        kept = invoke("cache", "gc", "--storage", url)  # an hour's grace: it may be a live upload
        assert "Nothing left by interrupted writes over 1h old" in kept.stdout, kept.output
        collected = invoke("cache", "gc", "--older-than", "0s", "--storage", url)
        assert collected.exit_code == 0 and "Removed 1 unfinished multipart upload (10.5 MB)" in collected.stdout, collected.output
    remaining = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert remaining == set(others)
    for upload, key in zip(others, ["prefix2/results/x.0123456789abcdef", "elsewhere/big.bin"]):
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
    assert Store(url, options).read_result("abcdef000001") == [1, 2]
