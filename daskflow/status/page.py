"""The status page: a Bokeh document showing runs and one run in detail.

The same document serves the scheduler's ``/daskflow`` (a :class:`LiveSource`)
and ``daskflow ui`` (a :class:`HistorySource`). It has two views: the list
view, with tabs for the runs table (with filters) and the deployments table,
and a run view (header, failure, then tabs for task runs, timeline, graph,
logs and artifacts). ``?run=ID`` opens a run directly, ``?view=deployments``
the deployments tab.

Every string that came from a user (names, tags, parameters, messages, log
lines, artifact data) reaches the browser as text: through Bokeh's table cells,
``PreText``, tooltips and ``Select`` options, which render text, or through
:func:`_html`-escaped markup in a ``Div``.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import logging
import time
from typing import Any, Callable

from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import (
    AllIndices,
    Button,
    ColumnDataSource,
    DataRange1d,
    DataTable,
    Div,
    FactorRange,
    HoverTool,
    LabelSet,
    NumberFormatter,
    PreText,
    Select,
    StringFormatter,
    TableColumn,
    TabPanel,
    Tabs,
    TextInput,
    Toggle,
)
from bokeh.plotting import figure

from .._times import format_duration, format_time, parse_since
from ..exceptions import RunNotFoundError
from . import charts
from .deployments import is_waiting
from .sources import RunDetail, RunSource

__all__ = ["RUNS_SHOWN", "StatusPage", "status_document"]

logger = logging.getLogger(__name__)

#: Rows of the runs table (newest first).
RUNS_SHOWN = 500
#: Log lines shown in the run view (the newest; ``daskflow logs`` has them all).
LOG_LINES_SHOWN = 2_000
_ALL = "(all)"
_STATES = [_ALL, "Running", "Pending", "Scheduled", "Late", "Completed", "Failed", "Crashed", "Cancelled", "TimedOut"]
#: The list view's tabs, in order.
_RUNS_TAB, _DEPLOYMENTS_TAB = 0, 1


def _html(value: Any) -> str:
    """A user-provided value as text safe inside a ``Div``'s HTML."""
    return html.escape("" if value is None else str(value), quote=True)


def _safe_link(url: str | None, text: str | None = None) -> str:
    """An ``<a>`` for http(s) URLs, escaped text for anything else (``s3://``, ``javascript:``)."""
    label = _html(text or url or "")
    if url and url.lower().startswith(("http://", "https://")):
        return f'<a href="{_html(url)}" target="_blank" rel="noopener noreferrer">{label}</a>'
    return f"<code>{label}</code>" + (f" ({_html(url)})" if text and url else "")


def _progress_bar(percent: float) -> str:
    """A bar and its percentage; only a number reaches the HTML."""
    shown = min(max(percent, 0.0), 100.0) if percent == percent else 0.0  # NaN draws as 0
    return f'<progress max="100" value="{shown:.1f}" style="width:240px"></progress> {shown:.1f}%'


def _run_progress(segments: list[tuple[str, int, str]]) -> str:
    """A bar of a run's task runs by state, one coloured segment per state, and its legend.

    Only numbers, colours from :data:`charts.STATE_COLORS` and escaped state names reach the HTML.
    """
    total = sum(n for _, n, _ in segments)
    if not total:
        return '<div class="daskflow-progress-empty" style="color:#607d8b">no task runs yet</div>'
    done = sum(n for name, n, color in segments if color in (charts.STATE_COLORS["COMPLETED"], charts.STATE_COLORS["CACHED"]))
    parts = "".join(
        f'<div class="daskflow-progress-segment" data-state="{_html(name)}" data-count="{n}" title="{n} {_html(name)}"'
        f' style="width:{100 * n / total:.3f}%;background:{color};height:100%"></div>'
        for name, n, color in segments
    )
    legend = " · ".join(f'<span style="color:{color}">■</span> {n} {_html(name)}' for name, n, color in segments)
    return (
        f'<div style="display:flex;width:min(900px,95vw);height:14px;border-radius:3px;overflow:hidden;background:#eceff1">{parts}</div>'
        f'<div class="daskflow-progress-legend" style="font-size:90%;margin-top:2px">{done} of {total} task runs completed: {legend}</div>'
    )


def _legend(colors: dict[str, str], note: str = "") -> str:
    """Swatches naming what each colour is (escaped names; colours are this module's own)."""
    items = "".join(
        f'<span class="daskflow-legend-item" style="margin-right:14px;white-space:nowrap">'
        f'<span style="display:inline-block;width:11px;height:11px;background:{color};margin-right:4px"></span>{_html(name)}</span>'
        for name, color in colors.items()
    )
    return items + (f' <span style="color:#607d8b">· {_html(note)}</span>' if items and note else "")


class _Markup(str):
    """Markup built here from escaped parts, put into :func:`_table` as it is."""


def _parameters_table(parameters: dict[str, Any]) -> _Markup | None:
    """A flow run's parameters as a key/value table (strings as they are, other values as JSON)."""
    if not parameters:
        return None
    rows = []
    for key, value in parameters.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        text = text if len(text) <= 500 else text[:499] + "…"
        rows.append(f'<tr><td style="padding-right:10px"><code>{_html(key)}</code></td><td>{_html(text)}</td></tr>')
    return _Markup(f'<table class="daskflow-parameters">{"".join(rows)}</table>')


