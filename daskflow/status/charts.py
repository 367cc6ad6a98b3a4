"""What the status page draws, as plain column data (no Bokeh here).

Every function takes the records of :mod:`daskflow.pipeline.history` and returns
``{column: [values]}`` dicts ready for a ``ColumnDataSource``. Past a limit the
timeline and the graph aggregate (time bins per worker; one node per task name),
so a run of 10,000 task runs never becomes 10,000 glyphs.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict
from typing import Any

from .._names import name_key
from .._times import format_duration, format_time
from .deployments import is_waiting

__all__ = [
    "GRAPH_GROUP_AT",
    "GRAPH_NODE_LIMIT",
    "TABLE_CHART_ROWS",
    "TASK_COLORS",
    "STATE_COLORS",
    "TIMELINE_BAR_LIMIT",
    "Graph",
    "Timeline",
    "dependency_graph",
    "deployments_table",
    "flow_choices",
    "flow_summary",
    "progress_segments",
    "run_time",
    "runs_over_time",
    "runs_table",
    "state_color",
    "table_chart",
    "table_widths",
    "task_counts_text",
    "task_table",
    "timeline",
]

#: Past this many task runs the timeline shows time bins per worker, not bars.
TIMELINE_BAR_LIMIT = 2_000
#: Past this many task runs the graph shows one node per task name, even when the full graph is asked for.
GRAPH_NODE_LIMIT = 400
#: Past this many task runs the graph starts grouped by task name (a toggle draws every task run, up to the limit).
GRAPH_GROUP_AT = 30
#: Nodes that get a text label (more would overlap into noise).
GRAPH_LABEL_LIMIT = 60
#: Time bins of an aggregated timeline.
TIMELINE_BINS = 150

STATE_COLORS = {
    "COMPLETED": "#2e7d32",
    "CACHED": "#4db6ac",
    "RUNNING": "#1e88e5",
    "PENDING": "#9e9e9e",
    # Dark enough to read as table text on white (these colour the state cells too).
    "SCHEDULED": "#607d8b",
    "LATE": "#9a6700",
    "FAILED": "#d32f2f",
    "CRASHED": "#6a1b9a",
    "CANCELLED": "#ef6c00",
    "SKIPPED": "#cfd8dc",
}
#: Colours of task names on the timeline, in order of first appearance (then again from the start).
TASK_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8",
    "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d",
)
#: States a timeline bar is hatched for: the task name's colour stays, the hatch says it went wrong.
_BAD_STATES = ("FAILED", "CRASHED", "CANCELLED")
# The state a group of task runs is colored by: the first of these any member is in.
_SEVERITY = ("FAILED", "CRASHED", "CANCELLED", "RUNNING", "PENDING", "SCHEDULED", "COMPLETED", "SKIPPED")


def state_color(state: dict[str, Any] | None, cache_hit: bool = False) -> str:
    """The colour of a state: by its type, with Late (a ``SCHEDULED`` type) and cache hits apart."""
    state = state or {}
    kind = state.get("type", "PENDING")
    if kind == "COMPLETED" and cache_hit:
        kind = "CACHED"
    elif kind == "SCHEDULED" and state.get("name") == "Late":
        kind = "LATE"
    return STATE_COLORS.get(kind, STATE_COLORS["PENDING"])


def run_time(record: dict[str, Any]) -> float:
    """When a run happens, to sort runs by: its start, or for one not started its scheduled time (else its creation)."""
    return float(record.get("start_time") or record.get("scheduled_time") or record.get("created") or 0)


def _duration(record: dict[str, Any], now: float) -> float | None:
    start = record.get("start_time")
    if not start:
        return None
    return (record.get("end_time") or now) - start


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def task_counts_text(record: dict[str, Any]) -> str:
    """A run's task runs by state, e.g. ``184 Cached`` or ``40 Completed, 2 Failed (3 cached)``.

    Cache hits end ``Cached``, so ``(N cached)`` is added only where the count
    says something ``Cached`` does not (hits whose state is another one).
    """
    counts = dict(record.get("task_counts") or {})
    cached = record.get("cached") or 0
    said = cached and cached != counts.get("Cached", 0)
    return _counts_text(counts) + (f" ({cached} cached)" if said else "")


def _tasks_text(record: dict[str, Any]) -> str:
    counts = dict(record.get("task_counts") or {})
    if not counts and is_waiting(record):
        # No task runs yet: say when it is due and why it waits instead.
        when = record.get("scheduled_time")
        message = _first_line(record.get("state", {}).get("message"))
        return (f"scheduled for {format_time(when)}" if when else "not started") + (f": {message}" if message else "")
    return task_counts_text(record)


#: The order of a progress bar's segments: done first, then going, then waiting, then the bad news.
_PROGRESS_ORDER = ("COMPLETED", "CACHED", "RUNNING", "PENDING", "SCHEDULED", "LATE", "FAILED", "CRASHED", "CANCELLED", "SKIPPED")


def progress_segments(tasks: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """A run's task runs by state as ``(state name, count, colour)``, in progress-bar order.

    A cache hit is its own segment (``Cached``), whatever its state is called.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for task in tasks:
        state = task.get("state", {})
        kind = state.get("type", "PENDING")
        name = state.get("name") or kind.title()
        if kind == "COMPLETED" and task.get("cache_hit"):
            kind, name = "CACHED", "Cached"
        elif kind == "SCHEDULED" and name == "Late":
            kind = "LATE"
        counts[(kind, name)] += 1
    rank = {kind: i for i, kind in enumerate(_PROGRESS_ORDER)}
    ordered = sorted(counts.items(), key=lambda item: (rank.get(item[0][0], len(rank)), item[0][1]))
    return [(name, n, STATE_COLORS.get(kind, STATE_COLORS["PENDING"])) for (kind, name), n in ordered]


