"""``Artifact.get(key)`` (Prefect's ``prefect.artifacts.Artifact.get``): the latest artifact
of a key from the run history, in Prefect's import style (``prefect`` -> ``daskflow``)."""

from __future__ import annotations

import asyncio
import json

import pytest

from daskflow import flow, task
from daskflow.artifacts import Artifact, create_link_artifact, create_markdown_artifact, create_table_artifact
from daskflow.exceptions import InvalidOptionError
from daskflow.storage import Store
from daskflow.task_runners import ThreadPoolTaskRunner

THREADS = ThreadPoolTaskRunner(max_workers=2)


@task
def report(score: float) -> str:
    return create_table_artifact([{"score": score}], key="scores", description="from a task")


@flow(task_runner=THREADS)
def nightly(score: float) -> tuple[str, str]:
    md = create_markdown_artifact(f"# score {score}", key="summary", description="made in the body")
    return md, report(score)


def test_get_returns_the_latest_artifact_of_a_key_across_runs():
    assert Artifact.get("summary") is None  # nothing yet, as Prefect says (None)
    first = nightly(0.5, return_state=True)
    second = nightly(0.75, return_state=True)
    md_id, table_id = second.result()

    latest = Artifact.get("summary")
    assert isinstance(latest, Artifact)
    assert (latest.id, latest.key, latest.type, latest.data, latest.description) == (md_id, "summary", "markdown", "# score 0.75", "made in the body")
    assert latest.flow_run_id == second.run.id and latest.task_run_id is None
    table = Artifact.get("scores")
    assert (table.id, table.type, table.data, table.flow_run_id) == (table_id, "table", {"columns": ["score"], "rows": [[0.75]]}, second.run.id)
    assert table.task_run_name == "report-0" and table.task_run_id == second.run.task_run("report-0").id
    assert json.loads(table.format()) == table.data
    assert Artifact.get("no-such-key") is None
    assert asyncio.run(Artifact.aget("summary")) == latest
    assert first.run.id != second.run.id


def test_get_inside_the_run_that_made_it_and_from_another_store(tmp_path):
    @flow(task_runner=THREADS)
    def make_then_read() -> Artifact | None:
        made = create_link_artifact("https://example.com/model", link_text="model", key="model-link")
        found = Artifact.get("model-link")  # not flushed to the history yet: the live run has it
        assert found is not None and found.id == made
        return found

    found = make_then_read()
    assert (found.type, found.data) == ("link", {"url": "https://example.com/model", "text": "model"})
    other = tmp_path / "other-store"
    Store(str(other))  # an empty store: no history
    assert Artifact.get("model-link", storage=str(other)) is None
    assert Artifact.get("model-link", storage=Store()).id == found.id  # the configured store, given explicitly
    assert Artifact.get().id == found.id  # no key: the latest artifact of any key, as in Prefect


def test_get_rejects_a_key_that_is_not_a_string():
    with pytest.raises(InvalidOptionError, match="artifact key string"):
        Artifact.get(3)
    with pytest.raises(InvalidOptionError, match="daskflow.Store or a URL"):
        Artifact.get("k", storage=42)
