"""The status page in headless Chromium: live on a scheduler's dashboard, and in ``daskflow ui``.

Screenshots land in ``screenshots/`` (not committed) for a person to look at.
Flows run in background threads: the main thread is Playwright's (see
``tests/browser.py``).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from daskflow import (
    DaskTaskRunner,
    SequentialTaskRunner,
    Store,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
    flow,
    get_run_logger,
    task,
    unmapped,
)

from . import browser as harness
from .browser import collect_console_errors, screenshot
from .conftest import daskflow_ui, wait_until
from .tasks import block_until, fail, scored

browser, page = harness.browser, harness.page
pytestmark = pytest.mark.slow

HOSTILE = '<img src=x onerror="window.__xss=1">'

# Counts elements that script injection would have created, in the document and
# in every (open) shadow root: Bokeh renders its widgets inside shadow roots.
_INJECTED = """() => {
  let found = 0;
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if ((el.tagName === 'IMG' && el.getAttribute('src') === 'x') || el.hasAttribute('onerror')) found++;
      if (el.tagName === 'A' && (el.getAttribute('href') || '').toLowerCase().startsWith('javascript:')) found++;
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found + (window.__xss ? 1000 : 0);
}"""


@pytest.fixture(scope="module")
def live_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0",
                      worker_dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def _dashboard(cluster) -> str:
    return f"http://127.0.0.1:{cluster.scheduler.http_server.port}"


def _in_thread(fn):
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["state"] = fn(return_state=True)
        except BaseException as exc:  # surfaced by the test's assertions
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _served(url: str) -> None:
    def ok() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(ok, 60, message=f"{url} to be served")


def _text(locator) -> str:
    """The text a Bokeh widget shows: it is inside the widget's shadow root."""
    return locator.evaluate(
        "el => [...(el.shadowRoot || el).children].filter(c => !['STYLE', 'LINK'].includes(c.tagName))"
        ".map(c => c.innerText).join('\\n')"
    )


def _open_tab(page, name: str) -> None:
    page.locator(".bk-tab").filter(has_text=re.compile(f"^{name}$")).click()
    page.locator(".bk-tab.bk-active").filter(has_text=re.compile(f"^{name}$")).wait_for()


def _state_cell(row):
    return row.locator(".slick-cell").nth(2)


def _row(page, text: str):
    """A row of the runs table or of a run's task runs table (not of the per-flow table, which names flows too)."""
    return page.locator(".daskflow-runs .slick-row, .daskflow-tasks .slick-row", has_text=text)


def test_live_page_shows_a_run_appear_complete_and_its_failed_task(live_cluster, page, tmp_path):
    errors = collect_console_errors(page)

    @flow(name="live-sweep", task_runner=DaskTaskRunner(address=live_cluster.scheduler_address), log_prints=True)
    def live_sweep(c: float = 0.5):
        folds = scored.map(range(4), c=c)
        broken = fail.submit("fold 3 diverged")
        gate = block_until.submit(str(tmp_path), "release", wait_for=folds)
        broken.wait()
        return [f["score"] for f in folds.result()], gate.result()

    base = _dashboard(live_cluster)
    thread, outcome = _in_thread(live_sweep)
    try:
        _served(f"{base}/daskflow")  # once the run's client registered the plugin
        page.goto(f"{base}/daskflow")
        row = _row(page, "live-sweep")
        expect(_state_cell(row)).to_have_text("Running")  # appears while going, pushed by its driver
        screenshot(page, "live-runs-running")
        (tmp_path / "release.go").write_text("go")
        expect(_state_cell(row)).to_have_text("Completed")  # the table updates itself, no reload
        expect(row).to_contain_text("5 Completed, 1 Failed")
    finally:
        (tmp_path / "release.go").write_text("go")
        thread.join(60)
    assert outcome["state"].is_completed(), outcome
    run = outcome["state"].run
    screenshot(page, "live-runs-completed")

    row.locator(".slick-cell").nth(1).click()  # open the run view
    header = page.locator(".daskflow-run-header")
    header.filter(has_text=run.name).wait_for()
    assert "Completed" in _text(header) and "c\t0.5" in _text(header)  # a parameters table, not JSON
    failure = page.locator(".daskflow-failure-title")
    failure.filter(has_text="fail-0").wait_for()
    trace = _text(page.locator(".daskflow-failure"))
    assert "Traceback" in trace and "fold 3 diverged" in trace
    _row(page, "scored-3").wait_for()
    screenshot(page, "live-run-view")

    _row(page, "fail-0").locator(".slick-cell").first.click()
    detail = page.locator(".daskflow-task-detail")
    detail.filter(has_text="fold 3 diverged").wait_for()
    for tab, name in (("Timeline", "live-run-timeline"), ("Graph", "live-run-graph"), ("Logs", "live-run-logs")):
        _open_tab(page, tab)
        screenshot(page, name)
    logs = page.locator(".daskflow-logs")
    logs.filter(has_text="fold 2 with C=0.5").wait_for()  # a task's log line, from a worker
    assert errors == []


