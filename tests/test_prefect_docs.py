"""Prefect 3 documentation examples, written in Prefect's import style, run on daskflow.

Each ``ex_*`` function in tests/prefect_docs/*.py does what one example of
Prefect's docs does and asserts what the docs say it shows. The only change
made before running it is :func:`rewrite_imports` (``prefect``/``prefect_dask``
-> ``daskflow`` on import lines). An example that pins a task runner runs as
written; the others run three times: on ThreadPoolTaskRunner, on this module's
LocalCluster (picked for a flow without ``task_runner=`` with config
``daskflow.task-runner``: ``threads``, or ``dask`` with Dask's
``scheduler-address`` naming the cluster), and on ThreadPoolTaskRunner with
``daskflow.cache.default-policy: prefect`` (Prefect 3's caching rule). A few
(``EMBEDDED``) also run with no setting, each flow run on its own LocalCluster.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.abc
import importlib.machinery
import re
import sys
import types
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent / "prefect_docs"

_IMPORT_LINE = re.compile(r"^(?P<indent>\s*)(?P<kw>from|import)\s+(?P<rest>.*)$")
_PREFECT_NAME = re.compile(r"\bprefect(?:_dask)?(?=\b|\.)")

#: example id -> why it fails on this branch (the missing daskflow feature).
XFAIL: dict[str, str] = {
    # Known differences, listed in docs/migrating-from-prefect.md ("What still differs").
    "states_return_state": "daskflow persists and caches by default: the 2nd identical call in a run is Cached (Prefect caches only persisted results)",
}

#: Examples also run with no setting at all: each flow run starts (and closes) its own
#: LocalCluster, as a user's script does. A few only: each cluster costs seconds.
EMBEDDED = {"mapping_map", "runtime_task_run_fields"}

#: Known differences that config ``daskflow.cache.default-policy: prefect`` removes.
PREFECT_MODE_FIXES = {"states_return_state"}

#: Prefect features daskflow leaves out on purpose: (id, an import a user writes).
ABSENT = [
    ("absent_blocks", "from prefect.blocks.core import Block"),
    ("absent_variables", "from prefect.variables import Variable"),
    ("absent_client", "from prefect.client.orchestration import get_client"),
    ("absent_events", "from prefect.events import emit_event"),
    ("absent_automations", "from prefect.automations import Automation"),
    ("absent_work_pools", "from prefect.workers.process import ProcessWorker"),
]


def rewrite_imports(source: str) -> str:
    """Point a Prefect script's import lines at daskflow; leave every other line alone.

    ``import prefect`` becomes ``import daskflow as prefect`` so ``prefect.x``
    names keep working; ``from prefect.a import b`` and ``from prefect_dask
    import c`` become ``from daskflow.a import b`` and ``from daskflow import c``.
    """
    out = []
    for line in source.splitlines(keepends=True):
        match = _IMPORT_LINE.match(line)
        if match is None:
            out.append(line)
            continue
        indent, kw, rest = match["indent"], match["kw"], match["rest"]
        if kw == "import":
            names = []
            for part in rest.split(","):
                name = part.strip()
                head = name.split()[0] if name else name
                if re.fullmatch(r"prefect(_dask)?", head) and " as " not in name:
                    names.append(f"daskflow as {head}")
                else:
                    names.append(_PREFECT_NAME.sub("daskflow", name))
            out.append(f"{indent}import {', '.join(names)}\n" if line.endswith("\n") else f"{indent}import {', '.join(names)}")
        else:
            module, sep, tail = rest.partition(" import ")
            out.append(f"{indent}from {_PREFECT_NAME.sub('daskflow', module)}{sep}{tail}" + ("\n" if line.endswith("\n") and not tail.endswith("\n") else ""))
    return "".join(out)


def _examples() -> list:
    params = []
    for path in sorted(EXAMPLES.glob("*.py")):
        if path.name == "__init__.py":
            continue
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("ex_"):
                example = node.name[3:]
                pinned = "task_runner=" in (ast.get_source_segment(source, node) or "")
                variants = ["as-written"] if pinned else ["thread", "dask", "prefect-mode"]
                variants += ["embedded"] if example in EMBEDDED else []
                for variant in variants:
                    failing = example in XFAIL and not (variant == "prefect-mode" and example in PREFECT_MODE_FIXES)
                    marks = [pytest.mark.xfail(strict=False, reason=XFAIL[example])] if failing else []
                    params.append(pytest.param(path.name, node.name, variant, id=f"{example}[{variant}]", marks=marks))
    return params


def load(file_name: str) -> types.ModuleType:
    """Exec the rewritten script in a fresh module that is not in sys.modules, so
    cloudpickle sends its functions to Dask workers by value."""
    path = EXAMPLES / file_name
    module = types.ModuleType(f"prefect_docs_{path.stem}")
    module.__file__ = str(path)
    exec(compile(rewrite_imports(path.read_text()), str(path), "exec"), module.__dict__)
    return module


class _ThisCheckoutOnly(importlib.abc.MetaPathFinder):
    """Find daskflow submodules only inside the imported daskflow package.

    The venv's editable install adds a finder that serves a submodule missing
    here from the main checkout, so a branch without ``daskflow.runtime`` would
    silently run another branch's code."""

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("daskflow."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return spec


@pytest.fixture(autouse=True)
def _this_checkout_only(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [_ThisCheckoutOnly(), *sys.meta_path])


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=":0", silence_logs=40) as local:
        yield local