def _safe_image(url: str | None) -> str:
    """An ``<img>`` for http(s) URLs, escaped text for anything else (``javascript:``, ``data:``)."""
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        return f'<a href="{_html(url)}" target="_blank" rel="noopener noreferrer"><img src="{_html(url)}" style="max-width:100%;max-height:400px" alt="artifact image"></a>'
    return f"<code>{_html(str(url or ''))}</code>"


def _set_rows(table: DataTable, data: dict[str, list[Any]]) -> None:
    """Replace a table's rows, and make the browser redraw them.

    A DataTable redraws when its view changes, and its view recomputes only a
    changed row count: new data of the same length (a run going from Running to
    Completed) would stay drawn as it was (Bokeh 3.9). A new filter is a view
    change, which redraws the grid and keeps its scroll position.
    """
    table.source.data = data
    table.view.filter = AllIndices()


def _table_height(rows: int, most: int = 380) -> int:
    # Room for the rows (SlickGrid draws 25 px each, plus the header) up to
    # ``most``; past it the table scrolls.
    return max(80, min(most, 32 + 25 * rows))


def _columns(spec: list[tuple[str, str, int]], color_field: str | None = None) -> list[TableColumn]:
    """Text columns ``(field, title, width)``; ``color_field`` colours the ``state`` column."""
    return _colored_columns([(field, title, width, color_field if field == "state" else None) for field, title, width in spec])


def _colored_columns(spec: list[tuple[str, str, int, str | None]]) -> list[TableColumn]:
    """Text columns ``(field, title, width, color field or None)``."""
    return [
        TableColumn(field=field, title=title, width=width, formatter=StringFormatter(text_color=color) if color else StringFormatter())
        for field, title, width, color in spec
    ]


