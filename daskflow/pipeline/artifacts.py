"""Artifacts: tables, markdown, links, progress and images attached to the current run (Prefect's names).

Created in a task, an artifact travels to the driver with the task's end report
(through the Dask scheduler on a cluster) and is persisted with the run's
history; created in the flow body, it is attached to the flow run directly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import InvalidOptionError, MissingContextError
from ..masking import mask_value
from ..runners.execute import TASK_RUN_CONTEXT
from .context import FLOW_RUN_CONTEXT, LOCAL_FLOW_RUNS
from .runs import Artifact, FlowRun, TaskRun

__all__ = [
    "ArtifactCursor",
    "artifact_from_report",
    "latest_artifact",
    "merge_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_image_artifact",
    "create_progress_artifact",
    "create_table_artifact",
    "update_progress_artifact",
]

_KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: Largest artifact accepted (as JSON): artifacts are summaries that travel in
#: the scheduler's event stream; store big data as a task result instead.
MAX_BYTES = 2 * 2**20


def create_table_artifact(table: Any, key: str | None = None, description: str | None = None) -> str:
    """Attach a table to the current task run or flow run.

    Parameters
    ----------
    table : list of dicts, dict of lists, list of lists, or a pandas DataFrame
        The rows. Cells should be numbers, strings, booleans or ``None``;
        numpy scalars become numbers, anything else its repr.
    key : str, optional
        A name for the artifact, shared by its versions across runs:
        lowercase letters, digits and dashes (``"cv-scores"``).
    description : str, optional
        Markdown shown with the table.

    Returns
    -------
    str
        The artifact's id.

    Examples
    --------
    >>> from daskflow import flow, create_table_artifact
    >>> @flow
    ... def report():
    ...     create_table_artifact([{"C": 0.1, "score": 0.93}, {"C": 1.0, "score": 0.95}], key="cv-scores")
    """
    columns, rows = _table(table)
    return _attach("table", key, description, {"columns": columns, "rows": rows})


def create_markdown_artifact(markdown: str, key: str | None = None, description: str | None = None) -> str:
    """Attach markdown text to the current task run or flow run; returns its id."""
    if not isinstance(markdown, str):
        raise InvalidOptionError(f"create_markdown_artifact takes a markdown string, got {type(markdown).__name__}")
    return _attach("markdown", key, description, markdown)


def create_link_artifact(link: str, link_text: str | None = None, key: str | None = None, description: str | None = None) -> str:
    """Attach a link (a stored model, a report) to the current run; returns its id."""
    if not isinstance(link, str) or not link.strip():
        raise InvalidOptionError(f"create_link_artifact takes a URL string, got {link!r}")
    if link_text is not None and not isinstance(link_text, str):
        raise InvalidOptionError(f"link_text must be a string, got {type(link_text).__name__}")
    return _attach("link", key, description, {"url": link, "text": link_text})


def create_progress_artifact(progress: float, key: str | None = None, description: str | None = None) -> str:
    """Attach a progress indicator (a percentage, 0 to 100) to the current run.

    Returns
    -------
    str
        The artifact's id, for :func:`update_progress_artifact`.

    Examples
    --------
    >>> from daskflow import task
    >>> from daskflow.artifacts import create_progress_artifact, update_progress_artifact
    >>> @task
    ... def crunch(items):
    ...     bar = create_progress_artifact(0.0, key="crunch")
    ...     for done, item in enumerate(items, 1):
    ...         update_progress_artifact(bar, 100 * done / len(items))
    """
    return _attach("progress", key, description, _progress(progress))


def update_progress_artifact(artifact_id: str, progress: float, description: str | None = None) -> str:
    """Set the progress (0 to 100) of a progress artifact created in the same task
    run or flow body; returns its id.

    Raises
    ------
    InvalidOptionError
        If the current run has no progress artifact of that id (one created by
        another task run cannot be changed from here).
    """
    value = _progress(progress)
    if description is not None and not isinstance(description, str):
        raise InvalidOptionError(f"artifact description must be a string, got {type(description).__name__}")
    artifact_id = str(artifact_id)
    changes: dict[str, Any] = {"data": value}
    if description is not None:
        changes["description"] = mask_value(description)
    task_context = TASK_RUN_CONTEXT.get()
    if task_context is not None:
        # Travels with the task's end report, like the artifact itself.
        if task_context.update_artifact(artifact_id, changes):
            return artifact_id
    else:
        flow_context = FLOW_RUN_CONTEXT.get()
        if flow_context is None:
            raise MissingContextError("update_progress_artifact() was called outside a flow or task run; call it inside a @flow or @task function")
        artifacts = flow_context.flow_run.artifacts
        for i, artifact in enumerate(artifacts):
            if artifact.id == artifact_id and artifact.type == "progress":
                # Artifacts are frozen records: replace the entry, do not change it.
                artifacts[i] = dataclasses.replace(artifact, **changes)
                return artifact_id
    raise InvalidOptionError(
        f"no progress artifact {artifact_id!r} in this run; update one created by create_progress_artifact() in the same task or flow body"
    )


def create_image_artifact(image_url: str, key: str | None = None, description: str | None = None) -> str:
    """Attach an image, by its URL (``https://...``), to the current run; returns its id.

    The status page shows http(s) URLs as an image and anything else as text.
    """
    if not isinstance(image_url, str) or not image_url.strip():
        raise InvalidOptionError(f"create_image_artifact takes an image URL string, got {image_url!r}")
    return _attach("image", key, description, {"url": image_url})


def _progress(progress: Any) -> float:
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not math.isfinite(progress) or not 0 <= progress <= 100:
        raise InvalidOptionError(f"progress must be a number from 0 to 100 (a percentage), got {progress!r}")
    return float(progress)


def _table(table: Any) -> tuple[list[str], list[list[Any]]]:
    to_dict = getattr(table, "to_dict", None)
    if callable(to_dict) and hasattr(table, "columns"):  # a pandas DataFrame
        split = to_dict(orient="split")
        return [str(c) for c in split["columns"]], [list(r) for r in split["data"]]
    if isinstance(table, Mapping):
        columns = [str(c) for c in table]
        values = list(table.values())
        if not all(_is_column(v) for v in values) or len({len(v) for v in values}) > 1:
            raise InvalidOptionError(
                "a table given as a dict needs a list per column, all of the same length; "
                f"got columns {columns} with lengths {[len(v) if _is_column(v) else None for v in values]}"
            )
        return columns, [list(row) for row in zip(*values)]
    if isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
        rows = list(table)
        if all(isinstance(r, Mapping) for r in rows):
            columns: dict[str, None] = {}
            for row in rows:
                columns.update(dict.fromkeys(str(c) for c in row))
            names = list(columns)
            return names, [[_get(row, name) for name in names] for row in rows]
        if all(_is_column(r) for r in rows):
            width = max((len(r) for r in rows), default=0)
            return [str(i) for i in range(width)], [list(r) for r in rows]
    raise InvalidOptionError(
        f"create_table_artifact takes a list of dicts, a dict of lists, a list of lists or a DataFrame, got {type(table).__name__}"
    )


def _is_column(value: Any) -> bool:
    """A list, tuple or array (anything sized and iterable but text)."""
    return not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__len__") and hasattr(value, "__iter__")


def _get(row: Mapping[Any, Any], name: str) -> Any:
    if name in row:
        return row[name]
    for key, value in row.items():  # non-string column names
        if str(key) == name:
            return value
    return None


def _attach(kind: str, key: str | None, description: str | None, data: Any) -> str:
    if key is not None and (not isinstance(key, str) or not _KEY.match(key)):
        raise InvalidOptionError(f"artifact key {key!r} must be lowercase letters, digits and dashes, like 'cv-scores'")
    if description is not None and not isinstance(description, str):
        raise InvalidOptionError(f"artifact description must be a string, got {type(description).__name__}")
    data = mask_value(data)
    size = len(json.dumps(data, default=str))
    if size > MAX_BYTES:
        raise InvalidOptionError(
            f"the {kind} artifact {key or ''} is {size} bytes as JSON, above the {MAX_BYTES} byte limit; "
            "attach a summary, and return the full data from a task (it is stored as a result)"
        )
    artifact = {"id": uuid.uuid4().hex, "type": kind, "key": key, "description": description, "data": data, "created": time.time()}
    task_context = TASK_RUN_CONTEXT.get()
    if task_context is not None:
        task_context.add_artifact(artifact)
        return artifact["id"]
    flow_context = FLOW_RUN_CONTEXT.get()
    if flow_context is not None:
        flow_context.flow_run.artifacts.append(artifact_from_report(artifact, None))
        return artifact["id"]
    raise MissingContextError(
        f"create_{kind}_artifact() was called outside a flow or task run; call it inside a @flow or @task function"
    )


def artifact_from_report(artifact: Mapping[str, Any], task_run: TaskRun | None) -> Artifact:
    """An :class:`Artifact` from its JSON form (as a task's report carries it)."""
    return Artifact(
        id=str(artifact["id"]),
        type=str(artifact["type"]),
        key=artifact.get("key"),
        description=artifact.get("description"),
        data=artifact.get("data"),
        created=float(artifact.get("created") or time.time()),
        task_run_id=task_run.id if task_run is not None else None,
        task_run_name=task_run.name if task_run is not None else None,
    )


def merge_artifact(flow_run: FlowRun, artifact: Mapping[str, Any], task_run: TaskRun | None) -> None:
    """Add a task's reported artifact to the run, or replace the copy of it a
    report sent earlier (a progress artifact travels again after each update)."""
    new = artifact_from_report(artifact, task_run)
    artifacts = flow_run.artifacts
    for i in range(len(artifacts) - 1, -1, -1):
        if artifacts[i].id == new.id:
            artifacts[i] = new
            return
    artifacts.append(new)


def latest_artifact(key: str | None, storage: Any = None) -> Artifact | None:
    """The newest artifact with ``key`` (any key if ``None``): see :meth:`Artifact.get`.

    History is read newest run first (one listing per run, as ``daskflow artifacts
    ls`` does) up to the first run that has one; its latest is compared with those
    of the runs going in this process. Of overlapping runs, an artifact made late by
    a run that started earlier loses to one of a run that started later.
    """
    from ..storage.records import History
    from ..storage.store import Store

    if key is not None and not isinstance(key, str):
        raise InvalidOptionError(f"Artifact.get takes an artifact key string like 'cv-scores', got {key!r}")
    if storage is not None and not isinstance(storage, (Store, str)):
        raise InvalidOptionError(f"storage must be a daskflow.Store or a URL like 's3://bucket/prefix', got {storage!r}")
    store = storage if isinstance(storage, Store) else Store(storage)
    candidates: list[Artifact] = []
    for context in list(LOCAL_FLOW_RUNS.values()):
        # Runs going here, with their history in this store: their newest artifacts may not be flushed yet.
        run = context.flow_run
        if run.state.is_final() or (run.history_url is not None and not run.history_url.startswith(store.url)):
            continue
        candidates += [dataclasses.replace(a, flow_run_id=run.id) for a in list(run.artifacts) if key is None or a.key == key]
    history = History(store)
    for entry in reversed(history.entries()):
        found = [a for a in history.artifacts(entry) if key is None or a.get("key") == key]
        if found:
            row = max(found, key=lambda a: a.get("created") or 0)
            candidates.append(
                Artifact(
                    id=str(row["id"]), type=str(row["type"]), key=row.get("key"), description=row.get("description"),
                    data=row.get("data"), created=float(row.get("created") or 0), task_run_id=row.get("task_run_id"),
                    task_run_name=row.get("task_run_name"), flow_run_id=entry.run_id,
                )
            )
            break
    return max(candidates, key=lambda a: a.created, default=None)


class ArtifactCursor:
    """Which of a run's artifacts a writer (the history, the status feed) has
    sent: new ones are due, and so are replaced ones (a progress update swaps
    in a new record under the same id); readers keep the last copy of an id."""

    def __init__(self) -> None:
        self._sent: dict[str, Artifact] = {}

    def due(self, artifacts: Sequence[Artifact]) -> list[Artifact]:
        """The artifacts not sent yet in their current form."""
        return [a for a in list(artifacts) if self._sent.get(a.id) is not a]

    def sent(self, artifacts: Sequence[Artifact]) -> None:
        """Remember ``artifacts`` as written."""
        for artifact in artifacts:
            self._sent[artifact.id] = artifact

