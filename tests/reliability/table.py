"""The scenario table of ``docs/reliability.md`` from a run's report.

Run the suite with the report on, then print the table::

    DASKFLOW_RELIABILITY_REPORT=report.json .venv/bin/python -m pytest tests/reliability
    .venv/bin/python -m tests.reliability.table report.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def markdown(report: dict) -> str:
    """One row per scenario test: number, what, backend, N and seed, status, the figure."""
    versions = ", ".join(f"{name} {version}" for name, version in report["versions"].items())
    lines = [
        f"Versions: {versions}.",
        "",
        "| # | Scenario | Backend | N (seed) | Status | Measured |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(report["rows"], key=lambda r: (r["scenario"], r["backend"], r["title"])):
        seed = "" if row["seed"] is None else f" ({row['seed']})"
        figure = row["figure"].replace("|", "/")
        lines.append(f"| {row['scenario']} | {row['title']} | {row['backend']} | {row['n']}{seed} | {row['status']} | {figure} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
