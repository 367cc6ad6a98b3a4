"""The fault and bad-input suite (RELIABILITY.md section 6): harness and report.

Each scenario test injects its fault for real and calls ``scenario_report`` with
the figure it measured. At the end of the session the rows are printed as one
table (status, figure, N and seed, backend, versions) and written as JSON to
``$DASKFLOW_RELIABILITY_REPORT`` when that is set; ``docs/reliability.md``'s
figures come from such a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import dask
import pytest

# The harness conventions: a dead or hung worker is noticed in seconds, not minutes.
FAULT_CONFIG = {
    "distributed.scheduler.allowed-failures": 2,
    "distributed.scheduler.worker-ttl": "10s",
    "distributed.comm.timeouts.connect": "5s",
}


@dataclass
class ScenarioRow:
    scenario: int
    title: str
    figure: str
    backend: str = "local"
    n: int = 1
    seed: int | None = None
    status: str = "pass"
    test: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_ROWS: list[ScenarioRow] = []


def _versions() -> dict[str, str]:
    found = {}
    for name in ("dask", "distributed", "fsspec", "s3fs", "moto", "botocore"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


@pytest.fixture
def scenario_report(request: pytest.FixtureRequest) -> Iterator[Callable[..., ScenarioRow]]:
    """``report(scenario, title, figure, backend=..., n=..., seed=..., **extra)``:
    one row of the suite's table, kept only if the test then passes."""
    rows: list[ScenarioRow] = []

    def report(scenario: int, title: str, figure: str, **fields: Any) -> ScenarioRow:
        known = {k: fields.pop(k) for k in ("backend", "n", "seed") if k in fields}
        row = ScenarioRow(scenario, title, figure, test=request.node.nodeid, extra=fields, **known)
        rows.append(row)
        return row

    yield report
    failed = getattr(request.node, "_reliability_failed", False)
    for row in rows:
        if failed:
            row.status = "fail"
        _ROWS.append(row)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item._reliability_failed = True  # type: ignore[attr-defined]


@pytest.fixture
def fault_config() -> Iterator[dict[str, Any]]:
    """Dask settings of the harness (allowed failures, worker TTL, connect timeout)."""
    with dask.config.set(FAULT_CONFIG):
        yield FAULT_CONFIG


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    rows = sorted(_ROWS, key=lambda r: (r.scenario, r.test))
    write = terminalreporter.write_line
    terminalreporter.section("reliability scenarios")
    versions = _versions()
    write("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for row in rows:
        seed = "-" if row.seed is None else str(row.seed)
        write(f"{row.scenario:>2} {row.status:<4} {row.backend:<5} N={row.n:<3} seed={seed:<6} {row.title}: {row.figure}")
    target = os.environ.get("DASKFLOW_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(json.dumps({"versions": versions, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
