"""Every command a run prints, and every example in the help texts, works as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap

import click
import pytest
from click.testing import CliRunner

from daskflow.cli import cli
from daskflow.cli.run_cmd import load_flow, parse_parameters

from .conftest import REPO, assert_error, worker_env
from .hints import activated_env, printed_commands, run_printed


def test_printed_commands_are_found_where_runs_print_them():
    text = ("results:  /x  (daskflow cache ls --storage /x)\nstatus page: http://h/daskflow while the run went; now: daskflow ui\n"
            "this run and others: daskflow runs ls; daskflow ui (the status page)\n  history:   daskflow runs show abc\n")
    assert printed_commands(text) == ["daskflow cache ls --storage /x", "daskflow ui", "daskflow runs ls", "daskflow runs show abc"]


def test_every_command_the_quickstart_prints_works_as_printed(tmp_path):
    env = activated_env(worker_env())
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py"), "--batches", "2", "--points", "1000", "--workers", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    commands = printed_commands(done.stdout)
    assert [c.split()[1] for c in commands] == ["logs", "runs", "ui"], done.stdout
    outputs = {c: run_printed(c, env, tmp_path) for c in commands}
    # The retry warning the console showed is in the task run's own logs.
    assert "retry 1 of" in outputs[commands[0]] and "Task run 'flaky_average-0'" in outputs[commands[0]]
    assert "estimate-pi" in outputs["daskflow runs ls"] or "estimate_pi" in outputs["daskflow runs ls"]


FLOW_FILE = textwrap.dedent(
    """
    from daskflow import SequentialTaskRunner, flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(task_runner=SequentialTaskRunner())
    def tiny(x: int = 2) -> int:
        return double(x)
    """
)


def test_every_command_daskflow_run_prints_works_as_printed(tmp_path):
    (tmp_path / "tiny.py").write_text(FLOW_FILE)
    env = activated_env(worker_env())
    done = subprocess.run(["bash", "-c", "daskflow run tiny.py:tiny -p x=3"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    commands = printed_commands(done.stdout)
    assert [c.split()[1:3] for c in commands] == [["runs", "show"], ["ui", "--storage"]], done.stdout
    shown = run_printed(commands[0], env, tmp_path)
    assert "double-0" in shown and "Completed" in shown
    run_printed(commands[1], env, tmp_path)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def _help_examples() -> list[tuple[str, click.Command]]:
    found = []
    for path, command in _commands(cli):
        for line in (command.help or "").splitlines():
            if line.strip().startswith("daskflow "):
                found.append((line.strip(), command))
    return found


def _readme_deployments() -> dict[str, str]:
    """Deployment name -> the README's daskflow.yaml block (the project the help examples use)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- deployments-example: daskflow.yaml -->\n```\w*\n(.*?)```", text, re.S).group(1)
    return dict.fromkeys(re.findall(r"- name: (\S+)", block), block)


def test_help_examples_parse_and_name_real_flows_parameters_and_deployments(monkeypatch):
    examples = _help_examples()
    assert len(examples) >= 8  # run, deploy, deployments run, backfill, serve, limits set...
    deployments = _readme_deployments()
    monkeypatch.chdir(REPO)
    for line, command in examples:
        words = shlex.split(line)[1:]
        # Walk to the subcommand as the shell would, then let click parse the rest.
        node, args = cli, words
        while isinstance(node, click.Group):
            node, args = node.commands[args[0]], args[1:]
        assert node is command, line
        ctx = command.make_context(" ".join(words[: len(words) - len(args)]), list(args))
        params = ctx.params
        if line.startswith("daskflow run "):
            flow = load_flow(params["target"])
            flow.parameters.bind((), parse_parameters(params["params"]), flow.validate_parameters)
        if line.startswith(("daskflow deploy ", "daskflow deployments run ", "daskflow backfill ")):
            names = params.get("names") or ((params["name"],) if params.get("name") else ())
            assert all(n in deployments for n in names), (line, sorted(deployments))
        if line.startswith("daskflow deployments run ") and params.get("params"):
            assert set(parse_parameters(params["params"])) <= {"sample"}, line  # README's retrain(sample: bool)


def test_the_missing_file_error_suggests_real_files_or_none(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    line = assert_error(CliRunner().invoke(cli, ["run", "examples/quickstrat.py"]), 2, "'examples/quickstrat.py' does not exist")
    assert "did you mean 'examples/quickstart.py'?" in line
    monkeypatch.chdir(tmp_path)
    line = assert_error(CliRunner().invoke(cli, ["run", "nothing_like_it.py:flow"]), 2, "does not exist")
    assert "did you mean" not in line and "pipeline" not in line and "PATH.py:FLOW" in line


@pytest.mark.parametrize("bad", ["folds", "=3"])
def test_the_parameter_error_example_is_valid(bad, monkeypatch):
    monkeypatch.chdir(REPO)
    line = assert_error(CliRunner().invoke(cli, ["run", "examples/quickstart.py", "-p", bad]), 2, "NAME=VALUE")
    assert "n_folds" not in line


def test_an_unreachable_storage_endpoint_is_said_once_with_where_to_set_it(tmp_path):
    pytest.importorskip("s3fs")
    (tmp_path / "tiny.py").write_text(FLOW_FILE)
    env = activated_env(worker_env())
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", DASK_DASKFLOW__STORAGE__OPTIONS=json.dumps(
        {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "config_kwargs": {"retries": {"max_attempts": 1}}}))
    done = subprocess.run(["bash", "-c", "daskflow run tiny.py:tiny --storage s3://bucket/x"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert output.count("cannot reach the storage endpoint http://127.0.0.1:9") == 1, output
    assert "AWS_ENDPOINT_URL" in output and "daskflow.storage.options" in output
    assert "Traceback" not in output


def test_the_progress_bar_says_the_local_cluster_is_starting(tmp_path):
    """While the embedded LocalCluster starts (at the first task run to execute), the
    bar says so instead of sitting at 0 task runs with nothing said."""
    (tmp_path / "one.py").write_text(textwrap.dedent("""
        from daskflow import NONE, flow, task

        @task(cache_policy=NONE)
        def double(x: int) -> int:
            return 2 * x

        @flow
        def one(x: int = 2) -> int:
            return double(x)
    """))
    env = worker_env()
    done = subprocess.run(
        [sys.executable, "-c", "from daskflow.cli import main; main()", "run", "one.py:one", "--progress", "--storage", str(tmp_path / "store")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Each redraw is "\r\x1b[K" + the bar (text mode reads the \r as a line end).
    frames = [frame.strip() for frame in done.stderr.replace("\x1b[K", "").splitlines()]
    bars = [frame for frame in frames if frame.startswith("[") and " task runs" in frame]
    assert any(bar.endswith("(starting the local Dask cluster)") for bar in bars), done.stderr
    assert not any(bar.endswith("(starting the local Dask cluster)") for bar in bars[bars.index(next(b for b in bars if "1/1" in b)):])
