"""Storage hygiene and URL mistakes (issue 12 defects 7 and 11; RELIABILITY.md
scenarios 10, 11, 12 and 24c).

- A mistyped storage URL (``s3:/bucket``, ``s3//bucket``) is refused with the
  correction instead of silently writing to a local folder named ``s3:``.
- History and cache commands pointed at a folder that holds no store say so.
- Writers killed mid-write leave temporary files (local) and open multipart
  uploads (S3): ``cache ls`` reports them and ``cache gc`` removes them.
- Concurrent runs of one key commit once; an external writer's entry is a hit.
"""

from __future__ import annotations

from pathlib import Path

import dask
import pytest
from click.testing import CliRunner

from daskflow import SequentialTaskRunner, Store, flow
from daskflow.cli import cli
from daskflow.exceptions import InvalidOptionError, StorageError, StorageURLError

from ..conftest import assert_error
from ..tasks import counted, runs_of


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# ------------------------------------------------------ defect 11: URL typos
TYPOS = [
    ("s3:/bucket/x", "s3://bucket/x"),
    ("s3//bucket/x", "s3://bucket/x"),
    ("s3:bucket/x", "s3://bucket/x"),
    ("s3:bucket", "s3://bucket"),
    ("s3:///bucket/x", "s3://bucket/x"),
    ("s3a:/bucket/x", "s3a://bucket/x"),
    ("gs:/bucket/x", "gs://bucket/x"),
    ("gs//bucket/x", "gs://bucket/x"),
    ("gcs:bucket/x", "gcs://bucket/x"),
    ("az:/container/x", "az://container/x"),
    ("memory:/scratch", "memory://scratch"),
    ("file:/srv/results", "file:///srv/results"),
    ("file//srv/results", "file:///srv/results"),
    ("s3:\\\\bucket\\x", "s3://bucket/x"),
]


@pytest.mark.parametrize(("typo", "meant"), TYPOS)
def test_a_mistyped_protocol_is_refused_with_the_correction(typo, meant, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageURLError) as raised:
        Store(typo)
    message = str(raised.value)
    assert repr(meant) in message and "did you mean" in message, message
    assert isinstance(raised.value, StorageError) and isinstance(raised.value, InvalidOptionError)
    with dask.config.set({"daskflow.storage.url": typo}), pytest.raises(StorageURLError, match="daskflow.storage.url"):
        Store()
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:" or "s3"


@pytest.mark.parametrize("url", ["s3://", "s3:///", "gs://"])
def test_a_url_without_a_bucket_is_refused(url):
    with pytest.raises(StorageURLError, match="bucket"):
        Store(url)


def test_real_folders_and_urls_are_still_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("results", "s3/bucket", "data/s3-cache", "./s3:/meant-literally", str(tmp_path / "abs"), "file://" + str(tmp_path / "f")):
        store = Store(folder)
        assert store.local and Path(store.root).is_relative_to(tmp_path), folder
    assert Store("memory://ok").protocol == "memory"


def test_a_flow_with_a_mistyped_storage_runs_no_task(tmp_path, monkeypatch):
    """The refusal comes before any task is submitted, from the flow's option,
    from config, and from ``daskflow run --storage``."""
    monkeypatch.chdir(tmp_path)
    marks = tmp_path / "marks"
    marks.mkdir()

    @flow(task_runner=SequentialTaskRunner())
    def one(marker_dir: str) -> int:
        return counted(marker_dir, "t", 1)

    with pytest.raises(StorageURLError, match="did you mean 's3://bucket/x'"):
        one.with_options(result_storage="s3:/bucket/x")(str(marks))
    with dask.config.set({"daskflow.storage.url": "s3//bucket/x"}):
        with pytest.raises(StorageURLError, match="did you mean 's3://bucket/x'"):
            one(str(marks))
    assert runs_of(str(marks), "t") == 0
    flow_file = tmp_path / "one.py"
    flow_file.write_text(
        "from daskflow import SequentialTaskRunner, flow\n"
        "@flow(task_runner=SequentialTaskRunner())\n"
        "def one() -> int:\n"
        "    return 1\n"
    )
    result = invoke("run", f"{flow_file}:one", "--storage", "s3:/bucket/x")
    assert result.exit_code == 1 and "did you mean 's3://bucket/x'" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marks", "one.py"]


# ------------------------------------- defect 11: a folder that holds no store
HISTORY_COMMANDS = [
    ["runs", "ls"],
    ["runs", "show", "abcdef12"],
    ["runs", "graph", "abcdef12"],
    ["logs", "abcdef12"],
    ["artifacts", "ls", "abcdef12"],
    ["cache", "ls"],
    ["cache", "ls", "--quarantine"],
    ["cache", "inspect", "abcdef12"],
    ["cache", "clear", "--yes"],
    ["cache", "gc"],
    ["ui", "--port", "0"],
]


@pytest.mark.parametrize("command", HISTORY_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_history_commands_on_a_folder_without_a_store_exit_1(command, tmp_path):
    missing = tmp_path / "typo"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a store")
    line = assert_error(invoke(*command, "--storage", str(missing)), 1, str(missing), "does not exist")
    assert "--storage" in line and "daskflow.storage.url" in line
    assert not missing.exists()  # reading created nothing
    assert_error(invoke(*command, "--storage", str(empty)), 1, str(empty), "holds no daskflow store")


def test_a_fresh_folder_is_created_by_a_run_and_then_read(tmp_path):
    store = tmp_path / "fresh" / "store"
    flow_file = tmp_path / "one.py"
    flow_file.write_text(
        "from daskflow import SequentialTaskRunner, flow, task\n"
        "@task\n"
        "def add(x: int) -> int:\n"
        "    return x + 1\n"
        "@flow(task_runner=SequentialTaskRunner())\n"
        "def one() -> int:\n"
        "    return add(1)\n"
    )
    ran = invoke("run", f"{flow_file}:one", "--storage", str(store), "--json")
    assert ran.exit_code == 0, ran.output
    assert (store / "runs").is_dir() and (store / "results").is_dir()
    listed = invoke("runs", "ls", "--storage", str(store))
    assert listed.exit_code == 0 and "one" in listed.stdout, listed.output
    assert invoke("cache", "ls", "--storage", str(store)).exit_code == 0
