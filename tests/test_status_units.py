"""The status page's data side, without a browser: live state, charts, origins, JSON routes."""

from __future__ import annotations

import json

import pytest

from daskflow.exceptions import InvalidOptionError, RunNotFoundError
from daskflow.status import charts
from daskflow.status.plugin import allowed_origins
from daskflow.status.state import LiveRuns


def _run(run_id: str, state: str = "RUNNING", start: float = 1000.0, **extra):
    name = {"RUNNING": "Running", "COMPLETED": "Completed", "FAILED": "Failed"}[state]
    return {"id": run_id, "name": f"sweep-{run_id[:8]}", "flow_name": "sweep", "tags": ["nightly"],
            "state": {"type": state, "name": name, "timestamp": start}, "start_time": start, **extra}


def _task(i: int, *, state: str = "COMPLETED", upstream=(), wait_for=(), worker="tcp://127.0.0.1:1", start=1000.0,
          duration=1.0, task_name="fit", cache_hit=False):
    name = {"COMPLETED": "Completed", "FAILED": "Failed", "RUNNING": "Running", "PENDING": "Pending"}[state]
    return {"id": f"t{i:05d}", "seq": i, "name": f"{task_name}-{i}", "task_name": task_name, "upstream": list(upstream),
            "wait_for": list(wait_for), "state": {"type": state, "name": name}, "worker": worker, "start_time": start,
            "end_time": start + duration, "attempts": 1, "cache_hit": cache_hit, "error": None}


def test_live_runs_merge_batches_and_find_runs_by_id_prefix_or_name():
    runs = LiveRuns()
    run_id = "ab" * 16
    runs.update({"run": _run(run_id), "tasks": [_task(0, state="RUNNING")], "logs": [{"m": "one"}]}, client="c1")
    runs.update({"run": _run(run_id), "tasks": [_task(0), _task(1)], "logs": [{"m": "two"}], "artifacts": [{"id": "a"}]})
    live = runs.get(run_id[:6])
    assert [t["state"]["name"] for t in live.task_list()] == ["Completed", "Completed"]  # the later record wins
    assert [line["m"] for line in live.logs] == ["one", "two"]
    assert live.artifacts == [{"id": "a"}] and live.client == "c1"
    assert runs.get(f"sweep-{run_id[:8]}") is live
    with pytest.raises(RunNotFoundError, match="no live run 'nope'"):
        runs.get("nope")
    with pytest.raises(InvalidOptionError, match="needs a run record"):
        runs.update({"tasks": []})


def test_live_runs_drop_finished_runs_first_and_keep_the_newest_log_lines():
    runs = LiveRuns(max_runs=2, max_log_lines=3)
    runs.update({"run": _run("1" * 32, "COMPLETED", start=1)})
    runs.update({"run": _run("2" * 32, "RUNNING", start=2), "logs": [{"m": str(i)} for i in range(5)]})
    runs.update({"run": _run("3" * 32, "RUNNING", start=3)})
    assert [r["id"][0] for r in runs.runs()] == ["3", "2"]  # the finished run went, newest first
    assert [line["m"] for line in runs.get("2" * 32).logs] == ["2", "3", "4"]
    runs.update({"run": _run("4" * 32, "RUNNING", start=4)})
    assert [r["id"][0] for r in runs.runs()] == ["4", "3"]  # all running: the oldest goes
    with pytest.raises(InvalidOptionError, match="max-runs must be a positive integer"):
        LiveRuns(max_runs=0)


def test_finished_runs_go_when_the_task_runs_kept_exceed_the_limit():
    runs = LiveRuns(max_task_runs=5)
    runs.update({"run": _run("1" * 32, "COMPLETED", start=1), "tasks": [_task(i) for i in range(3)]})
    runs.update({"run": _run("2" * 32, "RUNNING", start=2), "tasks": [_task(i) for i in range(3, 7)]})
    assert len(runs) == 2  # only a run finishing makes room; a running run is never dropped
    runs.update({"run": _run("2" * 32, "COMPLETED", start=2)})
    assert [r["id"][0] for r in runs.runs()] == ["2"]  # 7 > 5: the older finished run went
    assert len(runs.get("2" * 32).tasks) == 4


def test_a_run_whose_driver_disconnects_is_shown_crashed():
    runs = LiveRuns()
    runs.update({"run": _run("a" * 32)}, client="driver-1")
    runs.update({"run": _run("b" * 32, "COMPLETED")}, client="driver-1")
    runs.update({"run": _run("c" * 32)}, client="driver-2")
    assert runs.client_gone("driver-1") == ["a" * 32]
    assert runs.get("a" * 32).record["state"]["name"] == "Crashed"
    assert "driver disconnected" in runs.get("a" * 32).record["state"]["message"]
    assert runs.get("b" * 32).record["state"]["name"] == "Completed"  # a finished run stays as it ended
    assert runs.get("c" * 32).record["state"]["name"] == "Running"


