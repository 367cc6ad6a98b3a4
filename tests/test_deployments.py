"""Registering deployments: records, code snapshots, versions, and every refusal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from daskflow import Deployment, InvalidDeploymentError, InvalidScheduleError, Store, deploy
from daskflow.cli import cli
from daskflow.deployments.deployment import load_project
from daskflow.deployments.registry import Registry
from daskflow.deployments.snapshot import CodeRef, load_snapshot_flow

from .conftest import assert_error

FLOWS = '''
from typing import Annotated
from pydantic import Field
from daskflow import flow, task

@task
def square(x: int) -> int:
    return x * x

@flow
def nightly(n: Annotated[int, Field(gt=0)] = 3, label: str = "x") -> int:
    """Squares and sums."""
    return sum(square.map(range(n)).result())

@flow
def other() -> None:
    pass
'''


def _project(tmp_path: Path, name: str = "flows.py", text: str = FLOWS) -> Path:
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return folder


def _import(folder: Path, module: str = "flows"):
    from daskflow.pipeline.entrypoints import load_flow

    return load_flow(f"{folder / module}.py:nightly")


def _record(store: Store, name: str) -> dict:
    return Registry(store).get(name)


def test_a_deployment_is_stored_with_its_code_snapshot_and_schedules(tmp_path):
    folder = _project(tmp_path)
    nightly = _import(folder)
    store = Store(tmp_path / "store")
    deployment = nightly.to_deployment(
        "nightly-dev", cron="0 3 * * *", interval=300, timezone="Europe/Berlin", parameters={"n": 2},
        tags=["dev"], work_queue_name="gpu", concurrency_limit=1, collision_strategy="CANCEL_NEW", catchup="all",
    )
    [record] = deploy(deployment, storage=store)
    stored = _record(store, "nightly-dev")
    assert stored == record
    assert record["flow_name"] == "nightly" and record["entrypoint"].endswith("flows.py:nightly")
    assert record["parameters"] == {"n": 2} and record["tags"] == ["dev"]
    assert record["description"] == "Squares and sums."
    assert record["work_queue_name"] == "gpu"
    assert (record["concurrency_limit"], record["collision_strategy"], record["catchup"]) == (1, "cancel-new", "all")
    kinds = sorted(k for s in record["schedules"] for k in ("cron", "interval", "rrule") if k in s)
    assert kinds == ["cron", "interval"]
    assert all(s["timezone"] == "Europe/Berlin" for s in record["schedules"])
    # The snapshot is in the store under its hash and holds the flow file.
    code = CodeRef.from_dict(record["code"])
    assert code.kind == "file" and code.root == "flows.py" and code.module == "flows"
    assert store.exists(f"code/{code.hash}.zip")
    # Not in a git repository: the version is the code's hash.
    assert record["version"] == f"code-{code.hash[:12]}"


def test_registering_again_updates_keeps_the_creation_time_and_each_schedules_start(tmp_path):
    folder = _project(tmp_path)
    nightly = _import(folder)
    store = Store(tmp_path / "store")
    [first] = deploy(nightly.to_deployment("d", interval=60), storage=store)
    [second] = deploy(nightly.to_deployment("d", interval=60, cron="*/5 * * * *"), storage=store)
    assert second["created"] == first["created"] and second["updated"] >= first["updated"]
    old = first["schedules"][0]["id"]
    assert second["schedule_since"][old] == first["schedule_since"][old]  # the kept schedule keeps its start
    assert len(second["schedule_since"]) == 2
    assert [r["name"] for r in Registry(store).all()] == ["d"]
    # The same code is stored once.
    assert len(store.list("code")) == 1


def test_the_version_is_the_git_commit_of_the_flow_files_repository(tmp_path):
    folder = _project(tmp_path)
    git = ["git", "-C", str(folder), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "flows.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "flows"], check=True)
    commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    nightly = _import(folder)
    store = Store(tmp_path / "store")
    [record] = deploy(nightly.to_deployment("d"), storage=store)
    assert record["version"] == commit
    (folder / "flows.py").write_text((folder / "flows.py").read_text() + "\n# changed\n")
    [record] = deploy(nightly.to_deployment("d"), storage=store)
    assert record["version"] == f"{commit}-dirty"
    [record] = deploy(nightly.to_deployment("d", version="2.0"), storage=store)
    assert record["version"] == "2.0"


def test_a_package_entrypoint_snapshots_the_whole_package_and_loads_from_any_folder(tmp_path):
    package = tmp_path / "src" / "pipelines"
    (package / "jobs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("def offset() -> int:\n    return 100\n")
    (package / "jobs" / "__init__.py").write_text("")
    (package / "jobs" / "train.py").write_text(textwrap.dedent('''
        from daskflow import flow
        from pipelines.helpers import offset

        @flow
        def train(x: int = 1) -> int:
            return x + offset()
    '''))
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        store = Store(tmp_path / "store")
        [record] = deploy(Deployment(name="train", entrypoint="pipelines.jobs.train:train"), storage=store)
    finally:
        sys.path.remove(str(tmp_path / "src"))
        for name in [n for n in sys.modules if n == "pipelines" or n.startswith("pipelines.")]:
            del sys.modules[name]
    code = CodeRef.from_dict(record["code"])
    assert (code.kind, code.root, code.module, code.attr) == ("package", "pipelines", "pipelines.jobs.train", "train")
    import io
    import zipfile

    names = sorted(zipfile.ZipFile(io.BytesIO(store.get(f"code/{code.hash}.zip"))).namelist())
    assert names == ["pipelines/__init__.py", "pipelines/helpers.py", "pipelines/jobs/__init__.py", "pipelines/jobs/train.py"]
    # A fresh interpreter elsewhere loads the flow from the store alone.
    script = textwrap.dedent(f'''
        from daskflow import Store
        from daskflow.deployments.registry import Registry
        from daskflow.deployments.snapshot import CodeRef, load_snapshot_flow
        store = Store({str(tmp_path / "store")!r})
        flow = load_snapshot_flow(store, CodeRef.from_dict(Registry(store).get("train")["code"]))
        print(flow.fn(5))
    ''')
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-c", script], cwd=empty, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                              "DASK_DASKFLOW__DEPLOYMENTS__CODE_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "105"


def test_the_same_code_gives_the_same_snapshot_hash_on_every_build(tmp_path):
    folder = _project(tmp_path)
    from daskflow.deployments.snapshot import build_snapshot, locate_entrypoint

    located = locate_entrypoint(f"{folder / 'flows.py'}:nightly")
    first, data = build_snapshot(located)
    (folder / "flows.py").touch()  # a new mtime, the same bytes
    second, _ = build_snapshot(located)
    assert first.hash == second.hash
    (folder / "flows.py").write_text((folder / "flows.py").read_text() + "\n")
    third, _ = build_snapshot(located)
    assert third.hash != first.hash


def test_a_tampered_snapshot_is_never_imported(tmp_path):
    folder = _project(tmp_path)
    store = Store(tmp_path / "store")
    [record] = deploy(_import(folder).to_deployment("d"), storage=store)
    code = CodeRef.from_dict(record["code"])
    store.put(f"code/{code.hash}.zip", b"PK not the registered code")
    import dask

    with dask.config.set({"daskflow.deployments.code-cache": str(tmp_path / "cache")}):
        with pytest.raises(Exception, match="does not match its hash"):
            load_snapshot_flow(store, code)


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"parameters": {"n": -5}}, ["parameters do not fit", "n", "greater than 0"]),
        ({"parameters": {"n": "many"}}, ["n", "valid integer"]),
        ({"parameters": {"bogus": 1}}, ["bogus", "unknown parameter"]),
        ({"parameters": {"n": {1, 2}}}, ["'n'", "JSON"]),
        ({"work_queue_name": "gpu queue"}, ["work_queue_name", "'gpu queue'"]),
        ({"concurrency_limit": 0}, ["concurrency_limit", "0"]),
        ({"concurrency_limit": 1, "collision_strategy": "drop"}, ["collision_strategy", "'drop'"]),
        ({"catchup": "some"}, ["catchup", "'some'"]),
        ({"catchup_limit": 0}, ["catchup_limit"]),
        ({"paused": "yes"}, ["paused"]),
    ],
)
def test_bad_deployment_options_are_refused_naming_the_field_and_nothing_is_registered(tmp_path, options, fragments):
    nightly = _import(_project(tmp_path))
    store = Store(tmp_path / "store")
    with pytest.raises(InvalidDeploymentError) as info:
        deploy(nightly.to_deployment("bad", **options), storage=store)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert Registry(store).all() == []


def test_a_secret_parameter_is_refused_and_never_written(tmp_path):
    from pydantic import SecretStr

    nightly = _import(_project(tmp_path))
    store = Store(tmp_path / "store")
    with pytest.raises(InvalidDeploymentError, match="holds a secret") as info:
        deploy(nightly.to_deployment("bad", parameters={"label": SecretStr("sk-canary-9f3")}), storage=store)
    assert "sk-canary-9f3" not in str(info.value)
    assert not (tmp_path / "store").exists() or not store.list("deployments")


@pytest.mark.parametrize(
    ("schedule", "field", "bad"),
    [
        ({"cron": "61 * * * *"}, "cron", "61 * * * *"),
        ({"cron": "* * *"}, "cron", "* * *"),
        ({"cron": "H * * * *"}, "cron", "H * * * *"),
        ({"cron": "@reboot"}, "cron", "@reboot"),
        ({"cron": "0 0 30 2 *"}, "cron", "never"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone", "Mars/Olympus"),
        ({"interval": 0}, "interval", "0"),
        ({"interval": -5}, "interval", "-5"),
        ({"rrule": "FREQ=SOMETIMES"}, "rrule", "FREQ=SOMETIMES"),
    ],
)
def test_every_bad_schedule_is_refused_at_registration(tmp_path, schedule, field, bad):
    nightly = _import(_project(tmp_path))
    store = Store(tmp_path / "store")
    with pytest.raises(InvalidScheduleError) as info:
        deploy(nightly.to_deployment("bad", **schedule), storage=store)
    assert field in str(info.value) and bad in str(info.value), str(info.value)
    # And the same through daskflow.yaml and the CLI: one line, exit code 2.
    folder = tmp_path / "project"
    (folder / "daskflow.yaml").write_text(json.dumps({"deployments": [{"name": "bad", "entrypoint": "flows.py:nightly", "schedules": [schedule]}]}))
    result = CliRunner().invoke(cli, ["deploy", "--all", "--file", str(folder / "daskflow.yaml"), "--storage", str(tmp_path / "store")])
    assert_error(result, 2, field, "deployment 'bad'")
    assert Registry(store).all() == []


def test_a_flow_not_at_the_top_level_of_a_file_cannot_be_deployed(tmp_path):
    from daskflow import flow

    @flow
    def local_flow() -> None:
        pass

    with pytest.raises(InvalidDeploymentError, match="top level"):
        deploy(local_flow.to_deployment("local"), storage=Store(tmp_path / "store"))


def test_deployment_names_are_checked(tmp_path):
    nightly = _import(_project(tmp_path))
    for name in ("", "has space", "../up", "x" * 200):
        with pytest.raises(InvalidDeploymentError, match="deployment name"):
            nightly.to_deployment(name)
    with pytest.raises(InvalidDeploymentError, match="more than once: twice"):
        deploy(nightly.to_deployment("twice"), nightly.to_deployment("twice"), storage=Store(tmp_path / "store"))


def test_a_module_named_like_the_standard_library_is_refused(tmp_path):
    folder = _project(tmp_path, "json.py", FLOWS)
    with pytest.raises(InvalidDeploymentError, match="standard-library"):
        deploy(Deployment(name="d", entrypoint=f"{folder / 'json.py'}:nightly"), storage=Store(tmp_path / "store"))


YAML = """
storage: {store}
deployments:
  - name: retrain-dev
    entrypoint: flows.py:nightly
    parameters: {{n: 2}}
    tags: [dev]
    schedules:
      - cron: "0 3 1 * *"
        timezone: Europe/Berlin
  - name: retrain-prod
    entrypoint: flows.py:nightly
    parameters: {{n: 50}}
    work_queue_name: gpu
    concurrency_limit: {{limit: 1, collision_strategy: CANCEL_NEW}}
    catchup: skip
    schedules:
      - interval: 1h
        anchor_date: "2026-01-01T00:30:00"
        timezone: America/New_York
      - rrule: "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0"
