"""Artifacts under Prefect 3's module name (``prefect.artifacts``).

``Artifact`` is daskflow's artifact record; ``Artifact.get(key)`` reads the latest
artifact of a key from the run history.

The ``acreate_*`` functions are the same calls for ``async`` code: attaching an
artifact does no I/O (it travels with the run's reports), so they return at once.
"""

from __future__ import annotations

from typing import Any

from ._absent import module_getattr
from .pipeline.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from .pipeline.runs import Artifact

__all__ = [
    "Artifact",
    "acreate_image_artifact",
    "acreate_link_artifact",
    "acreate_markdown_artifact",
    "acreate_progress_artifact",
    "acreate_table_artifact",
    "aupdate_progress_artifact",
    "create_image_artifact",
    "create_link_artifact",
    "create_markdown_artifact",
    "create_progress_artifact",
    "create_table_artifact",
    "update_progress_artifact",
]


async def acreate_table_artifact(table: Any, key: str | None = None, description: str | None = None) -> str:
    """:func:`create_table_artifact` for async code."""
    return create_table_artifact(table, key=key, description=description)


async def acreate_markdown_artifact(markdown: str, key: str | None = None, description: str | None = None) -> str:
    """:func:`create_markdown_artifact` for async code."""
    return create_markdown_artifact(markdown, key=key, description=description)


async def acreate_link_artifact(link: str, link_text: str | None = None, key: str | None = None, description: str | None = None) -> str:
    """:func:`create_link_artifact` for async code."""
    return create_link_artifact(link, link_text=link_text, key=key, description=description)


async def acreate_progress_artifact(progress: float, key: str | None = None, description: str | None = None) -> str:
    """:func:`create_progress_artifact` for async code."""
    return create_progress_artifact(progress, key=key, description=description)


async def aupdate_progress_artifact(artifact_id: str, progress: float, description: str | None = None) -> str:
    """:func:`update_progress_artifact` for async code."""
    return update_progress_artifact(artifact_id, progress, description=description)


async def acreate_image_artifact(image_url: str, key: str | None = None, description: str | None = None) -> str:
    """:func:`create_image_artifact` for async code."""
    return create_image_artifact(image_url, key=key, description=description)


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