def test_runs_filters_match_the_cli():
    runs = LiveRuns()
    runs.update({"run": _run("a" * 32, "COMPLETED", start=100)})
    runs.update({"run": {**_run("b" * 32, "FAILED", start=200), "flow_name": "other", "tags": []}})
    assert [r["id"][0] for r in runs.runs(state="failed")] == ["b"]
    assert [r["id"][0] for r in runs.runs(state="COMPLETED")] == ["a"]
    assert [r["id"][0] for r in runs.runs(flow="sweep")] == ["a"]
    assert [r["id"][0] for r in runs.runs(tag="nightly")] == ["a"]
    assert [r["id"][0] for r in runs.runs(since=150)] == ["b"]
    assert len(runs.runs(limit=1)) == 1


def test_small_runs_draw_one_bar_and_one_node_per_task_run():
    tasks = [_task(i) for i in range(10)] + [_task(10, upstream=[f"t{i:05d}" for i in range(10)], task_name="agg")]
    tasks[3] = _task(3, state="FAILED")
    line = charts.timeline(tasks)
    assert not line.aggregated and len(line.data["lane"]) == 11
    graph = charts.dependency_graph(tasks)
    assert not graph.aggregated and len(graph.nodes["name"]) == 11
    assert len(graph.edges["xs"]) == 10
    assert graph.nodes["x"][10] == 1.0 and set(graph.nodes["x"][:10]) == {0.0}  # agg one layer right
    assert graph.nodes["color"][3] == charts.STATE_COLORS["FAILED"]
    table = charts.task_table(tasks)
    assert table["name"][3] == "fit-3" and table["state"][3] == "Failed"


def test_a_run_of_10000_task_runs_aggregates_past_the_limits():
    fits = [_task(i, start=1000 + i * 0.01, worker=f"tcp://127.0.0.1:{i % 4}") for i in range(10_000)]
    fits[42] = _task(42, state="FAILED", start=1000.42, worker="tcp://127.0.0.1:2")
    scores = [_task(10_000 + i, upstream=[f"t{i:05d}"], task_name="score", start=1100 + i * 0.01) for i in range(500)]
    tasks = fits + scores + [_task(20_000, upstream=[t["id"] for t in scores], task_name="best", start=1200)]
    line = charts.timeline(tasks)
    assert line.aggregated and line.shown == len(tasks)
    assert len(line.data["lane"]) <= 4 * charts.TIMELINE_BINS  # bins per worker, not a bar per task run
    assert charts.STATE_COLORS["FAILED"] in line.data["color"]  # the failed fit shows in its bin
    graph = charts.dependency_graph(tasks)
    assert graph.aggregated
    assert sorted(graph.nodes["name"]) == ["best ×1", "fit ×10000", "score ×500"]
    assert len(graph.edges["xs"]) == 2  # fit → score → best
    fit = graph.nodes["name"].index("fit ×10000")
    assert graph.nodes["color"][fit] == charts.STATE_COLORS["FAILED"] and "1 Failed" in graph.nodes["state"][fit]


def test_more_task_names_than_the_limit_are_counted_not_drawn():
    tasks = [_task(i, task_name=f"step{i}") for i in range(charts.GRAPH_NODE_LIMIT * 2)]
    graph = charts.dependency_graph(tasks, limit=charts.GRAPH_NODE_LIMIT)
    assert graph.aggregated and len(graph.nodes["name"]) == charts.GRAPH_NODE_LIMIT
    assert graph.omitted == charts.GRAPH_NODE_LIMIT


def test_websocket_origins_are_loopback_unless_bound_elsewhere():
    assert allowed_origins(8787, ["127.0.0.1"]) == ["127.0.0.1:8787", "[::1]:8787", "localhost:8787"]
    assert "10.1.2.3:8787" in allowed_origins(8787, ["10.1.2.3"])
    assert allowed_origins(8787, ["127.0.0.1"], ["dash.example.org:443"])[-1] == "dash.example.org:443"
    assert not any("*" in origin for origin in allowed_origins(8787, ["0.0.0.0"]))