class StatusPage:
    """One browser session of the status page.

    Parameters
    ----------
    doc : bokeh.document.Document
        The session's document.
    source : RunSource
        Where runs come from.
    dashboard_prefix : str
        The dashboard's URL prefix (links to Dask's own ``/status``).
    run_ref : str, optional
        A run to open at once (``?run=``).
    view : str, optional
        ``"deployments"`` opens the deployments tab (``?view=``).
    """

    def __init__(
        self, doc: Document, source: RunSource, dashboard_prefix: str = "", run_ref: str | None = None, view: str | None = None
    ) -> None:
        self.doc = doc
        self.source = source
        self.prefix = dashboard_prefix.rstrip("/")
        self.run_ref: str | None = None
        self._shown_runs_version: Any = None
        self._shown_deployments_version: Any = None
        self._shown_detail_version: Any = None
        self._busy = False
        self._task_ids: list[str] = []
        self._deployment_rows: list[dict[str, Any]] = []
        self._chart_ids: list[str] = []

        links = f' · <a href="{_html(self.prefix)}/status">Dask dashboard</a>' if source.on_dashboard else ""
        self.header = Div(
            text=f'<h2 style="margin:4px 0">daskflow</h2><span class="daskflow-source">{_html(source.label)}</span>{links}',
            sizing_mode="stretch_width",
        )
        self.message = Div(text="", sizing_mode="stretch_width", css_classes=["daskflow-message"])
        self.body = column(sizing_mode="stretch_width")
        self._build_runs_view()
        self._build_deployments_view()
        self.list_tabs = Tabs(
            tabs=[TabPanel(child=self.runs_view, title="Runs"), TabPanel(child=self.deployments_view, title="Deployments")],
            active=_DEPLOYMENTS_TAB if view == "deployments" else _RUNS_TAB,
            sizing_mode="stretch_width",
            css_classes=["daskflow-list-tabs"],
        )
        self.list_tabs.on_change("active", lambda attr, old, new: self._schedule(self._refresh_list, force=True))
        doc.title = "daskflow status"
        doc.add_root(column(self.header, self.message, self.body, sizing_mode="stretch_width"))
        if run_ref and not source.blocking:
            self._open_now(run_ref)  # in the first document: no second round trip
        elif run_ref:
            self.open_run(run_ref)
        else:
            self.show_runs()
        doc.add_periodic_callback(self._poll, int(max(source.poll_interval, 0.25) * 1000))

    # ------------------------------------------------------------ plumbing
    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.source.blocking:
            return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))
        return fn(*args, **kwargs)

    def _say(self, text: str, error: bool = False) -> None:
        color = "#b71c1c" if error else "#37474f"
        self.message.text = f'<span style="color:{color}">{_html(text)}</span>' if text else ""

    async def _poll(self) -> None:
        if self._busy:
            return  # the last refresh is still reading (a slow store)
        self._busy = True
        try:
            if self.run_ref is None:
                await self._refresh_list()
            else:
                await self._refresh_run()
        except Exception as exc:  # a page must survive a store hiccup; say it, try again next poll
            logger.debug("status page refresh failed", exc_info=True)
            self._say(f"could not refresh: {exc}", error=True)
        finally:
            self._busy = False

    # ------------------------------------------------------------ runs view
    def _build_runs_view(self) -> None:
        self.flow_filter = Select(title="Flow", value=_ALL, options=[_ALL], width=200)
        self.state_filter = Select(title="State", value=_ALL, options=_STATES, width=140)
        self.tag_filter = TextInput(title="Tag", placeholder="nightly", width=160)
        self.since_filter = TextInput(title="Since", placeholder="7d, 12h or 2026-11-01", width=180)
        for widget in (self.flow_filter, self.state_filter, self.tag_filter, self.since_filter):
            widget.on_change("value", lambda attr, old, new: self._schedule(self._refresh_runs, force=True))
        self.runs_count = Div(text="", css_classes=["daskflow-runs-count"])
        self.runs_source = ColumnDataSource(charts.runs_table([]))
        spec = [
            ("flow", "Flow", 150),
            ("name", "Run", 200),
            ("state", "State", 90),
            ("start", "Start", 140),
            ("duration", "Duration", 80),
            ("tags", "Tags", 120),
            ("tasks", "Task runs", 300),
            ("deployment", "Deployment", 130),
        ]
        self.runs_table = DataTable(
            source=self.runs_source,
            columns=_columns(spec, color_field="color"),
            sizing_mode="stretch_width",
            height=520,
            index_position=None,
            css_classes=["daskflow-runs"],
        )
        self.runs_source.selected.on_change("indices", self._run_selected)

        # The runs shown (filters apply) over time, by duration, coloured by state; and per flow how it goes.
        self.runs_chart_source = ColumnDataSource(charts.runs_over_time([]), name="daskflow-runs-over-time")
        self.runs_chart = figure(
            x_axis_type="datetime", height=200, sizing_mode="stretch_width", tools="xpan,xwheel_zoom,reset,tap", y_range=DataRange1d(start=0),
            toolbar_location="above", y_axis_label="duration (s)", css_classes=["daskflow-runs-chart"],
        )
        points = self.runs_chart.scatter(x="time", y="seconds", color="color", size=9, line_color="white", source=self.runs_chart_source)
        self.runs_chart.add_tools(HoverTool(renderers=[points], tooltips=[("run", "@name"), ("flow", "@flow"), ("state", "@state"),
                                                                          ("at", "@when"), ("duration", "@duration")]))
        self.runs_chart_source.selected.on_change("indices", self._chart_run_selected)
        self.runs_legend = Div(text="", sizing_mode="stretch_width", css_classes=["daskflow-runs-legend"])
        self.flows_source = ColumnDataSource(charts.flow_summary([]), name="daskflow-flow-summary")
        flow_spec = [
            ("flow", "Flow", 160, None),
            ("runs", "Runs", 60, None),
            ("last", "Last run", 200, None),
            ("last_state", "Last state", 90, "last_color"),
            ("last_time", "Last run at", 140, None),
            ("success", "Succeeded", 110, None),
            ("median", "Median duration", 110, None),
        ]
        self.flows_table = DataTable(
            source=self.flows_source,
            columns=_colored_columns(flow_spec),
            sizing_mode="stretch_width",
            height=_table_height(0),
            index_position=None,
            css_classes=["daskflow-flows"],
        )
        self.runs_view = column(
            row(self.flow_filter, self.state_filter, self.tag_filter, self.since_filter),
            self.runs_chart,
            self.runs_legend,
            self.flows_table,
            self.runs_count,
            self.runs_table,
            sizing_mode="stretch_width",
        )

    def _schedule(self, coroutine_fn: Callable[..., Any], **kwargs: Any) -> None:
        async def run() -> None:
            try:
                await coroutine_fn(**kwargs)
            except Exception as exc:
                logger.debug("status page action failed", exc_info=True)
                self._say(str(exc), error=True)

        self.doc.add_next_tick_callback(run)

    def show_runs(self) -> None:
        """Switch to the list view (on the tab it was on: runs, or deployments)."""
        self.run_ref = None
        self._shown_detail_version = None
        self._say("")
        self.body.children = [self.list_tabs]
        self._schedule(self._refresh_list, force=True)

    async def _refresh_list(self, force: bool = False) -> None:
        # Only the tab in sight is read: the other one is read when it is opened.
        if self.list_tabs.active == _DEPLOYMENTS_TAB:
            await self._refresh_deployments(force=force)
        else:
            await self._refresh_runs(force=force)

    def _filters(self) -> dict[str, Any] | None:
        since = None
        text = (self.since_filter.value or "").strip()
        if text:
            try:
                since = parse_since(text)
            except ValueError as exc:
                self._say(f"Since: {exc}", error=True)
                return None
        return {
            "flow": None if self.flow_filter.value == _ALL else self.flow_filter.value,
            "state": None if self.state_filter.value == _ALL else self.state_filter.value,
            "tag": (self.tag_filter.value or "").strip() or None,
            "since": since,
        }

    async def _refresh_runs(self, force: bool = False) -> None:
        if self.run_ref is not None:
            return
        version = await self._call(self.source.version)
        if not force and version == self._shown_runs_version:
            return
        filters = self._filters()
        if filters is None:
            return
        self._say("")
        records = await self._call(self.source.runs, limit=RUNS_SHOWN, **filters)
        # Newest first by when each run happens: a run not started yet by its scheduled time.
        records = sorted(records, key=charts.run_time, reverse=True)
        if not any(filters.values()):
            self.flow_filter.options = [_ALL, *charts.flow_choices(records)]
        self._shown_runs_version = version
        self.runs_source.selected.indices = []
        _set_rows(self.runs_table, charts.runs_table(records))
        self.runs_table.height = _table_height(len(records), most=560)
        self.runs_chart_source.selected.indices = []
        self._chart_ids = [r["id"] for r in records]
        self.runs_chart_source.data = charts.runs_over_time(records)
        states = {name: color for name, color in zip(self.runs_chart_source.data["state"], self.runs_chart_source.data["color"])}
        self.runs_legend.text = _legend(dict(sorted(states.items())), "one dot per run: when it ran, how long it took; click one to open it")
        summary = charts.flow_summary(records)
        _set_rows(self.flows_table, summary)
        self.flows_table.height = _table_height(len(summary["flow"]), most=260)
        shown = f"{len(records)} run{'s' if len(records) != 1 else ''}"
        more = f" (the newest {RUNS_SHOWN})" if len(records) >= RUNS_SHOWN else ""
        self.runs_count.text = f"{shown}{more}, newest first · select a row to open the run"

    def _chart_run_selected(self, attr: str, old: list[int], new: list[int]) -> None:
        if new and new[0] < len(self._chart_ids):
            self.open_run(self._chart_ids[new[0]])

    def _run_selected(self, attr: str, old: list[int], new: list[int]) -> None:
        if not new:
            return
        run_id = self.runs_source.data["id"][new[0]]
        self.open_run(run_id)

    # ----------------------------------------------------- deployments view
    def _build_deployments_view(self) -> None:
        self.deployments_count = Div(text="", css_classes=["daskflow-deployments-count"])
        self.deployments_source = ColumnDataSource(charts.deployments_table([]))
        spec = [
            ("name", "Deployment", 150, None),
            ("flow", "Flow", 130, None),
            ("schedules", "Schedule", 230, None),
            ("next", "Next runs", 370, None),
            ("last_state", "Last run", 90, "last_color"),
            ("last_time", "Last run at", 140, None),
            ("paused", "Paused", 60, None),
            ("queue", "Queue", 80, None),
            ("waiting", "Waiting runs", 130, "waiting_color"),
        ]
        self.deployments_table = DataTable(
            source=self.deployments_source,
            columns=_colored_columns(spec),
            sizing_mode="stretch_width",
            height=_table_height(0),
            index_position=None,
            css_classes=["daskflow-deployments"],
        )
        self.deployments_source.selected.on_change("indices", self._deployment_selected)
        self.deployment_detail = Div(text="", sizing_mode="stretch_width", css_classes=["daskflow-deployment-detail"])
        self.open_last_button = Button(label="Open its last run", width=150, visible=False, css_classes=["daskflow-open-last"])
        self.open_last_button.on_click(self._open_last_run)
        self.deployments_view = column(
            self.deployments_count,
            self.deployments_table,
            self.open_last_button,
            self.deployment_detail,
            sizing_mode="stretch_width",
        )
        self._selected_deployment: str | None = None

    def show_deployments(self) -> None:
        """Switch to the deployments tab of the list view."""
        self.list_tabs.active = _DEPLOYMENTS_TAB
        self.show_runs()

    async def _refresh_deployments(self, force: bool = False) -> None:
        if self.run_ref is not None:
            return
        version = await self._call(self.source.deployments_version)
        if not force and version == self._shown_deployments_version:
            return
        rows = await self._call(self.source.deployments)
        self._shown_deployments_version = version
        if rows == self._deployment_rows and not force:
            return  # the same rows: no redraw of up to thousands of cells
        self._deployment_rows = rows
        selected = self._selected_deployment
        self.deployments_source.selected.indices = []
        _set_rows(self.deployments_table, charts.deployments_table(rows))
        self.deployments_table.height = _table_height(len(rows), most=560)
        paused = sum(1 for row in rows if row.get("paused"))
        waiting = sum((row.get("scheduled") or 0) + (row.get("late") or 0) for row in rows)
        self.deployments_count.text = _html(
            f"{len(rows)} deployment{'s' if len(rows) != 1 else ''} ({paused} paused), {waiting} run(s) waiting to start"
            f" · times in {time.strftime('%Z')}, this server's local time · select a row to see the deployment"
        )
        ids = [row.get("id") for row in rows]
        if selected in ids:
            self.deployments_source.selected.indices = [ids.index(selected)]
        else:
            self._show_deployment(None)

    def _deployment_selected(self, attr: str, old: list[int], new: list[int]) -> None:
        row = self._deployment_rows[new[0]] if new and new[0] < len(self._deployment_rows) else None
        self._show_deployment(row)

    def _show_deployment(self, row: dict[str, Any] | None) -> None:
        self._selected_deployment = row.get("id") if row else None
        last = (row or {}).get("last_run") or {}
        self.open_last_button.visible = bool(last.get("id"))
        self.deployment_detail.text = _deployment_detail(row) if row else ""

    def _open_last_run(self) -> None:
        row = next((r for r in self._deployment_rows if r.get("id") == self._selected_deployment), None)
        last = (row or {}).get("last_run") or {}
        if last.get("id"):
            self.open_run(last["id"])

    # ------------------------------------------------------------- run view
    def open_run(self, ref: str) -> None:
        """Switch to the run view of ``ref`` (an id, id prefix or run name)."""
        self.run_ref = ref
        self._shown_detail_version = None
        self._say("")
        self._schedule(self._load_run)

    def _open_now(self, ref: str) -> None:
        try:
            detail = self.source.detail(ref)
            logs = self.source.logs(detail.id)
        except RunNotFoundError as exc:
            self.show_runs()
            self._say(str(exc), error=True)
            return
        self.run_ref = detail.id
        self._render_run(detail, logs)

    async def _load_run(self) -> None:
        ref = self.run_ref
        if ref is None:
            return
        try:
            detail = await self._call(self.source.detail, ref)
        except RunNotFoundError as exc:
            self.run_ref = None
            self.body.children = [self.list_tabs]
            self._say(str(exc), error=True)
            return
        logs = await self._call(self.source.logs, detail.id)
        self.run_ref = detail.id
        self._render_run(detail, logs)

    async def _refresh_run(self) -> None:
        ref = self.run_ref
        if ref is None or self._shown_detail_version is None:
            return
        if await self._call(self.source.run_version, ref) == self._shown_detail_version:
            return  # nothing new (and no 10,000-row copy made to find out)
        detail = await self._call(self.source.detail, ref)
        if detail.version == self._shown_detail_version:
            return
        logs = await self._call(self.source.logs, detail.id)
        if self.run_ref == ref:
            self._update_run(detail, logs)

    def _render_run(self, detail: RunDetail, logs: list[dict[str, Any]]) -> None:
        back = Button(label="← back", width=110, css_classes=["daskflow-back"])
        back.on_click(lambda: self.show_runs())
        self.cancel_button = Button(label="Cancel run", button_type="danger", width=110, css_classes=["daskflow-cancel"])
        self.cancel_button.on_click(lambda: self._schedule(self._cancel))
        self.run_header = Div(text="", sizing_mode="stretch_width", css_classes=["daskflow-run-header"])
        self.run_progress = Div(text="", sizing_mode="stretch_width", css_classes=["daskflow-run-progress"])
        self.failure = PreText(text="", sizing_mode="stretch_width", css_classes=["daskflow-failure"], visible=False)
        self.failure_title = Div(text="", css_classes=["daskflow-failure-title"], visible=False)

        self.tasks_source = ColumnDataSource(charts.task_table([]))
        spec = [
            ("name", "Task run", 200),
            ("state", "State", 90),
            ("attempts", "Attempts", 70),
            ("duration", "Duration", 80),
            ("worker", "Worker", 170),
            ("cached", "Cache hit", 70),
            ("error", "Error", 420),
        ]
        task_columns = _columns(spec, color_field="color")
        task_columns[2].formatter = NumberFormatter(format="0")
        self.tasks_table = DataTable(
            source=self.tasks_source,
            columns=task_columns,
            sizing_mode="stretch_width",
            height=380,
            index_position=None,
            css_classes=["daskflow-tasks"],
        )
        self.tasks_source.selected.on_change("indices", self._task_selected)
        self.task_detail = PreText(text="Select a task run to see its error, traceback and logs.", sizing_mode="stretch_width", css_classes=["daskflow-task-detail"])

        self.timeline_note = Div(text="", css_classes=["daskflow-timeline-note"])
        self.timeline_source = ColumnDataSource(charts.timeline([]).data, name="daskflow-timeline")
        self.timeline_plot = figure(
            x_axis_type="datetime", y_range=FactorRange(factors=["-"]), height=320, sizing_mode="stretch_width",
            tools="xpan,xwheel_zoom,reset", toolbar_location="above",
        )
        # Coloured by task name, a white edge between runs (back-to-back runs stay apart, idle time shows as
        # gaps), hatched in the state's colour where a run failed, crashed or was cancelled.
        self.timeline_plot.hbar(
            y="lane", left="left", right="right", height=0.8, fill_color="fill", line_color="white", line_width=1,
            hatch_pattern="hatch", hatch_color="color", source=self.timeline_source,
        )
        self.timeline_plot.add_tools(HoverTool(tooltips=[("task run", "@name"), ("state", "@state"), ("duration", "@duration")]))
        self.timeline_legend = Div(text="", sizing_mode="stretch_width", css_classes=["daskflow-timeline-legend"])

        self.graph_note = Div(text="", css_classes=["daskflow-graph-note"])
        self.graph_nodes = ColumnDataSource(charts.dependency_graph([]).nodes, name="daskflow-graph-nodes")
        # Grouped by task name past a few tens of task runs; this draws every task run (up to charts.GRAPH_NODE_LIMIT).
        self.graph_full = Toggle(label="Show every task run", active=False, width=180, css_classes=["daskflow-graph-full"])
        self.graph_full.on_change("active", lambda attr, old, new: self._draw_graph())
        self.graph_edges = ColumnDataSource({"xs": [], "ys": []}, name="daskflow-graph-edges")
        self.graph_waits = ColumnDataSource({"xs": [], "ys": []})
        self.graph_plot = figure(
            height=420, sizing_mode="stretch_width", tools="pan,wheel_zoom,reset", toolbar_location="above",
            x_range=DataRange1d(range_padding=0.3), y_range=DataRange1d(range_padding=0.15),  # room for labels
        )
        self.graph_plot.axis.visible = False
        self.graph_plot.grid.visible = False
        self.graph_plot.multi_line(xs="xs", ys="ys", source=self.graph_edges, line_color="#90a4ae", line_width=1.5)
        self.graph_plot.multi_line(xs="xs", ys="ys", source=self.graph_waits, line_color="#90a4ae", line_dash="dashed", line_width=1.5)
        nodes = self.graph_plot.scatter(x="x", y="y", size="size", color="color", source=self.graph_nodes, line_color="#263238")
        self.graph_plot.add_tools(HoverTool(renderers=[nodes], tooltips=[("task run", "@name"), ("state", "@state"), ("", "@detail")]))
        self.graph_plot.add_layout(LabelSet(x="x", y="y", text="label", source=self.graph_nodes, x_offset="offset", y_offset=4, text_font_size="9pt"))
        self.graph_plot.add_layout(
            LabelSet(x="x", y="y", text="counts", source=self.graph_nodes, x_offset="offset", y_offset=-12, text_font_size="8pt", text_color="#546e7a")
        )

        self.logs_text = PreText(text="", sizing_mode="stretch_width", height=420, css_classes=["daskflow-logs"])
        self.artifacts_box = column(sizing_mode="stretch_width", css_classes=["daskflow-artifacts"])

        self.tabs = Tabs(
            tabs=[
                TabPanel(child=column(self.tasks_table, self.task_detail, sizing_mode="stretch_width"), title="Task runs"),
                TabPanel(child=column(self.timeline_note, self.timeline_plot, self.timeline_legend, sizing_mode="stretch_width"), title="Timeline"),
                TabPanel(child=column(row(self.graph_full, self.graph_note), self.graph_plot, sizing_mode="stretch_width"), title="Graph"),
                TabPanel(child=self.logs_text, title="Logs"),
                TabPanel(child=self.artifacts_box, title="Artifacts"),
            ],
            sizing_mode="stretch_width",
        )
        self.run_view = column(
            row(back, self.cancel_button),
            self.run_progress,
            self.run_header,
            self.failure_title,
            self.failure,
            self.tabs,
            sizing_mode="stretch_width",
        )
        self._artifacts_shown = -1
        self._update_run(detail, logs)
        self.body.children = [self.run_view]

    def _update_run(self, detail: RunDetail, logs: list[dict[str, Any]]) -> None:
        record = detail.record
        self._shown_detail_version = detail.version
        self._detail = detail
        self._logs = logs
        self.run_header.text = _run_header(record)
        self.run_progress.text = _run_progress(charts.progress_segments(detail.tasks))
        # A run that has not started has no driver to tell yet (`daskflow cancel` writes a request it reads when it starts).
        self.cancel_button.visible = not detail.finished and not is_waiting(record)
        self._show_failure(detail)
        selected = self.tasks_source.selected.indices
        selected_id = self._task_ids[selected[0]] if selected and selected[0] < len(self._task_ids) else None
        self._task_ids = [t["id"] for t in detail.tasks]
        _set_rows(self.tasks_table, charts.task_table(detail.tasks))
        self.tasks_table.height = _table_height(len(detail.tasks))
        if selected_id in self._task_ids:
            self._show_task(self._task_ids.index(selected_id))

        line = charts.timeline(detail.tasks)
        self.timeline_plot.y_range.factors = line.lanes or ["-"]
        self.timeline_source.data = line.data
        self.timeline_legend.text = _legend(line.task_colors, "hatched: failed, crashed or cancelled")
        self.timeline_note.text = _html(
            f"{line.shown} task runs on {len(line.lanes)} lane(s)"
            + (f"; more than {charts.TIMELINE_BAR_LIMIT}, so each bar is a time bin of a worker with the task runs in it" if line.aggregated else "")
        )
        self._draw_graph()

        shown = logs[-LOG_LINES_SHOWN:]
        head = f"[the last {len(shown)} of {len(logs)} lines; `daskflow logs {record['id'][:8]}` prints all]\n" if len(logs) > len(shown) else ""
        self.logs_text.text = head + "\n".join(_log_text(line) for line in shown) if shown else "(no log lines)"
        if len(detail.artifacts) != self._artifacts_shown:
            self._artifacts_shown = len(detail.artifacts)
            self.artifacts_box.children = _artifact_views(detail.artifacts) or [Div(text="(no artifacts)")]

    def _draw_graph(self) -> None:
        tasks = self._detail.tasks
        full = bool(self.graph_full.active)
        graph = charts.dependency_graph(tasks, full=full)
        self.graph_edges.data = graph.edges
        self.graph_waits.data = graph.wait_edges
        self.graph_nodes.data = graph.nodes
        # The toggle matters only where the two drawings differ.
        self.graph_full.visible = len(tasks) > charts.GRAPH_GROUP_AT
        note = f"{len(tasks)} task runs; solid edges are data, dashed ones wait_for"
        if graph.aggregated:
            past = charts.GRAPH_NODE_LIMIT if full or len(tasks) > charts.GRAPH_NODE_LIMIT else charts.GRAPH_GROUP_AT
            note += f"; more than {past}, so one node per task name with its task runs by state"
        if graph.omitted:
            note += f"; {graph.omitted} task names not drawn"
        self.graph_note.text = _html(note)

    def _show_failure(self, detail: RunDetail) -> None:
        failed = [t for t in detail.tasks if t.get("state", {}).get("type") in ("FAILED", "CRASHED")]
        trace = detail.record.get("traceback")
        if failed:
            first = failed[0]
            title = f"{len(failed)} task run(s) did not complete; the first is {first.get('name')} ({first['state'].get('name')})"
            text = first.get("traceback") or first.get("error") or first["state"].get("message") or ""
        elif trace:
            title, text = f"The flow run ended {detail.record['state'].get('name')}", trace
        else:
            self.failure.visible = self.failure_title.visible = False
            return
        self.failure_title.text = f'<b style="color:#b71c1c">{_html(title)}</b>'
        self.failure.text = text
        self.failure.visible = self.failure_title.visible = True

    def _task_selected(self, attr: str, old: list[int], new: list[int]) -> None:
        if new:
            self._show_task(new[0])

    def _show_task(self, index: int) -> None:
        task = self._detail.tasks[index] if index < len(self._detail.tasks) else None
        if task is None:
            return
        state = task.get("state", {})
        parts = [
            f"{task.get('name')}: {state.get('name')}" + (f" - {state.get('message')}" if state.get("message") else ""),
            f"attempts {task.get('attempts')}, worker {task.get('worker') or '-'}, cache key {task.get('cache_key') or '-'}"
            + (" (cache hit)" if task.get("cache_hit") else ""),
        ]
        if task.get("result_url"):
            parts.append(f"result: {task['result_url']}")
        if task.get("nested_runs"):
            parts.append("its own task runs: " + ", ".join(_named_run(run[-1], run[0]) or "" for run in task["nested_runs"]))
        if task.get("traceback") or task.get("error"):
            parts += ["", task.get("traceback") or task.get("error")]
        lines = [line for line in self._logs if line.get("tr") == task["id"]]
        if lines:
            parts += ["", "logs:", *(_log_text(line) for line in lines[-200:])]
        self.task_detail.text = "\n".join(str(p) for p in parts)

    async def _cancel(self) -> None:
        ref = self.run_ref
        if ref is None:
            return
        message = await self._call(self.source.cancel, ref, "cancelled from the status page")
        self._say(message)