@pytest.fixture
def default_runner(cluster):
    """Pick the runner of a flow without task_runner= with config ``daskflow.task-runner``
    (``dask`` on this module's cluster through Dask's ``scheduler-address``)."""
    import dask.config

    with contextlib.ExitStack() as stack:
        def use(variant: str) -> None:
            settings = {"thread": {"daskflow.task-runner": "threads"},
                        "prefect-mode": {"daskflow.task-runner": "threads", "daskflow.cache.default-policy": "prefect"},
                        "dask": {"daskflow.task-runner": "dask", "scheduler-address": cluster.scheduler_address}}[variant]
            stack.enter_context(dask.config.set(settings))

        yield use


@pytest.mark.parametrize(("file_name", "function", "variant"), _examples())
def test_example(file_name, function, variant, default_runner, cluster, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    if variant == "embedded":
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
        import dask.config

        assert dask.config.get("scheduler-address", None) is None and dask.config.get("daskflow.task-runner") == "dask"
        getattr(load(file_name), function)()
        return
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)  # read by tests/prefect_docs/dask_runner.py
    if variant != "as-written":
        default_runner(variant)
    getattr(load(file_name), function)()


@pytest.mark.parametrize(("line",), [pytest.param(line, id=i) for i, line in ABSENT])
def test_absent_on_purpose(line):
    """A Prefect feature daskflow leaves out fails at import with a message naming what to use instead."""
    with pytest.raises(ImportError) as caught:
        exec(rewrite_imports(line), {})
    assert not str(caught.value).startswith("No module named"), str(caught.value)


@pytest.mark.parametrize(("before", "after"), [
    ("from prefect import flow, task\n", "from daskflow import flow, task\n"),
    ("from prefect.futures import wait\n", "from daskflow.futures import wait\n"),
    ("from prefect_dask import DaskTaskRunner\n", "from daskflow import DaskTaskRunner\n"),
    ("from prefect_dask.task_runners import DaskTaskRunner", "from daskflow.task_runners import DaskTaskRunner"),
    ("import prefect\n", "import daskflow as prefect\n"),
    ("    import prefect.runtime as rt\n", "    import daskflow.runtime as rt\n"),
    ("x = 'from prefect import flow'\n", "x = 'from prefect import flow'\n"),
    ("import prefectlike\n", "import prefectlike\n"),
    ("print('prefect')\n", "print('prefect')\n"),
])
def test_rewrite_imports(before, after):
    assert rewrite_imports(before) == after


def test_exec_functions_pickle_by_value():
    """Functions of an exec'd example travel to a worker process without the file being importable."""
    import cloudpickle

    module = types.ModuleType("prefect_docs_not_importable")
    exec("def f(x):\n    return x + 1\n", module.__dict__)
    assert cloudpickle.loads(cloudpickle.dumps(module.f))(1) == 2