def test_json_replies_have_no_bare_nan_that_a_browser_refuses():
    """Python writes NaN and Infinity bare; ``JSON.parse`` refuses them, so one NaN
    metric in an artifact would blank the run's page. They go as strings."""
    from daskflow.status.api import _json

    def refuse(constant: str):
        raise ValueError(f"a browser refuses {constant}")

    body = {"rows": [{"score": float("nan"), "loss": float("inf"), "gain": -float("inf"), "n": 1.5}], "name": "<b>"}
    parsed = json.loads(_json(body), parse_constant=refuse)
    assert parsed == {"rows": [{"score": "NaN", "loss": "Infinity", "gain": "-Infinity", "n": 1.5}], "name": "<b>"}
    assert _json({"a": [1.0]}) == '{"a":[1.0]}'


def test_task_counts_say_cached_once_and_progress_segments_follow_the_states():
    assert charts.task_counts_text({"task_counts": {"Cached": 184}, "cached": 184}) == "184 Cached"
    # A hit whose state is not called Cached is still counted.
    assert charts.task_counts_text({"task_counts": {"Completed": 4}, "cached": 1}) == "4 Completed (1 cached)"
    tasks = [_task(0, cache_hit=True), _task(1), _task(2, state="FAILED"), _task(3, state="RUNNING"), _task(4, cache_hit=True)]
    assert charts.progress_segments(tasks) == [
        ("Completed", 1, charts.STATE_COLORS["COMPLETED"]), ("Cached", 2, charts.STATE_COLORS["CACHED"]),
        ("Running", 1, charts.STATE_COLORS["RUNNING"]), ("Failed", 1, charts.STATE_COLORS["FAILED"]),
    ]


def test_tens_of_task_runs_are_grouped_by_name_unless_the_full_graph_is_asked_for():
    tasks = [_task(0, task_name="load")]
    tasks += [_task(1 + i, upstream=["t00000"], task_name="fit", state="FAILED" if i == 3 else "COMPLETED") for i in range(20)]
    tasks += [_task(21 + i, upstream=[f"t{1 + i:05d}"], task_name="score") for i in range(20)]
    grouped = charts.dependency_graph(tasks)
    assert grouped.aggregated and grouped.nodes["label"] == ["load", "fit ×20", "score ×20"]
    assert grouped.nodes["counts"] == ["1 Completed", "19 Completed, 1 Failed", "20 Completed"]
    full = charts.dependency_graph(tasks, full=True)
    assert not full.aggregated and len(full.nodes["name"]) == 41
    # Forty task runs of forty names: grouping merges nothing, so each is drawn.
    assert not charts.dependency_graph([_task(i, task_name=f"step{i}") for i in range(40)]).aggregated


def test_the_timeline_colours_bars_by_task_name_and_hatches_failures():
    tasks = [_task(0, task_name="fit"), _task(1, task_name="score", start=1001), _task(2, task_name="fit", state="FAILED", start=1002)]
    line = charts.timeline(tasks)
    assert line.data["fill"][0] == line.data["fill"][2] != line.data["fill"][1]
    assert line.task_colors == {"fit": charts.TASK_COLORS[0], "score": charts.TASK_COLORS[1]}
    assert line.data["hatch"] == [" ", " ", "x"] and line.data["color"][2] == charts.STATE_COLORS["FAILED"]


def test_the_main_jobs_cv_table_charts_mean_score_per_setting_with_the_folds():
    # The columns of examples/hpo_kfold.py's cv-results artifact, best first.
    names = ["setting", "family", "params", "mean_accuracy", "std_accuracy", "fold_0", "fold_1", "rank"]
    rows = [["svc C=10, gamma=0.001", "svc", '{"C": 10}', 0.98, 0.01, 0.97, 0.99, 1],
            ["knn n_neighbors=1", "knn", '{"n": 1}', 0.95, float("nan"), 0.95, "NaN", 2]]
    chart = charts.table_chart(names, rows)
    assert chart["label_name"] == "setting" and chart["value_name"] == "mean_accuracy" and chart["spread_name"] == "std_accuracy"
    assert chart["values"]["label"] == ["svc C=10, gamma=0.001", "knn n_neighbors=1"] and chart["values"]["value"] == [0.98, 0.95]
    assert chart["values"]["low"][0] == pytest.approx(0.97) and chart["values"]["high"][1] == 0.95  # no spread: no whisker
    assert chart["points"]["value"] == [0.97, 0.99, 0.95] and chart["fold_names"] == ["fold_0", "fold_1"]
    assert charts.table_chart(["model", "notes"], [["a", "b"]]) is None  # nothing numeric: a table only
    widths = charts.table_widths(names[:2], [["random_forest max_depth=None, n_estimators=200", "x"]])
    assert widths[0] >= 7 * len("random_forest max_depth=None, n_estimators=200") and widths[1] == 63
