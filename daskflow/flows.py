"""Prefect's ``prefect.flows`` path: daskflow's :func:`flow`, :class:`Flow` and :func:`serve`."""

from __future__ import annotations

from ._absent import module_getattr
from .deployments.serve import serve
from .pipeline.flow import Flow, flow

__all__ = ["Flow", "flow", "serve"]


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
