"""Prefect's ``prefect.flow_runs``: not part of daskflow; importing it (or a submodule) raises the reason (``daskflow._absent``)."""

from daskflow._absent import raise_for_module

raise_for_module(__name__)