def flow_choices(records: list[dict[str, Any]]) -> list[str]:
    """The flow filter's names, sorted: one per flow, as its newest run (``records`` newest first) spells it.

    ``hpo_kfold`` and ``hpo-kfold`` are one flow (the filter matches both, see
    :func:`~daskflow._names.same_name`), so a history older than hyphenated
    default names lists it once.
    """
    flows: dict[str, str] = {}
    for record in records:
        name = record.get("flow_name") or ""
        flows.setdefault(name_key(name), name)
    return sorted(flows.values())


def runs_table(records: list[dict[str, Any]], now: float | None = None) -> dict[str, list[Any]]:
    """One row per flow run for the runs table (a run not started has ``-`` for start and duration)."""
    now = time.time() if now is None else now
    fields = ("id", "short_id", "name", "flow", "state", "start", "duration", "tags", "tasks", "deployment", "color")
    columns: dict[str, list[Any]] = {k: [] for k in fields}
    for record in records:
        columns["id"].append(record["id"])
        columns["short_id"].append(record["id"][:8])
        columns["name"].append(record.get("name") or "")
        columns["flow"].append(record.get("flow_name") or "")
        columns["state"].append(record.get("state", {}).get("name", ""))
        columns["start"].append(format_time(record.get("start_time")))
        columns["duration"].append(format_duration(_duration(record, now)))
        columns["tags"].append(", ".join(record.get("tags") or ()))
        columns["tasks"].append(_tasks_text(record))
        columns["deployment"].append(record.get("deployment_name") or "")
        columns["color"].append(state_color(record.get("state", {})))
    return columns


def _short_time(timestamp: float) -> str:
    return format_time(timestamp)[:16]  # to the minute: three fit in a cell


def _waiting_text(row: dict[str, Any]) -> str:
    parts = [f"{row[key]} {label}" for key, label in (("late", "Late"), ("scheduled", "Scheduled")) if row.get(key)]
    return ", ".join(parts)