def _run_header(record: dict[str, Any]) -> str:
    state = record.get("state", {})
    now = time.time()
    start = record.get("start_time")
    duration = format_duration(((record.get("end_time") or now) - start) if start else None)
    waiting = is_waiting(record)
    rows = [
        ("Flow", record.get("flow_name")),
        ("Run id", record.get("id")),
        ("Version", record.get("version")),
        ("Deployment", record.get("deployment_name")),
        ("Work queue", record.get("work_queue") if record.get("deployment_id") else None),
        ("Scheduled for", format_time(record["scheduled_time"]) if record.get("scheduled_time") else None),
        ("Created", format_time(record["created"]) if waiting and record.get("created") else None),
        ("Started", "not yet" if waiting else format_time(start)),
        ("Duration", None if waiting else duration),
        ("Tags", ", ".join(record.get("tags") or ())),
        ("Task runs", charts.task_counts_text(record)),
        ("Parameters", _parameters_table(record.get("parameters") or {})),
        ("Results", record.get("result_storage")),
        ("History", record.get("history_url")),
        ("Parent run", _named_run(record.get("parent_flow_run_name"), record.get("parent_flow_run_id"))),
        ("Started by task run", record.get("parent_task_run_name")),
    ]
    color = charts.state_color(state)
    message = ""
    if state.get("message"):
        # A waiting run's message is why it waits ("no worker serves queue 'gpu'; start one with ..."): say it plainly.
        label = '<b>Waiting:</b> ' if waiting else ""
        css = "daskflow-run-waiting" if waiting else "daskflow-run-message"
        message = f'<div class="{css}" style="color:{color if waiting else "#555"}">{label}{_html(state.get("message"))}</div>'
    return (
        f'<h3 style="margin:6px 0">{_html(record.get("name"))} '
        f'<span class="daskflow-run-state" style="color:{color}">{_html(state.get("name"))}</span></h3>'
        f"{message}{_table(rows)}"
    )