def test_the_cancel_button_cancels_a_running_flow_run(live_cluster, page, tmp_path):
    errors = collect_console_errors(page)

    @flow(name="stuck-sweep", task_runner=DaskTaskRunner(address=live_cluster.scheduler_address))
    def stuck():
        return block_until(str(tmp_path), "never", 120)

    thread, outcome = _in_thread(stuck)
    try:
        base = _dashboard(live_cluster)
        _served(f"{base}/daskflow")
        page.goto(f"{base}/daskflow")
        row = _row(page, "stuck-sweep")
        expect(_state_cell(row)).to_have_text("Running")
        row.locator(".slick-cell").nth(1).click()
        header = page.locator(".daskflow-run-header")
        header.filter(has_text="Running").wait_for()
        running = page.locator('.daskflow-run-progress .daskflow-progress-segment[data-state="Running"]')
        expect(running).to_have_attribute("data-count", "1")  # the progress bar, live
        page.get_by_role("button", name="Cancel run").click()
        header.filter(has_text="Cancelled").wait_for()
        expect(running).to_have_count(0)  # redrawn as the run ends, no reload
        screenshot(page, "live-run-cancelled")
        thread.join(60)
    finally:
        (tmp_path / "never.go").write_text("go")
        thread.join(60)
    state = outcome["state"]
    assert state.is_cancelled() and "status page" in state.message, state
    assert page.get_by_role("button", name="Cancel run").is_hidden()  # a finished run has no cancel button
    assert errors == []


@task(name=f"fit {HOSTILE}")
def hostile_fit(x: int) -> int:
    get_run_logger().info("log line %s", HOSTILE)
    if x == 1:
        raise ValueError(f"bad value {HOSTILE}")
    return x


@task
def report(values) -> None:
    create_table_artifact([{"model": HOSTILE, "score": 0.9}], key="cv-table", description=HOSTILE)
    create_markdown_artifact(f"# Best\n{HOSTILE}", key="notes")
    create_link_artifact("javascript:window.__xss=1", link_text=HOSTILE)
    create_link_artifact("https://example.com/model.pkl", link_text="the model")


def _stored_runs(storage: Path) -> dict:
    @flow(name="stored-sweep", task_runner=SequentialTaskRunner(), tags=["nightly", HOSTILE])
    def stored(note: str = HOSTILE):
        fits = hostile_fit.map(range(3))
        report([f.result(raise_on_failure=False) for f in fits])
        return fits  # a returned failed run fails the run (one the body only looked at would not)

    @flow(name="clean-sweep", task_runner=SequentialTaskRunner())
    def clean():
        return hostile_fit(0)

    return {"hostile": stored(return_state=True).run, "clean": clean(return_state=True).run}


@pytest.fixture
def ui_server(_result_storage):
    runs = _stored_runs(_result_storage)
    with daskflow_ui(_result_storage) as (base, _):
        yield base, runs


