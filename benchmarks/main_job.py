"""The README's main command as a user runs it: ``python examples/hpo_kfold.py``, in a new
process each time, with its embedded LocalCluster and a local store.

Times (wall clock of the whole process, median of ``--repeats``):

* **imports only**: ``python -c "import daskflow, numpy"``, the floor of any run (the
  example imports scikit-learn only in the tasks that use it, which a cached rerun never runs);
* **first run**: the example into an empty store (184 task runs computed);
* **cached rerun**: the example again on that store, a new process (all 184 reused).

It also says whether the cached rerun started a cluster (it must not: the embedded
LocalCluster starts when a task run first has to execute). Target (issue 14): the
cached rerun in about a second over the imports.

Run from the repository root (needs scikit-learn: ``pip install -e '.[examples]'``)::

    python benchmarks/main_job.py              # 3 repeats
    python benchmarks/main_job.py --repeats 1  # quick check
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hpo_kfold.py"
STARTING = "starting the local Dask cluster"


def timed(command: list[str], cwd: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    imports, firsts, reruns, started_on_rerun = [], [], [], 0
    for _ in range(args.repeats):
        imports.append(timed([sys.executable, "-c", "import daskflow, numpy"], str(REPO))[0])
        with tempfile.TemporaryDirectory(prefix="daskflow-main-job-") as folder:
            elapsed, output = timed([sys.executable, str(EXAMPLE)], folder)
            assert "184 task runs computed" in output, output[-2000:]
            firsts.append(elapsed)
            elapsed, output = timed([sys.executable, str(EXAMPLE)], folder)
            assert "all 184 task runs were reused" in output, output[-2000:]
            reruns.append(elapsed)
            started_on_rerun += STARTING in output

    def show(label: str, values: list[float]) -> None:
        print(f"  {label:<16} {statistics.median(values):7.2f} s   ({min(values):.2f}..{max(values):.2f})")

    print(f"main job, {args.repeats} repeat(s), Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    show("imports only", imports)
    show("first run", firsts)
    show("cached rerun", reruns)
    over = statistics.median(reruns) - statistics.median(imports)
    print(f"  cached rerun over the imports: {over:.2f} s; cached / first: {statistics.median(reruns) / statistics.median(firsts):.3f}")
    print(f"  cached reruns that started a cluster: {started_on_rerun} of {args.repeats} (target 0)")


if __name__ == "__main__":
    main()
