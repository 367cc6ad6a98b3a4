"""A flow's default name follows Prefect 3 (``def failing_flow`` is ``failing-flow``), and
everything that finds a flow, a run or a deployment by name finds it in either spelling,
so histories and registries written under the old underscore default keep working.

An "old" history is simulated with a flow named ``name="old_style"`` explicitly: that is
what daskflow used to call ``def old_style`` by default.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster

from daskflow import History, SequentialTaskRunner, Store, deploy, flow, task
from daskflow._names import name_key, same_name
from daskflow.cli import cli
from daskflow.deployments.registry import Registry
from daskflow.deployments.serve import ManualClock, Serve
from daskflow.exceptions import DeploymentNotFoundError, InvalidDeploymentError
from daskflow.pipeline.entrypoints import load_flow
from daskflow.status import charts
from daskflow.status.state import LiveRuns
from daskflow.storage.records import matches_filters

from .conftest import assert_error


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# ------------------------------------------------------------- the default name
def failing_flow():
    pass


def train():
    pass


def __private_job__():
    pass


class Pipe_Line:
    def __call__(self) -> int:
        return 1


def test_a_flow_is_named_like_prefect_3_names_it_and_a_task_keeps_its_function_name():
    # Prefect 3.8.8 gives the same names (checked against an install of it): failing-flow, train,
    # --private-job--, unknown-lambda; its tasks keep the function name.
    assert flow(failing_flow).name == "failing-flow"
    assert flow(train).name == "train"
    assert flow(__private_job__).name == "--private-job--"
    assert flow(lambda: 1).name == "unknown-lambda"
    # Prefect refuses a callable instance (no __name__); daskflow names it after its class, by the same rule.
    assert flow(Pipe_Line()).name == "Pipe-Line"
    assert task(failing_flow).name == "failing_flow" and task(lambda: 1).name == "<lambda>"


def test_an_explicit_name_is_kept_as_given():
    assert flow(name="old_style")(failing_flow).name == "old_style"
    assert flow(name="Mixed_Case-name")(train).name == "Mixed_Case-name"
    assert flow(failing_flow).with_options(name="again_underscored").name == "again_underscored"


def test_names_are_the_same_when_equal_once_underscores_read_as_hyphens():
    assert name_key("hpo_kfold") == "hpo-kfold"
    assert same_name("hpo_kfold", "hpo-kfold") and same_name("a-b_c", "a_b-c") and same_name("x", "x")
    # Only that change is forgiven: case, other characters and missing names still differ.
    assert not same_name("Train", "train") and not same_name("a.b", "a-b") and not same_name("ab", "a-b")
    assert not same_name(None, "x") and not same_name(None, None)


# ------------------------------------------------- runs recorded under the old name
@task
def double(x: int) -> int:
    return 2 * x


@flow(name="old_style", task_runner=SequentialTaskRunner())
def before(x: int = 1) -> int:
    """How daskflow used to name ``def old_style``."""
    return double(x)


@flow(task_runner=SequentialTaskRunner())
def old_style(x: int = 1) -> int:
    return double(x)


@pytest.fixture
def runs(_result_storage):
    """One run recorded as ``old_style`` (the old default), then one as ``old-style`` (the new)."""
    old = before(3, return_state=True).run
    new = old_style(3, return_state=True).run
    assert (old.flow_name, new.flow_name) == ("old_style", "old-style")
    return old, new


def test_a_result_cached_under_the_old_name_is_reused_under_the_new(runs):
    # The cache key is the task's module, qualified name, version, source and inputs: not the flow's name.
    old, new = runs
    assert old.task_run("double-0").state.name == "Completed"
    assert new.task_run("double-0").state.name == "Cached"
    assert new.state.result() == 6


def test_history_and_runs_ls_find_runs_of_either_spelling(runs, _result_storage):
    old, new = runs
    history = History(Store(str(_result_storage)))
    for spelling in ("old_style", "old-style"):
        assert [r["id"] for r in history.runs(flow=spelling)] == [new.id, old.id]
        listed = json.loads(invoke("runs", "ls", "--json", "--flow", spelling).output)
        assert [r["id"] for r in listed] == [new.id, old.id]
    assert history.runs(flow="old.style") == [] and history.runs(flow="Old-Style") == []
    table = invoke("runs", "ls", "--flow", "old-style").output
    assert "old_style" in table and "old-style" in table  # each run shows the name it was recorded under


def test_a_run_is_found_by_its_name_in_either_spelling(runs, _result_storage):
    old, _ = runs
    history = History(Store(str(_result_storage)))
    assert old.name.startswith("old_style-")
    hyphenated = old.name.replace("_", "-")
    assert history.resolve(hyphenated).run_id == old.id and history.resolve(old.name).run_id == old.id
    shown = invoke("runs", "show", hyphenated)
    assert shown.exit_code == 0 and old.id in shown.output


def test_the_status_page_filters_and_lists_a_flow_once_whatever_its_runs_spelling():
    records = [
        {"id": "b" * 32, "name": "old-style-bbbbbbbb", "flow_name": "old-style", "state": {"type": "COMPLETED", "name": "Completed"}},
        {"id": "a" * 32, "name": "old_style-aaaaaaaa", "flow_name": "old_style", "state": {"type": "COMPLETED", "name": "Completed"}},
        {"id": "c" * 32, "name": "other-cccccccc", "flow_name": "other", "state": {"type": "FAILED", "name": "Failed"}},
    ]
    assert charts.flow_choices(records) == ["old-style", "other"]  # spelled as the newest run spells it
    assert [matches_filters(r, flow="old_style") for r in records] == [True, True, False]
    live = LiveRuns()
    for start, record in zip((3000.0, 2000.0, 1000.0), records):
        live.update({"run": {**record, "start_time": start}})
    assert [r["id"] for r in live.runs(flow="old_style")] == ["b" * 32, "a" * 32]
    assert live.get("old-style-aaaaaaaa").record["id"] == "a" * 32


# ------------------------------------------------------------------- deployments
FLOWS = '''
from daskflow import flow

@flow(name="old_style")
def before(n: int = 1) -> int:
    """How daskflow used to name ``def old_style``."""
    return n

@flow
def old_style(n: int = 1) -> int:
    return n
'''


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "flows.py").write_text(textwrap.dedent(FLOWS))
    return folder


@pytest.fixture(scope="module")
def client():
    """A real scheduler with no workers: runs a serve loop creates wait there, Scheduled."""
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def test_a_deployment_registered_under_the_old_name_is_found_and_updated_by_the_new(tmp_path, project):
    store = Store(tmp_path / "store")
    old_flow = load_flow(f"{project / 'flows.py'}:before")
    new_flow = load_flow(f"{project / 'flows.py'}:old_style")
    # flow.to_deployment() is named after the flow: this is what an old registry holds.
    [old] = deploy(old_flow.to_deployment(interval=3600), storage=store)
    assert (old["name"], old["flow_name"]) == ("old_style", "old_style")
    registry = Registry(store)
    assert registry.get("old-style") == registry.get("old_style") == old
    shown = invoke("deployments", "inspect", "old-style", "--storage", str(store.url), "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["id"] == old["id"]

    # The same code after the rename: registering its default-named deployment updates the old
    # record in place (its id, so its fire records and schedule starts, and its name stay).
    [new] = deploy(new_flow.to_deployment(interval=3600), storage=store)
    assert (new["id"], new["name"], new["flow_name"]) == (old["id"], "old_style", "old-style")
    assert new["created"] == old["created"] and new["schedule_since"] == old["schedule_since"]
    assert [r["name"] for r in registry.all()] == ["old_style"]

    paused = invoke("deployments", "pause", "old-style", "--storage", str(store.url))
    assert paused.exit_code == 0 and registry.get("old_style")["paused"] is True
    removed = invoke("deployments", "rm", "old-style", "--storage", str(store.url))
    assert removed.exit_code == 0, removed.output
    assert registry.all() == []
    with pytest.raises(DeploymentNotFoundError, match="no deployment 'old-style'"):
        registry.get("old-style")


def test_an_exact_deployment_name_wins_and_two_other_spellings_are_refused_by_name(tmp_path, project):
    store = Store(tmp_path / "store")
    new_flow = load_flow(f"{project / 'flows.py'}:old_style")
    registry = Registry(store)
    deploy(new_flow.to_deployment("a_b-c"), storage=store)
    deploy(new_flow.to_deployment("a-b_c"), storage=Store(tmp_path / "other"))
    # Two records that are one name in different spellings can only exist if written apart: copy one over.
    registry.put(Registry(Store(tmp_path / "other")).get("a-b_c"))
    assert registry.get("a_b-c")["name"] == "a_b-c" and registry.get("a-b_c")["name"] == "a-b_c"
    with pytest.raises(DeploymentNotFoundError, match="2 spelled like it .*give one of those names exactly"):
        registry.get("a-b-c")
    result = invoke("deployments", "inspect", "a_b_c", "--storage", str(store.url))
    assert_error(result, 2, "'a_b-c'", "'a-b_c'")
    with pytest.raises(InvalidDeploymentError, match="given more than once: x-y, x_y"):
        deploy(new_flow.to_deployment("x_y"), new_flow.to_deployment("x-y"), storage=store)


def test_serve_by_the_new_name_fires_the_deployment_registered_under_the_old(tmp_path, project, client):
    store = Store(tmp_path / "store")
    old_flow = load_flow(f"{project / 'flows.py'}:before")
    [record] = deploy(old_flow.to_deployment(interval=3600, anchor_date="2027-01-01T00:00:00"), storage=store)
    start = datetime(2027, 1, 1, 0, 30, tzinfo=timezone.utc)
    registry = Registry(store)
    registry.put(dict(record, schedule_since={s["id"]: start.timestamp() for s in record["schedules"]}, created=start.timestamp()))
    clock = ManualClock(start)
    loop = Serve(store, client, names=["old-style"], clock=clock, notifier=False)  # daskflow serve --deployment old-style
    loop.tick()
    clock.advance(3600)
    created = loop.tick()
    assert [r.deployment["name"] for r in created] == ["old_style"]
    assert datetime.fromtimestamp(created[0].scheduled_time, timezone.utc) == datetime(2027, 1, 1, 1, 0, tzinfo=timezone.utc)