def test_daskflow_ui_shows_stored_runs_filters_them_and_opens_a_failed_run(ui_server, page):
    base, runs = ui_server
    errors = collect_console_errors(page)
    page.goto(base)  # / redirects to /daskflow
    _row(page, "stored-sweep").wait_for()
    _row(page, "clean-sweep").wait_for()
    from daskflow.status.charts import STATE_COLORS

    # The runs over time: a dot per run, coloured by its state; per flow its last run, success rate, median duration.
    dots = _drawn(page, "daskflow-runs-over-time")
    assert sorted(zip(dots["name"], dots["color"])) == sorted([(runs["hostile"].name, STATE_COLORS["FAILED"]),
                                                               (runs["clean"].name, STATE_COLORS["COMPLETED"])])
    assert all(t > 0 for t in dots["time"]) and all(s >= 0 for s in dots["seconds"])
    assert "Completed" in _text(page.locator(".daskflow-runs-legend")) and "Failed" in _text(page.locator(".daskflow-runs-legend"))
    flows = {tuple(_cells(r))[0]: _cells(r) for r in page.locator(".daskflow-flows .slick-row").all()}
    assert flows["clean-sweep"][1:4] == ["1", runs["clean"].name, "Completed"] and flows["clean-sweep"][5] == "100% of 1"
    assert flows["stored-sweep"][1:4] == ["1", runs["hostile"].name, "Failed"] and flows["stored-sweep"][5] == "0% of 1"
    assert flows["clean-sweep"][6].endswith("s") and flows["clean-sweep"][6] != "-"
    screenshot(page, "ui-runs")

    page.locator(".bk-input-group", has_text="State").locator("select").select_option("Failed")
    _row(page, "clean-sweep").wait_for(state="detached")
    assert _row(page, "stored-sweep").count() == 1
    since = page.get_by_placeholder("7d, 12h or 2026-11-01")
    since.fill("yesterday")
    since.press("Enter")
    page.locator(".daskflow-message", has_text="neither an age").wait_for()  # says what to type, keeps the table
    since.fill("1h")
    since.press("Enter")
    page.locator(".daskflow-message", has_text="neither an age").wait_for(state="detached")

    _row(page, "stored-sweep").locator(".slick-cell").nth(1).click()
    page.locator(".daskflow-run-header", has_text=runs["hostile"].name).wait_for()
    trace = page.locator(".daskflow-failure")
    trace.filter(has_text="ValueError").wait_for()
    assert "Traceback" in _text(trace)
    screenshot(page, "ui-run-view")
    _open_tab(page, "Artifacts")
    page.locator(".daskflow-artifact-table").wait_for()
    link = page.locator(".daskflow-artifact-link a", has_text="the model")
    assert link.get_attribute("href") == "https://example.com/model.pkl" and link.get_attribute("rel") == "noopener noreferrer"
    screenshot(page, "ui-run-artifacts")
    assert page.get_by_role("button", name="Cancel run").is_hidden()
    assert errors == []


def test_user_text_is_shown_as_text_never_run_as_markup(ui_server, page):
    base, runs = ui_server
    errors = collect_console_errors(page)
    page.goto(f"{base}/daskflow?run={runs['hostile'].id}")  # a direct link to a run
    page.locator(".daskflow-run-header", has_text=runs["hostile"].name).wait_for()
    for tab in ("Task runs", "Timeline", "Graph", "Logs", "Artifacts"):
        _open_tab(page, tab)
    page.locator(".daskflow-artifact-table").wait_for()
    _open_tab(page, "Task runs")
    _row(page, "fit <img").first.locator(".slick-cell").first.click()
    page.locator(".daskflow-task-detail", has_text="log line <img").wait_for()
    screenshot(page, "ui-hostile-names")
    # The hostile string is on the page as visible text (header tags, parameters,
    # task names, log lines, artifacts) and nowhere as an element or handler.
    assert HOSTILE in _text(page.locator(".daskflow-run-header"))
    assert page.evaluate(_INJECTED) == 0
    page.goto(base)
    _row(page, "stored-sweep").wait_for()
    assert page.evaluate(_INJECTED) == 0
    assert errors == []


