"""Prefect 3's module layout in daskflow, the import-time errors for absent Prefect
features, and the migration guide's table (checked against tests/prefect_names.json)."""

from __future__ import annotations

import importlib
import json
import pathlib
import re
import subprocess
import sys

import pytest

import daskflow
from daskflow import flow, task
from daskflow._absent import ABSENT_MODULES, ABSENT_NAMES, daskflow_module
from daskflow.exceptions import MissingContextError, NotInDaskflowError
from daskflow.runners import ThreadPoolTaskRunner

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "migrating-from-prefect.md"
NAMES = json.loads((pathlib.Path(__file__).with_name("prefect_names.json")).read_text())["modules"]



def _rows() -> dict[str, tuple[str, str]]:
    """The guide's table: Prefect name -> (status, notes)."""
    rows = {}
    for line in GUIDE.read_text().splitlines():
        m = re.match(r"\| `(prefect[\w.]*)` \| [^|]* \| (same|different|absent) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


def _table() -> dict[str, str]:
    return {name: status for name, (status, _) in _rows().items()}


def _daskflow_module(prefect_module: str) -> str:
    return daskflow_module(prefect_module)


def _params(status: str) -> list:
    table = _table()
    out = []
    for module, names in NAMES.items():
        for name in names:
            full = f"{module}.{name}"
            if table.get(full) in status:
                out.append(pytest.param(module, name, id=full))
    return out


def test_every_prefect_name_has_a_row_in_the_guide():
    table = _table()
    missing = [f"{m}.{n}" for m, names in NAMES.items() for n in names if f"{m}.{n}" not in table]
    assert not missing, f"names without a row in {GUIDE.name}: {missing}"
    assert len(table) == sum(map(len, NAMES.values()))


@pytest.mark.parametrize(("module", "name"), _params(("same", "different")))
def test_names_marked_same_or_different_are_importable(module, name):
    assert hasattr(importlib.import_module(_daskflow_module(module)), name)


def test_the_registry_and_the_guide_agree_on_absent_names_and_reasons():
    rows = _rows()
    registered = {f"{m}.{n}": reason for m, names in ABSENT_NAMES.items() for n, reason in names.items()}
    absent = {full: notes for full, (status, notes) in rows.items() if status == "absent"}
    assert registered == absent


@pytest.mark.parametrize(("module", "name"), _params(("absent",)))
def test_names_marked_absent_raise_the_reason_on_import(module, name):
    target = _daskflow_module(module)
    imported = importlib.import_module(target)
    assert not hasattr(imported, name)  # getattr(module, name, default) and hasattr still work
    with pytest.raises(NotInDaskflowError) as info:
        exec(f"from {target} import {name}", {})
    message = str(info.value)
    assert message.startswith(f"{module}.{name} (Prefect) is not in daskflow: {ABSENT_NAMES[module][name]}")
    assert message.endswith("See docs/migrating-from-prefect.md.")
    with pytest.raises(AttributeError, match="is not in daskflow"):
        getattr(imported, name)


@pytest.mark.parametrize("module", sorted({_daskflow_module(m) for m in NAMES}))
def test_every_prefect_path_module_uses_the_one_helper(module):
    hook = importlib.import_module(module).__getattr__
    if module.startswith("daskflow.runtime."):
        # Attributes read live; unknown ones go through the same helper (daskflow.runtime._env.unknown).
        assert hook.__module__ == module
    else:
        assert hook.__module__ == "daskflow._absent" and hook.__qualname__ == f"{module}.__getattr__"


def test_absent_names_in_packages_and_plain_names_elsewhere():
    # A package (daskflow.logging) first looks for a submodule of the name: the reason still shows.
    with pytest.raises(NotInDaskflowError, match="prefect.runtime.flow_run.ui_url"):
        exec("from daskflow.runtime.flow_run import ui_url", {})
    with pytest.raises(ImportError, match="cannot import name 'Nonsense'") as info:
        exec("from daskflow.states import Nonsense", {})
    assert not isinstance(info.value, NotInDaskflowError)
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'; it has"):
        importlib.import_module("daskflow.runtime.flow_run").nonsense  # noqa: B018


def test_thin_modules_hold_daskflow_objects_not_copies():
    from daskflow import flows, futures, states, task_runners, tasks

    assert futures.PrefectFuture is daskflow.TaskFuture
    assert futures.PrefectFutureList is daskflow.TaskFutureList
    assert task_runners.PrefectFuture is daskflow.TaskFuture
    assert task_runners.ThreadPoolTaskRunner is daskflow.ThreadPoolTaskRunner
    assert task_runners.DaskTaskRunner is daskflow.DaskTaskRunner
    assert states.State is daskflow.State and states.StateType is daskflow.StateType
    assert tasks.task is daskflow.task and tasks.Task is daskflow.Task
    assert tasks.task_input_hash is daskflow.task_input_hash
    assert flows.flow is daskflow.flow and flows.Flow is daskflow.Flow
    for module in (flows, futures, states, task_runners, tasks):
        assert module.__all__ == sorted(module.__all__)
        assert all(hasattr(module, n) for n in module.__all__)


def test_state_constructors_build_daskflow_states():
    from daskflow.states import Completed, Failed, State, StateType

    done = Completed(data=3)
    assert isinstance(done, State) and done.type is StateType.COMPLETED and done.is_completed()
    assert Failed().type is StateType.FAILED


def test_prefect_exception_aliases():
    from daskflow.exceptions import CrashedError, CrashedRun, UpstreamFailedError, UpstreamTaskError

    assert CrashedRun is CrashedError and UpstreamTaskError is UpstreamFailedError


@task
def double(x: int) -> int:
    return 2 * x


@task
def boom() -> None:
    raise ValueError("nope")


def test_resolve_futures_to_results_and_states():
    from daskflow.futures import resolve_futures_to_results, resolve_futures_to_states

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def pipeline():
        futures = {"a": [double.submit(1), double.submit(2)], "b": (double.submit(3),), "c": 7}
        bad = boom.submit()
        states = resolve_futures_to_states([bad])
        return resolve_futures_to_results(futures), [s.type.value for s in states]

    results, states = pipeline()
    assert results == {"a": [2, 4], "b": (6,), "c": 7}
    assert states == ["FAILED"]


def test_get_dask_client_outside_a_dask_worker_says_so():
    @task
    def in_thread() -> str:
        try:
            with daskflow.get_dask_client():
                return "got a client"
        except MissingContextError as exc:
            return str(exc)

    @flow(task_runner=ThreadPoolTaskRunner())
    def pipeline():
        return in_thread()

    assert "inside a task run by DaskTaskRunner" in pipeline()


@pytest.mark.parametrize("module", sorted(ABSENT_MODULES))
def test_absent_module_paths_raise_one_clear_error(module):
    sys.modules.pop(f"daskflow.{module}", None)
    with pytest.raises(NotInDaskflowError) as info:
        importlib.import_module(f"daskflow.{module}")
    message = str(info.value)
    assert f"prefect.{module}" in message and "docs/migrating-from-prefect.md" in message
    assert ABSENT_MODULES[module] in message


@pytest.mark.parametrize(
    "statement",
    [
        "from daskflow.blocks.system import Secret",
        "from daskflow.client.orchestration import get_client",
        "from daskflow.variables import Variable",
        "from daskflow.events import emit_event",
        "from daskflow.concurrency.sync import concurrency",
        "from daskflow.filesystems import LocalFileSystem",
        "from daskflow.testing.utilities import prefect_test_harness",
        "from daskflow.workers.process import ProcessWorker",
        "from daskflow import get_client",
        "from daskflow import get_async_dask_client",
        "from daskflow.states import Paused",
        "from daskflow.flows import load_flow_from_flow_run",
        "from daskflow.flow_runs import pause_flow_run",
    ],
)
def test_prefect_imports_show_the_daskflow_message(statement):
    # A fresh interpreter: the statement as a migrating user's file runs it.
    result = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("daskflow.exceptions.NotInDaskflowError: prefect")  # prefect. or prefect_dask.
    assert "docs/migrating-from-prefect.md" in last


def test_module_getattr_keeps_hasattr_false_and_other_names_plain():
    assert not hasattr(daskflow, "get_client")
    with pytest.raises(AttributeError, match="API server"):
        daskflow.get_client  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        daskflow.nonsense  # noqa: B018
    with pytest.raises(ImportError, match="cannot import name 'nonsense'"):
        exec("from daskflow import nonsense", {})
    assert "get_dask_client" in daskflow.__all__
    assert daskflow.__all__ == sorted(daskflow.__all__)


def test_deployments_package_still_daskflows_own():
    from daskflow.deployments import deployment

    assert deployment.Deployment is daskflow.Deployment


@task
def submit_through_dask(x: int) -> int:
    with daskflow.get_dask_client() as client:
        return client.submit(lambda y: y + 1, x).result()


def test_get_dask_client_inside_a_dask_task_submits_to_the_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:

        @flow(task_runner=daskflow.DaskTaskRunner(address=cluster.scheduler_address))
        def pipeline(x: int) -> int:
            return submit_through_dask(x)

        # One worker thread: worker_client must leave it, or the inner task would never run.
        assert pipeline(41) == 42