def deployments_table(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """One row per deployment (rows of :func:`daskflow.status.deployments.deployment_rows`)."""
    fields = (
        "id", "name", "flow", "schedules", "next", "last_state", "last_time", "last_id", "paused", "queue", "waiting",
        "last_color", "waiting_color",
    )
    columns: dict[str, list[Any]] = {k: [] for k in fields}
    for row in rows:
        last = row.get("last_run") or {}
        columns["id"].append(row.get("id") or "")
        columns["name"].append(row.get("name") or "")
        columns["flow"].append(row.get("flow") or "")
        columns["schedules"].append(row.get("schedules") or "")
        nxt = row.get("next_runs") or []
        columns["next"].append(", ".join(_short_time(t) for t in nxt) if nxt else ("- (paused)" if row.get("paused") else "-"))
        columns["last_state"].append(last.get("state_name") or "-")
        columns["last_time"].append(format_time(last.get("time")) if last else "-")
        columns["last_id"].append(last.get("id") or "")
        columns["paused"].append("paused" if row.get("paused") else "")
        columns["queue"].append(row.get("queue") or "")
        columns["waiting"].append(_waiting_text(row))
        columns["last_color"].append(state_color({"type": last.get("state_type"), "name": last.get("state_name")}) if last else STATE_COLORS["PENDING"])
        columns["waiting_color"].append(STATE_COLORS["LATE"] if row.get("late") else STATE_COLORS["SCHEDULED"])
    return columns


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 200 else line[:199] + "…"


def task_table(tasks: list[dict[str, Any]], now: float | None = None) -> dict[str, list[Any]]:
    """One row per task run: state, attempts, duration, worker, cache hit, error.

    Only what the table shows: at 10,000 rows every column is ~100 kB to send.
    """
    now = time.time() if now is None else now
    columns: dict[str, list[Any]] = {
        k: [] for k in ("name", "state", "attempts", "duration", "worker", "cached", "error", "color")
    }
    for task in tasks:
        state = task.get("state", {})
        seconds = _duration(task, now)
        columns["name"].append(task.get("name") or "")
        columns["state"].append(state.get("name", ""))
        columns["attempts"].append(task.get("attempts") or 0)
        columns["duration"].append(format_duration(seconds))
        columns["worker"].append(task.get("worker") or "")
        columns["cached"].append("yes" if task.get("cache_hit") else "")
        columns["error"].append(_first_line(task.get("error") or (state.get("message") if state.get("type") in ("FAILED", "CRASHED") else "")))
        columns["color"].append(state_color(state, bool(task.get("cache_hit"))))
    return columns


class Timeline:
    """Bars (or time bins) per worker lane; times in ms since the epoch (Bokeh's datetime).

    ``data["fill"]`` is the task name's colour (``task_colors`` maps each name to
    it), ``data["color"]`` the state's, ``data["hatch"]`` ``"x"`` for a run
    that failed, crashed or was cancelled.
    """

    def __init__(self, data: dict[str, list[Any]], lanes: list[str], aggregated: bool, shown: int, task_colors: dict[str, str]) -> None:
        self.data = data
        self.lanes = lanes
        self.aggregated = aggregated
        #: Task runs that had a start time (the others are not on the timeline).
        self.shown = shown
        self.task_colors = task_colors


def _task_name(task: dict[str, Any]) -> str:
    return task.get("task_name") or task.get("name") or ""


def _task_colors(tasks: list[dict[str, Any]]) -> dict[str, str]:
    colors: dict[str, str] = {}
    for task in tasks:
        name = _task_name(task)
        if name not in colors:
            colors[name] = TASK_COLORS[len(colors) % len(TASK_COLORS)]
    return colors


def _lane(task: dict[str, Any]) -> str:
    worker = task.get("worker")
    if worker:
        return str(worker)
    return "cache (no worker)" if task.get("cache_hit") else "driver / not started"


def timeline(tasks: list[dict[str, Any]], now: float | None = None, limit: int = TIMELINE_BAR_LIMIT, bins: int = TIMELINE_BINS) -> Timeline:
    """The task runs on a time axis, one lane per worker.

    Up to ``limit`` task runs, one bar each. Past it, the run's span is cut into
    ``bins`` intervals and each lane gets one bar per busy interval, saying how
    many task runs of which names ran in it, colored by the worst state there.
    """
    now = time.time() if now is None else now
    timed = [t for t in tasks if t.get("start_time")]
    lanes = sorted({_lane(t) for t in timed})
    colors = _task_colors(timed)
    fields = ("lane", "left", "right", "color", "fill", "hatch", "task", "name", "state", "duration")
    if len(timed) <= limit:
        data: dict[str, list[Any]] = {k: [] for k in fields}
        for task in timed:
            start = task["start_time"]
            end = task.get("end_time") or now
            state = task.get("state", {})
            data["lane"].append(_lane(task))
            data["left"].append(start * 1000)
            data["right"].append(max(end, start) * 1000)
            data["color"].append(state_color(state, bool(task.get("cache_hit"))))
            data["fill"].append(colors[_task_name(task)])
            data["hatch"].append("x" if state.get("type") in _BAD_STATES else " ")
            data["task"].append(_task_name(task))
            data["name"].append(task.get("name") or "")
            data["state"].append(state.get("name", "") + (" (cache hit)" if task.get("cache_hit") else ""))
            data["duration"].append(format_duration(end - start))
        return Timeline(data, lanes, False, len(timed), colors)

    first = min(t["start_time"] for t in timed)
    last = max(t.get("end_time") or now for t in timed)
    width = max(last - first, 1e-3) / bins
    names: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    states: dict[tuple[str, int], set[str]] = defaultdict(set)
    for task in timed:
        lane = _lane(task)
        start = task["start_time"]
        end = task.get("end_time") or now
        low = min(int((start - first) / width), bins - 1)
        high = min(int((max(end, start) - first) / width), bins - 1)
        name = _task_name(task)
        kind = task.get("state", {}).get("type", "PENDING")
        for slot in range(low, high + 1):
            names[(lane, slot)][name] += 1
            states[(lane, slot)].add(kind)
    data = {k: [] for k in fields}
    for (lane, slot), counter in sorted(names.items()):
        worst = next((s for s in _SEVERITY if s in states[(lane, slot)]), "PENDING")
        most = counter.most_common(1)[0][0]  # the bin takes the colour of the task name most of its runs have
        data["lane"].append(lane)
        data["left"].append((first + slot * width) * 1000)
        data["right"].append((first + (slot + 1) * width) * 1000)
        data["color"].append(STATE_COLORS.get(worst, STATE_COLORS["PENDING"]))
        data["fill"].append(colors[most])
        data["hatch"].append("x" if worst in _BAD_STATES else " ")
        data["task"].append(most)
        data["name"].append(", ".join(f"{name} ×{n}" for name, n in counter.most_common(4)) + (" …" if len(counter) > 4 else ""))
        data["state"].append(worst.title())
        data["duration"].append(format_duration(width))
    return Timeline(data, lanes, True, len(timed), colors)


class Graph:
    """Nodes and edges of a run's dependency graph, laid out left to right."""

    def __init__(
        self,
        nodes: dict[str, list[Any]],
        edges: dict[str, list[Any]],
        wait_edges: dict[str, list[Any]],
        aggregated: bool,
        omitted: int,
    ) -> None:
        self.nodes = nodes
        self.edges = edges
        self.wait_edges = wait_edges
        self.aggregated = aggregated
        #: Nodes left out past the limit (aggregated graphs with that many task names).
        self.omitted = omitted


def _depths(tasks: list[dict[str, Any]]) -> dict[str, int]:
    # Task runs are created after their upstreams (seq order is topological),
    # so one pass gives each its longest distance from a source.
    depth: dict[str, int] = {}
    for task in tasks:
        ups = [depth[u] for u in (*task.get("upstream", ()), *task.get("wait_for", ())) if u in depth]
        depth[task["id"]] = 1 + max(ups) if ups else 0
    return depth


def _positions(depth_of: dict[str, int], order: list[str]) -> dict[str, tuple[float, float]]:
    layers: dict[int, list[str]] = defaultdict(list)
    for node in order:
        layers[depth_of[node]].append(node)
    out = {}
    for depth, members in layers.items():
        middle = (len(members) - 1) / 2
        for i, node in enumerate(members):
            out[node] = (float(depth), middle - i)
    return out


def _edge_data(pairs: list[tuple[str, str]], pos: dict[str, tuple[float, float]]) -> dict[str, list[Any]]:
    data: dict[str, list[Any]] = {"xs": [], "ys": []}
    for a, b in pairs:
        if a in pos and b in pos:
            data["xs"].append([pos[a][0], pos[b][0]])
            data["ys"].append([pos[a][1], pos[b][1]])
    return data


def dependency_graph(tasks: list[dict[str, Any]], limit: int = GRAPH_NODE_LIMIT, group_at: int = GRAPH_GROUP_AT, full: bool = False) -> Graph:
    """Task runs and the edges futures (solid) and ``wait_for`` (dashed) made.

    Up to ``group_at`` task runs (``limit`` with ``full``), one node each. Past
    it, one node per task name (``fit ×500``, its counts by state beside it)
    colored by the worst state among its runs, with one edge per pair of names;
    if even the names exceed ``limit``, the first ``limit`` are drawn and the
    rest counted in ``omitted``. Grouping that would not merge any two task
    runs (every name once) is not done.
    """
    depth = _depths(tasks)
    columns = ("x", "y", "name", "state", "color", "size", "offset", "label", "counts", "detail")
    nodes: dict[str, list[Any]] = {k: [] for k in columns}
    group_of = {t["id"]: _task_name(t) for t in tasks}
    merges = len(set(group_of.values())) < len(tasks)
    if len(tasks) <= (limit if full else min(group_at, limit)) or (len(tasks) <= limit and not merges):
        pos = _positions(depth, [t["id"] for t in tasks])
        data_pairs = [(u, t["id"]) for t in tasks for u in t.get("upstream", ())]
        wait_pairs = [(u, t["id"]) for t in tasks for u in t.get("wait_for", ())]
        for task in tasks:
            state = task.get("state", {})
            x, y = pos[task["id"]]
            nodes["x"].append(x)
            nodes["y"].append(y)
            nodes["name"].append(task.get("name") or "")
            nodes["state"].append(state.get("name", ""))
            nodes["color"].append(state_color(state, bool(task.get("cache_hit"))))
            nodes["size"].append(14)
            nodes["offset"].append(9)
            nodes["label"].append((task.get("name") or "") if len(tasks) <= GRAPH_LABEL_LIMIT else "")
            nodes["counts"].append("")
            nodes["detail"].append("cached" if task.get("cache_hit") else "")
        return Graph(nodes, _edge_data(data_pairs, pos), _edge_data(wait_pairs, pos), False, 0)

    members: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in tasks:
        members[group_of[task["id"]]].append(task)
    groups = list(members)[:limit]
    omitted = len(members) - len(groups)
    group_depth = {g: min(depth[t["id"]] for t in members[g]) for g in groups}
    pos = _positions(group_depth, groups)
    kept = set(groups)

    def pairs(field: str) -> list[tuple[str, str]]:
        seen = set()
        for task in tasks:
            for upstream in task.get(field, ()):
                a, b = group_of.get(upstream), group_of[task["id"]]
                if a is not None and a != b and a in kept and b in kept:
                    seen.add((a, b))
        return sorted(seen)

    biggest = max(len(m) for m in members.values())
    for group in groups:
        runs = members[group]
        kinds = Counter(t.get("state", {}).get("type", "PENDING") for t in runs)
        worst = next((s for s in _SEVERITY if kinds.get(s)), "PENDING")
        names = Counter(t.get("state", {}).get("name", "") for t in runs)
        x, y = pos[group]
        nodes["x"].append(x)
        nodes["y"].append(y)
        nodes["name"].append(f"{group} ×{len(runs)}")
        nodes["state"].append(_counts_text(dict(names)))
        nodes["color"].append(STATE_COLORS.get(worst, STATE_COLORS["PENDING"]))
        nodes["size"].append(14 + 26 * (len(runs) / biggest) ** 0.5)
        nodes["offset"].append(nodes["size"][-1] / 2 + 3)  # labels clear of the node's circle
        labelled = len(groups) <= GRAPH_LABEL_LIMIT
        nodes["label"].append((f"{group} ×{len(runs)}" if len(runs) > 1 else group) if labelled else "")
        nodes["counts"].append(_counts_text(dict(names)) if labelled else "")
        cached = sum(1 for t in runs if t.get("cache_hit"))
        nodes["detail"].append(f"{cached} cached" if cached else "")
    return Graph(nodes, _edge_data(pairs("upstream"), pos), _edge_data(pairs("wait_for"), pos), True, omitted)


#: Pixels a table artifact's column takes per character (SlickGrid's 13 px sans-serif), its padding, and its bounds.
_CHAR_PX, _PAD_PX, _MIN_PX, _MAX_PX = 7.5, 18, 50, 640
#: Columns one value per fold (or split) of a cross-validation: points of a setting's spread.
_FOLD_COLUMN = re.compile(r"^(fold|split|cv)[_ -]?\d+([_ -].*)?$|^(split|fold)\d+_test_score$", re.IGNORECASE)


def table_widths(names: list[str], rows: list[list[str]]) -> list[int]:
    """Column widths in pixels wide enough for the title and every shown cell (up to a bound)."""
    widths = []
    for i, name in enumerate(names):
        longest = max([len(str(name)), *(len(r[i]) for r in rows if i < len(r))])
        widths.append(int(min(max(_PAD_PX + _CHAR_PX * longest, _MIN_PX), _MAX_PX)))
    return widths


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


#: Rows of a table artifact its chart draws (the first ones: a CV table is best first).
TABLE_CHART_ROWS = 60


def _missing(value: Any) -> bool:
    # NaN and infinities come back from the JSON routes as strings; a missing cell is no reason not to draw the rest.
    return value is None or value in ("", "NaN", "Infinity", "-Infinity") or (isinstance(value, float) and not math.isfinite(value))


def table_chart(names: list[str], rows: list[list[Any]]) -> dict[str, Any] | None:
    """What to draw of a numeric table artifact, or ``None`` where it has nothing to draw.

    One row per label: the first column of distinct text values (else the row
    number). The value is the first numeric column named ``mean...`` or
    ``avg...`` (else the first numeric one that is not a rank); its spread is
    ``± std...`` where a ``std...`` column exists, and the per-fold points where
    columns ``fold_0``, ``fold_1``, ... (or scikit-learn's ``split0_test_score``)
    do. For a cross-validation table: mean score per setting with the folds.
    """
    if not rows or not names:
        return None
    rows = rows[:TABLE_CHART_ROWS]
    columns = [[r[i] if i < len(r) else None for r in rows] for i in range(len(names))]
    numeric = [i for i, col in enumerate(columns) if all(_number(v) is not None or _missing(v) for v in col) and any(_number(v) is not None for v in col)]
    if not numeric:
        return None
    lower = [str(n).lower() for n in names]
    value = next((i for i in numeric if lower[i].startswith(("mean", "avg", "average"))), None)
    if value is None:
        value = next((i for i in numeric if lower[i] not in ("rank", "index", "id", "#") and not _FOLD_COLUMN.match(lower[i])), None)
    if value is None:
        return None
    text = [i for i, col in enumerate(columns) if all(isinstance(v, str) and v for v in col) and len(set(col)) == len(col)]
    labels = [str(v) for v in columns[text[0]]] if text else [str(n + 1) for n in range(len(rows))]
    std = next((i for i in numeric if lower[i].startswith(("std", "stdev", "sd_", "sem"))), None)
    folds = [i for i in numeric if _FOLD_COLUMN.match(lower[i])]
    chart: dict[str, Any] = {
        "label_name": names[text[0]] if text else "row",
        "value_name": names[value],
        "spread_name": names[std] if std is not None else None,
        "fold_names": [names[i] for i in folds],
        "values": {"label": [], "value": [], "low": [], "high": [], "spread": []},
        "points": {"label": [], "value": [], "fold": []},
    }
    for r, label in enumerate(labels):
        mean = _number(columns[value][r])
        if mean is None:
            continue
        spread = _number(columns[std][r]) if std is not None else None
        chart["values"]["label"].append(label)
        chart["values"]["value"].append(mean)
        chart["values"]["low"].append(mean - spread if spread is not None else mean)
        chart["values"]["high"].append(mean + spread if spread is not None else mean)
        chart["values"]["spread"].append(spread if spread is not None else float("nan"))
        for i in folds:
            point = _number(columns[i][r])
            if point is not None:
                chart["points"]["label"].append(label)
                chart["points"]["value"].append(point)
                chart["points"]["fold"].append(names[i])
    return chart if chart["values"]["label"] else None


def runs_over_time(records: list[dict[str, Any]], now: float | None = None) -> dict[str, list[Any]]:
    """One point per flow run: when it happens (ms since the epoch) by how long it took, coloured by its state.

    A run that has not started sits at duration 0 at its scheduled time.
    """
    now = time.time() if now is None else now
    fields = ("time", "seconds", "color", "state", "name", "flow", "duration", "when")
    data: dict[str, list[Any]] = {k: [] for k in fields}
    for record in records:
        seconds = _duration(record, now)
        state = record.get("state", {})
        data["time"].append(run_time(record) * 1000)
        data["seconds"].append(max(seconds or 0.0, 0.0))
        data["color"].append(state_color(state))
        data["state"].append(state.get("name", ""))
        data["name"].append(record.get("name") or "")
        data["flow"].append(record.get("flow_name") or "")
        data["duration"].append(format_duration(seconds))
        data["when"].append(format_time(run_time(record)))
    return data


def flow_summary(records: list[dict[str, Any]], now: float | None = None) -> dict[str, list[Any]]:
    """One row per flow: its runs, its last run, the success rate of its finished runs, their median duration."""
    now = time.time() if now is None else now
    by_flow: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=run_time, reverse=True):
        by_flow.setdefault(name_key(record.get("flow_name") or ""), []).append(record)
    fields = ("flow", "runs", "last", "last_state", "last_time", "success", "median", "last_color")
    data: dict[str, list[Any]] = {k: [] for k in fields}
    for runs in sorted(by_flow.values(), key=lambda rs: (rs[0].get("flow_name") or "").lower()):
        last = next((r for r in runs if not is_waiting(r)), runs[0])  # the newest that ran: a scheduled one says little
        finished = [r for r in runs if r.get("end_time") and r.get("state", {}).get("type") not in ("RUNNING", "PENDING", "SCHEDULED")]
        completed = [r for r in finished if r.get("state", {}).get("type") == "COMPLETED"]
        durations = sorted(d for d in (_duration(r, now) for r in finished) if d is not None)
        middle = len(durations) // 2
        median = (durations[middle] if len(durations) % 2 else (durations[middle - 1] + durations[middle]) / 2) if durations else None
        data["flow"].append(runs[0].get("flow_name") or "")
        data["runs"].append(len(runs))
        data["last"].append(last.get("name") or "")
        data["last_state"].append(last.get("state", {}).get("name", ""))
        data["last_time"].append(format_time(run_time(last)))
        data["success"].append(f"{100 * len(completed) / len(finished):.0f}% of {len(finished)}" if finished else "-")
        data["median"].append(format_duration(median))
        data["last_color"].append(state_color(last.get("state", {})))
    return data