# ------------------------------------------------------------- deployments
_DEPLOYED_FLOWS = """
from daskflow import SequentialTaskRunner, flow


@flow(task_runner=SequentialTaskRunner())
def train(n: int = 1) -> int:
    return n


@flow(name={hostile!r}, task_runner=SequentialTaskRunner())
def report() -> None:
    pass
"""

NO_GPU = "no worker serves queue 'gpu'; start one with `dask worker tcp://127.0.0.1:8786 --resources queue-gpu=1`"


def _deployed_store(store: Path, tmp_path: Path) -> dict:
    """Two deployments (one paused, with hostile text), a Completed run of one, and a Scheduled and a Late run."""
    import sys
    import uuid

    from daskflow import deploy
    from daskflow.deployments.launch import create_run, mark_late, new_request, run_scheduled_flow
    from daskflow.deployments.registry import Registry
    from daskflow.pipeline.entrypoints import load_flow

    module = f"deployed_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text(_DEPLOYED_FLOWS.format(hostile=HOSTILE))
    train, report_flow = load_flow(f"{source}:train"), load_flow(f"{source}:report")
    deploy(
        train.to_deployment("nightly-train", cron="0 3 * * *", timezone="Europe/Berlin", work_queue_name="gpu", description="retrain"),
        report_flow.to_deployment("hourly-report", interval=3600, paused=True, description=HOSTILE, tags=[HOSTILE, "reports"]),
        storage=store,
    )
    # A worker imports the deployment's code from its snapshot, never a module of that name imported before.
    del sys.modules[module]
    nightly = Registry(Store(store)).get("nightly-train")
    now = time.time()
    done = new_request(nightly, now - 3600, {"kind": "manual"})
    create_run(Store(store), done, "")
    assert run_scheduled_flow(Store(store), done)["name"] == "Completed"
    soon = new_request(nightly, now + 600, {"kind": "manual"})
    create_run(Store(store), soon, NO_GPU)
    late = new_request(nightly, now - 300, {"kind": "manual"})
    create_run(Store(store), late, NO_GPU)
    mark_late(Store(store), late, f"not started 300 s after its scheduled time: {NO_GPU}")
    return {"record": nightly, "done": done, "soon": soon, "late": late}


@pytest.fixture
def deployments_ui(_result_storage, tmp_path):
    made = _deployed_store(_result_storage, tmp_path)
    with daskflow_ui(_result_storage) as (base, _):
        yield base, made


def _grid_rows(page, table: str, text: str | None = None):
    rows = page.locator(f".{table} .slick-row")
    return rows.filter(has_text=text) if text else rows


def _cells(row) -> list[str]:
    return [c.strip() for c in row.locator(".slick-cell").all_inner_texts()]


def _rows_top_down(page, table: str, column: int) -> list[str]:
    """One column of the rows, in the order they are drawn (SlickGrid positions rows; DOM order may differ)."""
    return page.locator(f".{table} .slick-row").evaluate_all(
        "(rows, column) => rows.sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)"
        ".map(r => r.querySelectorAll('.slick-cell')[column].innerText.trim())",
        column,
    )


def _color(cell) -> str:
    return cell.evaluate("el => { let e = el; while (e.firstElementChild) e = e.firstElementChild; return getComputedStyle(e).color; }")


def _rgb(hex_color: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_color[i : i + 2], 16) for i in (1, 3, 5)))