def _named_run(name: str | None, run_id: str | None) -> str | None:
    return f"{name} ({run_id})" if name and run_id else run_id


def _table(rows: list[tuple[str, Any]]) -> str:
    """A two-column table of label and (escaped) value, without the empty ones."""
    cells = "".join(
        f'<tr><th style="text-align:left;padding-right:12px;vertical-align:top">{_html(k)}</th><td>{v if isinstance(v, _Markup) else _html(v)}</td></tr>'
        for k, v in rows
        if v not in (None, "", "{}")
    )
    return f"<table>{cells}</table>"


def _deployment_detail(row: dict[str, Any]) -> str:
    """The selected deployment, every user-provided field escaped."""
    last = row.get("last_run") or {}
    waiting = ", ".join(f"{row[k]} {label}" for k, label in (("late", "Late"), ("scheduled", "Scheduled")) if row.get(k))
    rows = [
        ("Description", row.get("description")),
        ("Flow", row.get("flow")),
        ("Entrypoint", row.get("entrypoint")),
        ("Version", row.get("version")),
        ("Tags", ", ".join(row.get("tags") or ())),
        ("Schedule", row.get("schedules")),
        ("Next runs", ", ".join(format_time(t) for t in row.get("next_runs") or ()) or ("none while paused" if row.get("paused") else "none")),
        ("Paused", "yes: it fires nothing until `daskflow deployments resume`" if row.get("paused") else "no"),
        ("Work queue", row.get("queue")),
        ("Concurrency limit", row.get("concurrency")),
        ("Catch-up", row.get("catchup")),
        ("Parameters", row.get("parameters")),
        ("Last run", f"{last.get('name')} ({last.get('state_name')}, {format_time(last.get('time'))})" if last else "none yet"),
        ("Waiting runs", waiting or "none"),
        ("Updated", format_time(row["updated"]) if row.get("updated") else None),
    ]
    return f'<h3 style="margin:10px 0 4px">{_html(row.get("name"))}</h3>{_table(rows)}'


