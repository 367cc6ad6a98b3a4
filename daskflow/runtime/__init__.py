"""The current run's facts under Prefect 3's module name (``prefect.runtime``).

``from daskflow.runtime import flow_run, task_run, deployment``; each attribute
is read when accessed, from the run the calling code belongs to (also in a task
on a Dask worker). Outside a run they read as Prefect's do (``None``, ``[]``,
``{}``, ``0``), unless an environment variable
``DASKFLOW__RUNTIME__<MODULE>__<ATTRIBUTE>`` (``DASKFLOW__RUNTIME__FLOW_RUN__NAME``)
sets one, for testing code that reads them.
"""

from .._absent import module_getattr
from . import deployment, flow_run, task_run

__all__ = ["deployment", "flow_run", "task_run"]


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