def test_daskflow_ui_shows_deployments_and_scheduled_and_late_runs(deployments_ui, page):
    from daskflow._times import format_time
    from daskflow.deployments.deployment import next_slots
    from daskflow.status.charts import STATE_COLORS

    base, made = deployments_ui
    errors = collect_console_errors(page)
    page.goto(f"{base}/daskflow")
    done, soon, late = (made[k].name for k in ("done", "soon", "late"))
    late_row = _grid_rows(page, "daskflow-runs", late)
    expect(_state_cell(late_row)).to_have_text("Late")
    soon_row = _grid_rows(page, "daskflow-runs", soon)
    expect(_state_cell(soon_row)).to_have_text("Scheduled")
    expect(_state_cell(_grid_rows(page, "daskflow-runs", done))).to_have_text("Completed")
    for row, state in ((late_row, "LATE"), (soon_row, "SCHEDULED")):
        cells = _cells(row)
        assert cells[3:5] == ["-", "-"], cells  # no start, no duration
        assert cells[-1] == "nightly-train" and "no worker serves queue 'gpu'" in cells[-2]
        assert _color(row.locator(".slick-cell").nth(2)) == _rgb(STATE_COLORS[state])
    # Newest first by when they happen: the one due in 10 minutes, the one that ran, the one late since 5 minutes.
    assert _rows_top_down(page, "daskflow-runs", 1) == [soon, done, late]
    screenshot(page, "ui-runs-scheduled-late")

    _open_tab(page, "Deployments")
    nightly = _grid_rows(page, "daskflow-deployments", "nightly-train")
    nightly.wait_for()
    cells = _cells(nightly)
    upcoming = next_slots(made["record"], time.time())
    assert cells[:3] == ["nightly-train", "train", "every day at 03:00 (Europe/Berlin)"]
    assert cells[3] == ", ".join(format_time(t)[:16] for t in upcoming) and len(upcoming) == 3
    assert cells[4:] == ["Completed", cells[5], "", "gpu", "1 Late, 1 Scheduled"] and cells[5] != "-"
    assert _color(nightly.locator(".slick-cell").nth(4)) == _rgb(STATE_COLORS["COMPLETED"])
    paused = _cells(_grid_rows(page, "daskflow-deployments", "hourly-report"))
    assert paused[2:] == ["every hour", "- (paused)", "-", "-", "paused", "default", ""]
    assert "2 deployments (1 paused), 2 run(s) waiting" in _text(page.locator(".daskflow-deployments-count"))
    screenshot(page, "ui-deployments")

    nightly.locator(".slick-cell").first.click()
    detail = page.locator(".daskflow-deployment-detail")
    detail.filter(has_text="retrain").wait_for()
    assert "Europe/Berlin" in _text(detail) and done in _text(detail)
    page.get_by_role("button", name="Open its last run").click()
    header = page.locator(".daskflow-run-header")
    header.filter(has_text=done).wait_for()
    assert "Completed" in _text(header) and "nightly-train" in _text(header)

    page.get_by_role("button", name="← back").click()
    nightly.wait_for()  # back on the deployments tab it came from
    _open_tab(page, "Runs")
    late_row.locator(".slick-cell").nth(1).click()
    header.filter(has_text=late).wait_for()
    shown = _text(header)
    assert "Late" in shown and f"Waiting: not started 300 s after its scheduled time: {NO_GPU}" in shown
    assert "Scheduled for" in shown and "Started\tnot yet" in shown
    assert _color(page.locator(".daskflow-run-state")) == _rgb(STATE_COLORS["LATE"])
    assert page.get_by_role("button", name="Cancel run").is_hidden()  # no driver to tell before it starts
    screenshot(page, "ui-late-run")

    with urllib.request.urlopen(f"{base}/daskflow/api/deployments", timeout=20) as response:
        rows = json.loads(response.read())["deployments"]
    assert [(r["name"], r["paused"], r["last_run"] and r["last_run"]["state_name"], r["scheduled"], r["late"]) for r in rows] == [
        ("hourly-report", True, None, 0, 0), ("nightly-train", False, "Completed", 1, 1)]
    assert errors == []


