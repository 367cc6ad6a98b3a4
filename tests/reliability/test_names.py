"""Hostile names and unencodable text (RELIABILITY.md scenario 20; issue 12 defect 6).

Names are metadata: storage paths come from run ids and hashes, so a name like
``../../x`` writes nothing outside the store. A name that cannot be shown or
stored faithfully (a NUL, a lone surrogate, a control character, more than 200
characters) is refused when the flow or task is decorated. Text that reaches the
history at run time (parameters, task arguments, log lines, artifacts, error
messages) is never refused: a lone surrogate is written as the visible escape
``\\ud800``, and the run is in ``runs ls``, ``runs show`` and on the page.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
import urllib.request
from pathlib import Path

import dask
import pytest
from click.testing import CliRunner

from daskflow import SequentialTaskRunner, create_markdown_artifact, flow, get_run_logger, task
from daskflow.cli import cli
from daskflow.exceptions import InvalidOptionError
from daskflow.storage import Store
from daskflow.storage.records import History

from ..tasks import add

SURROGATE = "\ud800"
#: How a lone surrogate reads in every record, command output and JSON reply.
SHOWN = "\\ud800"

NFC = unicodedata.normalize("NFC", "\u00e9")
NFD = unicodedata.normalize("NFD", "\u00e9")

#: Names that are only metadata (storage paths never hold them): accepted as given.
ACCEPTED = {
    "traversal": "../../x",
    "backslashes": "..\\..\\x",
    "encoded traversal": "%2e%2e%2f",
    "slash": "a/b",
    "cjk": "名前",
    "nfc": NFC,
    "nfd": NFD,
    "html": "<img src=x onerror=alert(1)>",
}

#: Names refused at decoration, with a fragment of the rule the message states.
REJECTED = {
    "nul": ("\x00", "control character U+0000"),
    "nul inside": ("fit\x00x", "control character U+0000"),
    "surrogate": (SURROGATE, "lone surrogate U+D800"),
    "newline": ("fit\nscore", "control character U+000A"),
    "escape sequence": ("fit\x1b[31m", "control character U+001B"),
    "line separator": ("a\u2028b", "line separator U+2028"),
    "bidi override": ("fit\u202egnp.exe", "bidirectional control U+202E"),
    "300 bytes": ("x" * 300, "300 characters"),
    "1100 bytes": ("\u00e9" * 550, "550 characters"),
}


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------ defect 6


@task
def echo(text: str) -> int:
    get_run_logger().info("echo got %s", text)
    create_markdown_artifact(f"text: {text}", key="echoed", description=f"about {text}")
    return len(text)


@task
def refuse(text: str) -> None:
    raise ValueError(f"refused {text}")


@flow(task_runner=SequentialTaskRunner())
def lone_surrogates(p: str):
    get_run_logger().info("flow got %s", p)
    refused = refuse.submit(p)
    refused.wait()
    return echo(p)


def test_a_lone_surrogate_in_run_text_never_loses_the_run(_result_storage):
    value = f"a{SURROGATE}b"
    with dask.config.set({"daskflow.history.final-write-budget": 2}):
        started = time.monotonic()
        state = lone_surrogates(value, return_state=True)
        took = time.monotonic() - started
    run_id = state.run.id
    assert took < 10, f"the run took {took:.1f} s: its history writes were retried"

    listed = json.loads(_cli("runs", "ls", "--storage", str(_result_storage), "--json"))
    assert [r["id"] for r in listed] == [run_id]
    assert listed[0]["parameters"] == {"p": f"a{SHOWN}b"}
    assert listed[0]["state"]["type"] in ("FAILED", "COMPLETED")

    shown = _cli("runs", "show", run_id[:8], "--storage", str(_result_storage))
    assert f"a{SHOWN}b" in shown and "refuse-0" in shown and "echo-0" in shown

    history = History(Store(str(_result_storage)))
    entry = history.resolve(run_id)
    tasks = {t["name"]: t for t in history.tasks(entry)}
    assert tasks["echo-0"]["state"]["name"] == "Completed"
    assert f"refused a{SHOWN}b" in tasks["refuse-0"]["state"]["message"]
    messages = [line["m"] for line in history.logs(entry)]
    assert f"flow got a{SHOWN}b" in messages and f"echo got a{SHOWN}b" in messages
    artifact = next(a for a in history.artifacts(entry) if a.get("key") == "echoed")
    assert artifact["description"] == f"about a{SHOWN}b" and f"text: a{SHOWN}b" in str(artifact.get("data"))
    # Every record file is valid UTF-8 and holds no surrogate escape JSON would decode back.
    for path in Path(_result_storage, "runs").rglob("*.json*"):
        text = path.read_bytes().decode("utf-8")
        assert "\\ud800" not in text.replace("\\\\ud800", ""), path


# ------------------------------------------------------------ names at decoration


@pytest.mark.parametrize("label", list(REJECTED))
def test_an_unusable_name_is_refused_at_decoration(label):
    name, rule = REJECTED[label]
    shown = repr(name[:40])[1:-1]

    def body():
        return 1

    for kind, make in (
        ("flow", lambda: flow(name=name)(body)),
        ("task", lambda: task(name=name)(body)),
        ("flow", lambda: flow(body).with_options(name=name)),
        ("task", lambda: task(body).with_options(name=name)),
        ("tag", lambda: flow(tags=["ok", name])(body)),
        ("tag", lambda: task(tags=[name])(body)),
    ):
        with pytest.raises(InvalidOptionError) as caught:
            make()
        message = str(caught.value)
        assert kind in message and rule in message and shown in message, message
        assert len(message) < 600, message  # a 1,100-byte name is cut in the message


def test_deployment_tags_follow_the_same_rule():
    from daskflow.exceptions import InvalidDeploymentError

    @flow
    def nightly():
        return 1

    with pytest.raises(InvalidDeploymentError, match=r"tag 'bad\\x00' .*control character U\+0000"):
        nightly.to_deployment("nightly", tags=["bad\x00"])
    assert nightly.to_deployment("nightly", tags=["名前", "a/b"]).tags == ("名前", "a/b")


# ------------------------------------------------------------------ scenario 20


def _files(root: Path) -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read().decode()


def _hostile_flow(name: str):
    marked = add.with_options(name=name, tags=[name])

    @flow(name=name, tags=[name], task_runner=SequentialTaskRunner())
    def body(label: str):
        get_run_logger().info("label %s", label)
        return marked(len(label))

    return body


def test_s20_hostile_names_stay_metadata(tmp_path, monkeypatch, scenario_report):
    from daskflow.status.server import HistoryServer

    root = tmp_path / "root"
    store = root / "store"
    cwd = root / "deep" / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)  # a relative path made of a name would land beside the store
    siblings = set(os.listdir(tmp_path.parent))
    before = _files(tmp_path)

    with dask.config.set({"daskflow.storage.url": str(store)}):
        ids = {label: _hostile_flow(name)(name, return_state=True).run.id for label, name in ACCEPTED.items()}

    outside = sorted(p for p in _files(tmp_path) - before if not (tmp_path / p).resolve().is_relative_to(store))
    outside += sorted(set(os.listdir(tmp_path.parent)) - siblings - {tmp_path.name})
    assert outside == []
    # Paths come from run ids and hashes: no stored path holds any part of a name.
    stored = _files(store)
    for path in stored:
        assert re.fullmatch(r"[A-Za-z0-9_./-]+", path), path
        assert not any(name in path for name in ("名前", "%2e", "img", "..")), path

    history = History(Store(str(store)))
    records = {r["id"]: r for r in history.runs()}
    assert sorted(records) == sorted(ids.values())
    collisions = len(ACCEPTED) - len({records[i]["flow_name"] for i in ids.values()})
    for label, run_id in ids.items():
        record = records[run_id]
        assert record["flow_name"] == ACCEPTED[label] and record["tags"] == [ACCEPTED[label]]
        tasks = history.tasks(history.resolve(run_id))
        assert [t["name"] for t in tasks] == [f"{ACCEPTED[label]}-0"]
    # NFC and NFD twins are kept as given: two flows, and a filter matches one.
    assert records[ids["nfc"]]["flow_name"] != records[ids["nfd"]]["flow_name"]
    only_nfc = json.loads(_cli("runs", "ls", "--storage", str(store), "--flow", NFC, "--json"))
    assert [r["id"] for r in only_nfc] == [ids["nfc"]]

    server = HistoryServer(History(Store(str(store))), port=0, poll_interval=0.5)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}/daskflow"
        status, body = _get(f"{base}/api/runs")
        assert status == 200
        shown = json.loads(body)["runs"]
        assert sorted(r["flow_name"] for r in shown) == sorted(ACCEPTED.values())
        raw_html = body.count("<img")
        status, detail = _get(f"{base}/api/runs/{ids['html']}")
        raw_html += detail.count("<img")
        assert json.loads(detail)["tasks"][0]["name"] == ACCEPTED["html"] + "-0"
        status, page = _get(f"{base}?run={ids['html']}")
        raw_html += page.count("<img")
    finally:
        server.stop()
    assert raw_html == 0
    assert collisions == 0

    refused = 0
    for name, _ in REJECTED.values():
        with pytest.raises(InvalidOptionError):
            _hostile_flow(name)
        refused += 1
    scenario_report(
        20, "hostile names: traversal, unicode, XSS",
        f"files outside root {len(outside)}, raw HTML in JSON/page {raw_html}, collisions {collisions}; "
        f"{len(ACCEPTED)} names kept as metadata, {refused} refused at decoration",
        backend="local", n=len(ACCEPTED) + refused,
    )


@pytest.mark.slow
def test_a_lone_surrogate_reaches_the_live_page(tmp_path):
    """The driver's feed to the scheduler (msgpack over TCP) carries the same escaped text."""
    from distributed import LocalCluster

    from daskflow import DaskTaskRunner

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0") as cluster:
        live = lone_surrogates.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        with dask.config.set({"daskflow.history.final-write-budget": 2}):
            state = live(f"a{SURROGATE}b", return_state=True)
        base = f"http://127.0.0.1:{cluster.scheduler.http_server.port}/daskflow/api"
        status, body = _get(f"{base}/runs")
        runs = json.loads(body)["runs"]
        assert [r["id"] for r in runs] == [state.run.id]
        assert runs[0]["parameters"] == {"p": f"a{SHOWN}b"}
        assert runs[0]["state"]["type"] in ("FAILED", "COMPLETED"), runs[0]["state"]
        status, body = _get(f"{base}/runs/{state.run.id}/logs")
        assert f"echo got a{SHOWN}b" in [line["m"] for line in json.loads(body)["logs"]]


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_a_record_with_odd_values_is_written_whole(tmp_path):
    """Keys that are not strings, a container inside itself, an object whose
    str() raises, undecodable bytes in a segment: the run is still readable."""
    from daskflow.storage.records import RunWriter

    store = Store(str(tmp_path / "store"))
    writer = RunWriter(store, "ab" * 16, time.time())
    loop: list = ["x"]
    loop.append(loop)
    record = {"id": "ab" * 16, "name": "odd", "flow_name": "odd", "state": {"type": "COMPLETED", "name": "Completed"},
              "parameters": {"grid": {(1, 2): "pair", 3: "int"}, "loop": loop, "obj": _Unprintable(), "s": f"x{SURROGATE}"}}
    writer.write_run(record)
    writer.append("logs", [{"t": 1.0, "l": 20, "m": f"line {SURROGATE}", "tr": None, "tn": None}])
    segment = tmp_path / "store" / writer.prefix / "logs-000001.jsonl"
    segment.write_bytes(segment.read_bytes() + b'{"t": 2.0, "m": "\xff\xfe broken"}\n{not json\n')

    history = History(store)
    (shown,) = history.runs()
    assert shown["parameters"]["grid"] == {"(1, 2)": "pair", "3": "int"}
    assert shown["parameters"]["loop"] == ["x", "<cycle>"]
    assert shown["parameters"]["obj"] == "<unprintable _Unprintable>"
    assert shown["parameters"]["s"] == f"x{SHOWN}"
    logs = history.logs(history.resolve("ab" * 16))
    assert [line["m"] for line in logs] == [f"line {SHOWN}", "\ufffd\ufffd broken"]
