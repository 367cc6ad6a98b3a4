"""Scenario 21 (RELIABILITY.md section 6) and issue 12 defect 3: bad flow parameters.

Every bad field of a call is reported at once (missing, unknown, ill-typed,
constraint violations, nested paths), before any task is submitted, and no
message echoes the value of a secret field. A call rejected this way creates no
run record: ``runs ls`` stays empty (the run never started, so history has
nothing to show; the caller gets the error).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field, SecretStr

from daskflow import DaskTaskRunner, ParameterValidationError, flow
from daskflow.cli import cli

from ..conftest import assert_error
from ..tasks import touch

CANARY = "sk-canary-21-5d0c9a7e4b13f2"

_FLOW_FILE = """
from datetime import datetime
from pydantic import SecretStr
from daskflow import flow

@flow
def report(x: int, when: datetime, region: str, token: SecretStr) -> int:
    return x
"""


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0"
    ) as cluster:
        yield cluster


def _scheduler_tasks(cluster) -> int:
    """How many tasks the scheduler has ever been told about (transitions counted)."""
    return cluster.scheduler.transition_counter


class Training(BaseModel):
    lr: Annotated[float, Field(gt=0)]
    epochs: int = 3
    token: Annotated[SecretStr, Field(min_length=40)]


@pytest.mark.slow
def test_s21_every_bad_field_is_reported_before_any_task(cluster, tmp_path, _result_storage, scenario_report):
    markers = tmp_path / "markers"
    markers.mkdir()

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def report(x: int, when: datetime, region: str, token: SecretStr) -> str:
        return touch(str(markers), "ran")

    before = _scheduler_tasks(cluster)
    started = time.perf_counter()
    with pytest.raises(ParameterValidationError) as caught:
        report(x="abc", when="yesterday", extra=1, token=CANARY)  # region is missing
    took = time.perf_counter() - started
    fields = {e["field"]: e["error"] for e in caught.value.errors}
    assert set(fields) == {"x", "when", "region", "extra"}, fields
    assert "valid integer" in fields["x"] and "'abc'" in fields["x"]
    assert "datetime" in fields["when"] and "'yesterday'" in fields["when"]
    assert fields["region"] == "missing required parameter"
    assert fields["extra"].startswith("unknown parameter")
    message = str(caught.value)
    for name in ("x", "when", "region", "extra"):
        assert f"  - {name}: " in message, message
    echoes = message.count(CANARY) + json.dumps(caught.value.errors).count(CANARY)
    # Nothing ran, nothing reached the scheduler, and no run was recorded.
    assert list(markers.iterdir()) == []
    assert _scheduler_tasks(cluster) == before
    listed = CliRunner().invoke(cli, ["runs", "ls", "--json", "--storage", str(_result_storage)])
    # No run record: the store holds no run (or, never written, is not there at all).
    assert (listed.exit_code, listed.output.strip()) == (0, "[]") or (
        listed.exit_code == 1 and "no daskflow store" in listed.output
    ), listed.output
    assert not list(_result_storage.glob("runs/**/run.json"))

    # The same call from the terminal: one error line naming every field, exit 2.
    path = tmp_path / "report_flow.py"
    path.write_text(_FLOW_FILE)
    result = CliRunner().invoke(
        cli, ["run", f"{path}:report", "-p", "x=abc", "-p", "when=yesterday", "-p", "extra=1", "-p", f"token={CANARY}"]
    )
    line = assert_error(result, 2, "x: ", "when: ", "region: missing required parameter", "extra: unknown parameter")
    echoes += result.output.count(CANARY)
    assert echoes == 0
    scenario_report(
        21, "bad parameters: every field at once, nothing submitted",
        f"4 of 4 bad fields named in {took * 1000:.0f} ms, 0 tasks submitted, no run recorded, secret echoes {echoes}, "
        f"CLI exit {result.exit_code} with one {len(line)}-char error line",
    )


def test_annotated_constraints_are_enforced_with_nested_paths():
    @flow(validate_parameters=True)
    def fit(n: Annotated[int, Field(gt=0)], config: Training) -> int:
        return n

    with pytest.raises(ParameterValidationError) as caught:
        fit(n=-5, config={"lr": -0.1, "epochs": "many", "token": "x" * 40})
    fields = {e["field"]: e["error"] for e in caught.value.errors}
    assert set(fields) == {"n", "config.lr", "config.epochs"}, fields
    assert "greater than 0" in fields["n"] and "(got -5)" in fields["n"]
    assert "greater than 0" in fields["config.lr"]
    assert "'many'" in fields["config.epochs"]


def test_binding_and_type_errors_are_reported_together():
    @flow
    def fit(n: Annotated[int, Field(gt=0)], config: Training, seed: int = 0) -> int:
        return n

    with pytest.raises(ParameterValidationError) as caught:
        fit(-5, seed="x", typo=1)  # config missing, typo unknown, n and seed ill-typed
    fields = {e["field"]: e["error"] for e in caught.value.errors}
    assert set(fields) == {"n", "seed", "config", "typo"}, fields
    assert fields["config"] == "missing required parameter"


@pytest.mark.parametrize(
    "config, bad_field",
    [
        ({"lr": "fast", "token": CANARY + "-long-enough-for-the-min-length"}, "config.lr"),  # bad value next to a secret
        ({"lr": 0.1, "token": CANARY}, "config.token"),  # the secret itself too short
        ({"lr": 0.1, "token": [CANARY]}, "config.token"),  # the secret of a wrong type
        (f"lr=0.1,token={CANARY}", "config"),  # not a mapping at all: the whole input holds the secret
        ([CANARY, 0.1], "config"),
    ],
    ids=["other-field", "short-secret", "wrong-type-secret", "string-model", "list-model"],
)
def test_validation_errors_never_echo_secret_fields(config, bad_field, capsys):
    @flow
    def fit(config: Training, api_key: Annotated[SecretStr, Field(min_length=40)] = SecretStr("k" * 40)) -> float:
        return config.lr

    with pytest.raises(ParameterValidationError) as caught:
        fit(config=config, api_key=CANARY)
    fields = {e["field"]: e["error"] for e in caught.value.errors}
    assert bad_field in fields and "api_key" in fields, fields
    assert "not shown" in fields["api_key"]
    texts = [str(caught.value), repr(caught.value), json.dumps(caught.value.errors), *capsys.readouterr()]
    state = fit(config=config, api_key=CANARY, return_state=True)
    texts += [state.message, str(state)]
    for text in texts:
        assert CANARY not in text, text


def test_long_values_are_described_not_echoed():
    @flow
    def fit(n: int) -> int:
        return n

    with pytest.raises(ParameterValidationError) as caught:
        fit(n="9" * 50 + "x" * 500)
    (error,) = caught.value.errors
    assert "a str of 550 characters" in error["error"] and "xxxxxxxx" not in error["error"]


def test_the_cli_names_every_bad_field_without_secrets(tmp_path: Path):
    path = tmp_path / "fit_flow.py"
    path.write_text(
        "from typing import Annotated\nfrom pydantic import BaseModel, Field, SecretStr\nfrom daskflow import flow\n\n"
        "class Training(BaseModel):\n    lr: float\n    token: Annotated[SecretStr, Field(min_length=40)]\n\n"
        "@flow\ndef fit(config: Training, n: Annotated[int, Field(gt=0)]) -> float:\n    return config.lr\n"
    )
    result = CliRunner().invoke(cli, ["run", f"{path}:fit", "-p", f'config={{"lr": "fast", "token": "{CANARY}"}}', "-p", "n=-5"])
    line = assert_error(result, 2, "config.lr: ", "config.token: ", "n: ")
    assert CANARY not in result.output and CANARY not in line
