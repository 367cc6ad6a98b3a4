"""Deployments, schedules and the serve loop: scheduled flow runs on the Dask cluster."""