"""


def test_daskflow_yaml_registers_all_or_named_deployments_relative_to_the_file(tmp_path, monkeypatch):
    folder = _project(tmp_path)
    store_path = tmp_path / "store"
    (folder / "daskflow.yaml").write_text(YAML.format(store=store_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runner = CliRunner()
    result = runner.invoke(cli, ["deploy", "retrain-dev", "--file", str(folder / "daskflow.yaml")])
    assert result.exit_code == 0, result.output
    assert "registered 'retrain-dev'" in result.output and "next run" in result.output
    store = Store(store_path)
    assert [r["name"] for r in Registry(store).all()] == ["retrain-dev"]
    result = runner.invoke(cli, ["deploy", "--all", "--file", str(folder / "daskflow.yaml")])
    assert result.exit_code == 0, result.output
    prod = Registry(store).get("retrain-prod")
    assert prod["entrypoint"] == "flows.py:nightly"  # as written, relative to the file
    assert prod["concurrency_limit"] == 1 and prod["collision_strategy"] == "cancel-new" and prod["catchup"] == "skip"
    assert len(prod["schedules"]) == 2
    listing = runner.invoke(cli, ["deployments", "ls", "--storage", str(store_path)])
    assert listing.exit_code == 0, listing.output
    assert "retrain-dev" in listing.output and "on day 1 of every month at 03:00 (Europe/Berlin)" in listing.output
    assert "every Monday at 09:00" in listing.output
    inspect = runner.invoke(cli, ["deployments", "inspect", "retrain-prod", "--storage", str(store_path), "--json"])
    assert json.loads(inspect.output)["name"] == "retrain-prod"
    assert len(json.loads(inspect.output)["next_runs"]) == 5


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("deployments: []", ["'deployments' must be a list"]),
        ("deployment: []", ["unknown top-level keys", "deployment"]),
        ("deployments:\n  - name: x\n    entrypoint: flows.py:nightly\n    schedule: {cron: '0 3 * * *'}", ["'schedules:'"]),
        ("deployments:\n  - name: x\n    entrypoint: flows.py:nightly\n    work_pool: {name: gpu}", ["no work pools", "work_queue_name"]),
        ("deployments:\n  - entrypoint: flows.py:nightly", ["'name' is missing"]),
        ("deployments:\n  - name: x\n    entrypoint: flows.py:missing", ["no flow named 'missing'", "nightly"]),
        ("deployments:\n  - name: x\n    entrypoint: nofile.py:nightly", ["does not exist"]),
        ("deployments: [\n", ["not valid YAML"]),
    ],
)
def test_a_bad_daskflow_yaml_gets_one_line_naming_the_problem(tmp_path, text, fragments):
    folder = _project(tmp_path)
    (folder / "daskflow.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["deploy", "--all", "--file", str(folder / "daskflow.yaml"), "--storage", str(tmp_path / "store")])
    assert_error(result, 2, *fragments)


def test_deploy_needs_names_or_all_and_unknown_names_are_listed(tmp_path):
    folder = _project(tmp_path)
    (folder / "daskflow.yaml").write_text(YAML.format(store=tmp_path / "store"))
    runner = CliRunner()
    assert_error(runner.invoke(cli, ["deploy", "--file", str(folder / "daskflow.yaml")]), 2, "--all")
    assert_error(runner.invoke(cli, ["deploy", "nope", "--file", str(folder / "daskflow.yaml")]), 2, "'nope'", "retrain-dev")
    assert_error(runner.invoke(cli, ["deploy", "--all", "--file", str(tmp_path / "missing.yaml")]), 2, "does not exist")


def test_pause_resume_rm_and_unknown_deployments(tmp_path):
    nightly = _import(_project(tmp_path))
    store_path = tmp_path / "store"
    deploy(nightly.to_deployment("d", interval=60), storage=str(store_path))
    runner = CliRunner()
    store = Store(store_path)
    before = Registry(store).version()
    assert runner.invoke(cli, ["deployments", "pause", "d", "--storage", str(store_path)]).exit_code == 0
    assert Registry(store).get("d")["paused"] is True
    assert Registry(store).version() != before  # serve loops see the change
    ls = runner.invoke(cli, ["deployments", "ls", "--storage", str(store_path), "--json"])
    assert json.loads(ls.output)[0]["next_runs"] == []  # paused: nothing upcoming
    assert runner.invoke(cli, ["deployments", "resume", "d", "--storage", str(store_path)]).exit_code == 0
    record = Registry(store).get("d")
    assert record["paused"] is False and record["resumed"] >= record["created"]
    assert runner.invoke(cli, ["deployments", "rm", "d", "--storage", str(store_path)]).exit_code == 0
    assert Registry(store).all() == []
    for command in (["inspect", "d"], ["pause", "d"], ["rm", "d"], ["run", "d"]):
        assert_error(runner.invoke(cli, ["deployments", *command, "--storage", str(store_path)]), 2, "no deployment 'd'", "deployments ls")


def test_a_signed_store_refuses_a_deployment_record_it_did_not_sign(tmp_path):
    import dask

    nightly = _import(_project(tmp_path))
    with dask.config.set({"daskflow.storage.signing-key": "k" * 32}):
        store = Store(tmp_path / "store")
        deploy(nightly.to_deployment("d"), storage=store)
        Registry(store).get("d")  # verifies
        path = tmp_path / "store" / "deployments"
        [file] = [p for p in path.iterdir() if p.name.endswith(".json")]
        record = json.loads(file.read_text())
        record["parameters"] = {"n": 1000}
        file.write_text(json.dumps(record))
        with pytest.raises(Exception, match="not signed with this store's signing key"):
            Registry(store).get("d")


def test_load_project_reports_field_errors_with_the_files_name(tmp_path):
    folder = _project(tmp_path)
    (folder / "daskflow.yaml").write_text("deployments:\n  - name: x\n    entrypoint: flows.py:nightly\n    schedules: [{cron: '61 * * * *'}]\n")
    with pytest.raises(InvalidScheduleError) as info:
        load_project(folder / "daskflow.yaml")
    assert "daskflow.yaml" in str(info.value) and "schedules[0]" in str(info.value)


def test_deployment_hooks_are_stored_by_name_and_must_be_importable_where_runs_go(tmp_path):
    folder = _project(tmp_path, text=FLOWS + "\n\ndef alert(flow, flow_run, state):\n    pass\n")
    nightly = _import(folder)
    alert = sys.modules[nightly.fn.__module__].alert
    store = Store(tmp_path / "store")
    [record] = deploy(nightly.to_deployment("hooked", on_failure=alert, on_crashed=[alert, "json:dumps"]), storage=store)
    assert record["hooks"] == {"on_failure": ["flows:alert"], "on_crashed": ["flows:alert", "json:dumps"]}
    for bad, fragment in ((lambda f, r, s: None, "not a top-level function"), ("nowhere_module:alert", "neither in the flow's code"), (3, "takes functions")):
        with pytest.raises(InvalidDeploymentError, match=fragment):
            deploy(nightly.to_deployment("hooked", on_failure=bad), storage=store)