def test_deployment_text_is_shown_as_text_never_run_as_markup(deployments_ui, page):
    base, _ = deployments_ui
    errors = collect_console_errors(page)
    page.goto(f"{base}/daskflow?view=deployments")  # a direct link to the deployments tab
    hostile = _grid_rows(page, "daskflow-deployments", "hourly-report")
    expect(hostile.locator(".slick-cell").nth(1)).to_have_text(HOSTILE)  # the flow's name, as text
    hostile.locator(".slick-cell").first.click()
    detail = page.locator(".daskflow-deployment-detail")
    detail.filter(has_text="reports").wait_for()
    shown = _text(detail)
    assert f"Description\t{HOSTILE}" in shown and f"Flow\t{HOSTILE}" in shown and f"Tags\t{HOSTILE}, reports" in shown
    screenshot(page, "ui-deployments-hostile")
    assert page.evaluate(_INJECTED) == 0
    _open_tab(page, "Runs")
    _grid_rows(page, "daskflow-runs", "nightly-train").first.wait_for()
    assert page.evaluate(_INJECTED) == 0
    assert errors == []


# ------------------------------------------------------- a sweep, drawn
@task
def load_digits(n: int) -> list[int]:
    return list(range(n))


@task
def fit_fold(data: list[int], fold: int, flag: str) -> float:
    # Fails while the flag file exists: the first run has a failed fit, the rerun recomputes only it.
    if fold == 5 and Path(flag).exists():
        raise ValueError("fold 5 diverged")
    return fold / 100