def _log_text(line: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(line.get("t") or 0))
    level = logging.getLevelName(line.get("l", 20))
    return f"{stamp} {level:<7} {line.get('tn') or 'flow'} | {line.get('m', '')}"


def _artifact_views(artifacts: list[dict[str, Any]]) -> list[Any]:
    views: list[Any] = []
    for artifact in artifacts:
        title = artifact.get("key") or artifact.get("type")
        owner = artifact.get("task_run_name") or "flow"
        description = f" - {_html(artifact.get('description'))}" if artifact.get("description") else ""
        views.append(Div(text=f"<h4 style='margin:10px 0 4px'>{_html(title)} <small>({_html(artifact.get('type'))} from {_html(owner)})</small></h4>{description}"))
        data = artifact.get("data")
        kind = artifact.get("type")
        if kind == "table" and isinstance(data, dict):
            names = [str(c) for c in data.get("columns") or ()]
            rows = data.get("rows") or []
            fields = [f"c{i}" for i in range(len(names))]
            columns_data = {f: [_cell(r[i]) if i < len(r) else "" for r in rows] for i, f in enumerate(fields)}
            widths = charts.table_widths(names, [[columns_data[f][r] for f in fields] for r in range(min(len(rows), 500))])
            table = DataTable(
                source=ColumnDataSource(columns_data),
                columns=[TableColumn(field=f, title=n, width=w, formatter=StringFormatter()) for f, n, w in zip(fields, names, widths)],
                # Each column as wide as its content; a table wider than the page scrolls sideways instead of cutting cells.
                autosize_mode="none",
                sizing_mode="stretch_width",
                height=min(40 + 25 * len(rows), 400),
                index_position=None,
                css_classes=["daskflow-artifact-table"],
            )
            views.append(table)
            chart = charts.table_chart(names, rows)
            if chart is not None:
                views.extend(_table_chart_views(chart, str(artifact.get("key") or len(views))))
        elif kind == "link" and isinstance(data, dict):
            views.append(Div(text=_safe_link(data.get("url"), data.get("text")), css_classes=["daskflow-artifact-link"]))
        elif kind == "progress" and isinstance(data, (int, float)) and not isinstance(data, bool):
            views.append(Div(text=_progress_bar(float(data)), css_classes=["daskflow-artifact-progress"]))
        elif kind == "image" and isinstance(data, dict):
            views.append(Div(text=_safe_image(data.get("url")), css_classes=["daskflow-artifact-image"]))
        else:
            views.append(PreText(text=str(data), sizing_mode="stretch_width", css_classes=["daskflow-artifact-text"]))
    return views


