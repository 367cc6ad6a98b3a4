"""Prefect's ``prefect.flows`` path: daskflow's :func:`flow` and :class:`Flow`."""

from __future__ import annotations

from .pipeline.flow import Flow, flow

__all__ = ["Flow", "flow"]