@task
def score_fold(model: float, fold: int) -> dict:
    # Six settings of six folds; names as long as the main job's, which a narrow column cut off.
    return {"setting": f"random_forest max_depth=None, n_estimators={100 + 20 * (fold % 6)}", "fold": fold // 6, "accuracy": 0.9 - model}


@task
def grid_cv_table(scores: list[dict]) -> list[dict]:
    rows = {}
    for s in scores:
        rows.setdefault(s["setting"], []).append(s["accuracy"])
    table = [{"setting": k, "mean_accuracy": round(sum(v) / len(v), 5), "std_accuracy": round(max(v) - min(v), 5),
              **{f"fold_{i}": round(a, 5) for i, a in enumerate(v)}} for k, v in rows.items()]
    table = sorted(table, key=lambda r: -r["mean_accuracy"])
    create_table_artifact(table, key="cv-results", description="settings x folds, best first")
    return table


N_FOLDS = 36  # 36 fits and 36 scores: "tens of nodes"


@flow(name="grid-sweep", task_runner=SequentialTaskRunner())
def grid_sweep(flag: str, seed: int = 0, grid: dict | None = None):
    data = load_digits.submit(N_FOLDS)
    models = fit_fold.map(unmapped(data), range(N_FOLDS), unmapped(flag))
    scores = score_fold.map(models, range(N_FOLDS))
    table = grid_cv_table.submit(scores)
    # Not waited on in the body: a body raising at once would cancel task runs still going.
    return table


@pytest.fixture
def sweep_ui(_result_storage, tmp_path):
    flag = tmp_path / "broken"
    flag.write_text("yes")
    failed = grid_sweep(str(flag), grid={"C": [1, 10]}, return_state=True).run
    flag.unlink()
    rerun = grid_sweep(str(flag), grid={"C": [1, 10]}, return_state=True).run  # all but fit-5, score-5 and the table cached
    with daskflow_ui(_result_storage) as (base, _):
        yield base, failed, rerun


_SOURCE_DATA = """(name) => {
  const model = Bokeh.documents[0].get_model_by_name(name);
  const data = model.data instanceof Map ? [...model.data.entries()] : Object.entries(model.data);
  return Object.fromEntries(data.map(([k, v]) => [k, Array.from(v)]));
}"""


def _drawn(page, name: str) -> dict:
    """The columns a named ColumnDataSource holds in the browser: what its glyphs draw."""
    return page.evaluate(_SOURCE_DATA, name)


def _segments(page) -> dict[str, int]:
    segments = page.locator(".daskflow-run-progress .daskflow-progress-segment")
    return {s.get_attribute("data-state"): int(s.get_attribute("data-count")) for s in segments.all()}


def test_the_run_view_draws_progress_parameters_timeline_and_a_graph_grouped_by_task_name(sweep_ui, page):
    base, failed, rerun = sweep_ui
    errors = collect_console_errors(page)
    page.goto(f"{base}/daskflow?run={rerun.id}")
    header = page.locator(".daskflow-run-header")
    header.filter(has_text=rerun.name).wait_for()
    # The progress bar: one segment per state, sized by its count; the header says the counts once.
    page.locator(".daskflow-progress-segment").first.wait_for()
    assert _segments(page) == {"Completed": 3, "Cached": 2 * N_FOLDS - 1}
    legend = _text(page.locator(".daskflow-run-progress"))
    assert f"{2 * N_FOLDS + 2} of {2 * N_FOLDS + 2} task runs completed: " in legend
    shown = _text(header)
    assert f"Task runs\t{2 * N_FOLDS - 1} Cached, 3 Completed\n" in shown and "cached)" not in shown
    # Parameters as rows of name and value, not one JSON string.
    params = page.locator(".daskflow-run-header .daskflow-parameters tr")
    assert [r.inner_text().split("\t") for r in params.all()] == [["flag", str(Path(rerun.parameters["flag"]))], ["seed", "0"],
                                                                   ["grid", '{"C": [1, 10]}']]
    screenshot(page, "ui-sweep-run-view")

    page.goto(f"{base}/daskflow?run={failed.id}")
    header.filter(has_text=failed.name).wait_for()
    page.locator(".daskflow-progress-segment").first.wait_for()
    assert _segments(page) == {"Completed": 2 * N_FOLDS - 1, "Failed": 1, "UpstreamFailed": 2}
    assert f"{2 * N_FOLDS - 1} of {2 * N_FOLDS + 2} task runs completed" in _text(page.locator(".daskflow-run-progress"))

    _open_tab(page, "Timeline")
    line = _drawn(page, "daskflow-timeline")
    assert len(line["left"]) == 2 * N_FOLDS  # one bar per task run that started (not score-5 nor the table)
    fills = dict(zip(line["task"], line["fill"]))
    assert sorted(fills) == ["fit_fold", "load_digits", "score_fold"]
    assert len(set(fills.values())) == len(fills)  # a colour per task name, not per worker or state
    bad = [(n, s, h) for n, s, h in zip(line["name"], line["state"], line["hatch"]) if h == "x"]
    assert bad == [("fit_fold-5", "Failed", "x")]
    assert all(d for d in line["duration"])
    assert "fit_fold" in _text(page.locator(".daskflow-timeline-legend"))
    screenshot(page, "ui-sweep-timeline")

    _open_tab(page, "Graph")
    nodes = _drawn(page, "daskflow-graph-nodes")
    assert nodes["label"] == ["load_digits", f"fit_fold ×{N_FOLDS}", f"score_fold ×{N_FOLDS}", "grid_cv_table"]
    assert nodes["x"] == [0, 1, 2, 3]  # load -> fit -> score -> cv_table, left to right
    assert nodes["counts"] == ["1 Completed", f"{N_FOLDS - 1} Completed, 1 Failed", f"{N_FOLDS - 1} Completed, 1 UpstreamFailed",
                               "1 UpstreamFailed"]
    assert len(_drawn(page, "daskflow-graph-edges")["xs"]) == 3
    screenshot(page, "ui-sweep-graph-grouped")
    page.get_by_role("button", name="Show every task run").click()
    page.wait_for_function("n => Bokeh.documents[0].get_model_by_name('daskflow-graph-nodes').data.x.length == n",
                           arg=2 * N_FOLDS + 2)
    nodes = _drawn(page, "daskflow-graph-nodes")
    assert sorted(nodes["state"]).count("Failed") == 1 and len(nodes["name"]) == 2 * N_FOLDS + 2
    screenshot(page, "ui-sweep-graph-full")

    # The rerun made the CV table: a table whose columns fit their text, and a chart of the mean per setting.
    page.goto(f"{base}/daskflow?run={rerun.id}")
    header.filter(has_text=rerun.name).wait_for()
    _open_tab(page, "Artifacts")
    table = page.locator(".daskflow-artifact-table")
    table.locator(".slick-row").first.wait_for()
    cut = table.locator(".slick-row").evaluate_all(
        "rows => rows.map(r => r.querySelectorAll('.slick-cell')[0]).filter(c => c.scrollWidth > c.clientWidth).map(c => c.innerText)")
    assert cut == []  # no setting cut off
    settings = [c.strip() for c in table.locator(".slick-row .slick-cell:first-child").all_inner_texts()]
    assert len(set(settings)) == 6 and all(s.startswith("random_forest max_depth=None, n_estimators=") for s in settings)
    values = _drawn(page, "daskflow-chart-cv-results-values")
    points = _drawn(page, "daskflow-chart-cv-results-points")
    expected = {}
    for fold in range(N_FOLDS):
        expected.setdefault(f"random_forest max_depth=None, n_estimators={100 + 20 * (fold % 6)}", []).append(0.9 - fold / 100)
    means = {k: round(sum(v) / len(v), 5) for k, v in expected.items()}
    assert values["label"] == sorted(means, key=lambda k: -means[k])  # best first, as the table
    assert values["value"] == pytest.approx([means[k] for k in values["label"]])
    assert [h - lo for h, lo in zip(values["high"], values["low"])] == pytest.approx([2 * (max(expected[k]) - min(expected[k])) for k in values["label"]])
    assert len(points["value"]) == N_FOLDS and sorted(set(points["fold"])) == [f"fold_{i}" for i in range(6)]
    assert sorted(points["value"]) == pytest.approx(sorted(round(a, 5) for v in expected.values() for a in v))
    title = page.locator(".daskflow-artifact-chart-title").inner_text()
    assert title.startswith("mean_accuracy per setting (whiskers: ± std_accuracy); small dots: fold_0, fold_1,"), title
    screenshot(page, "ui-sweep-cv-table")
    assert errors == []


SWEEP_SCRIPT = """
from daskflow import DaskTaskRunner, flow
from tests.tasks import block_until

@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"}))
def watched(marker_dir: str):
    return [f.result() for f in block_until.map(marker_dir, ["a", "b"], 120)]
"""


def test_closing_the_live_page_mid_run_prints_nothing_into_the_runs_console(browser, tmp_path):
    """``daskflow run`` with its console on: pages of the live run are opened, used
    and closed (tab, websocket and all) while it runs; the run's output holds its own
    lines and no traceback from Bokeh or Tornado."""
    import subprocess
    import sys

    from .conftest import REPO, worker_env

    (tmp_path / "watched.py").write_text(SWEEP_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from daskflow.cli import main; main()", "run", "watched.py:watched",
         "-p", f"marker_dir={tmp_path}", "--storage", str(tmp_path / "store")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**worker_env(), "PYTHONPATH": str(REPO),
             "DASK_DISTRIBUTED__SCHEDULER__DASHBOARD__BOKEH_APPLICATION__UNUSED_SESSION_LIFETIME_MILLISECONDS": "500"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        link = wait_until(lambda: next((m.group(1) for m in map(re.compile(r"status page: (http://\S+)").search, list(lines)) if m), None),
                          120, message="the run's status page link")
        wait_until(lambda: len(list(tmp_path.glob("*.pid.*"))) == 2, 60, message="both task runs to start")
        for round_ in range(3):
            page = browser.new_page()
            page.goto(link)
            page.locator(".daskflow-run-header").filter(has_text="Running").wait_for()
            _open_tab(page, ["Timeline", "Graph", "Logs"][round_])
            page.close()  # the tab goes, and its websocket with it, while the run goes on
        # Bokeh lets a closed page's session go 0.5 s after it closed (set above): a page
        # opened after the three were closed still loads, and the run goes on meanwhile.
        page = browser.new_page()
        page.goto(link)
        page.locator(".daskflow-run-header").filter(has_text="Running").wait_for()
        page.close()
    finally:
        for name in ("a", "b"):
            (tmp_path / f"{name}.go").write_text("go")
        try:
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(10)
    output = "".join(lines)
    assert code == 0, output
    assert "Completed" in output and "task runs" in output, output
    for fragment in ("Traceback", "AssertionError", "Exception in callback", "Task exception was never retrieved"):
        assert fragment not in output, output