def _table_chart_views(chart: dict[str, Any], key: str) -> list[Any]:
    """A numeric table artifact as a dot plot: its value per label (``± spread`` whiskers), with per-fold points."""
    values = chart["values"]
    labels = values["label"]
    title = f"{chart['value_name']} per {chart['label_name']}"
    if chart["spread_name"]:
        title += f" (whiskers: ± {chart['spread_name']})"
    if chart["fold_names"]:
        title += f"; small dots: {', '.join(chart['fold_names'])}"
    if len(labels) >= charts.TABLE_CHART_ROWS:
        title += f"; the first {charts.TABLE_CHART_ROWS} rows"
    plot = figure(
        y_range=FactorRange(factors=list(reversed(labels))), height=max(160, 70 + 24 * len(labels)), sizing_mode="stretch_width",
        tools="xpan,xwheel_zoom,reset", toolbar_location="above", x_axis_label=str(chart["value_name"]),
        css_classes=["daskflow-artifact-chart"],
    )
    plot.ygrid.grid_line_color = None
    source = ColumnDataSource(values, name=f"daskflow-chart-{key}-values")
    plot.segment(x0="low", x1="high", y0="label", y1="label", source=source, line_color="#546e7a", line_width=2)
    if chart["points"]["label"]:
        points = ColumnDataSource(chart["points"], name=f"daskflow-chart-{key}-points")
        folds = plot.scatter(x="value", y="label", source=points, size=6, color="#90a4ae", alpha=0.8)
        plot.add_tools(HoverTool(renderers=[folds], tooltips=[("", "@label"), ("", "@fold"), ("value", "@value{0.0000}")]))
    means = plot.scatter(x="value", y="label", source=source, size=11, color="#1565c0", line_color="white")
    spread = [(f"± {chart['spread_name']}", "@spread{0.0000}")] if chart["spread_name"] else []
    plot.add_tools(HoverTool(renderers=[means], tooltips=[("", "@label"), (str(chart["value_name"]), "@value{0.0000}"), *spread]))
    return [Div(text=f'<span class="daskflow-artifact-chart-title" style="color:#37474f">{_html(title)}</span>'), plot]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _argument(arguments: dict[str, Any], name: str) -> str | None:
    """The first ``?name=`` of a request, stripped (``None`` if absent or empty)."""
    values = arguments.get(name) or []
    if not values:
        return None
    raw = values[0]
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).strip() or None


def status_document(source_factory: Callable[[], RunSource], dashboard_prefix: str = "") -> Callable[[Document], None]:
    """A Bokeh ``FunctionHandler`` body building a :class:`StatusPage` per session."""

    def make(doc: Document) -> None:
        request = doc.session_context.request if doc.session_context is not None else None
        arguments = request.arguments if request is not None else {}
        StatusPage(doc, source_factory(), dashboard_prefix, _argument(arguments, "run"), _argument(arguments, "view"))

    return make
