"""Run loggers under Prefect 3's module name ``prefect.logging`` (defined in
:mod:`daskflow.logging.loggers`, Prefect's own submodule path)."""

from .._absent import module_getattr
from .eavesdropper import LogEavesdropper
from .loggers import disable_run_logger, flow_run_logger, get_logger, get_run_logger, task_run_logger

__all__ = ["LogEavesdropper", "disable_run_logger", "flow_run_logger", "get_logger", "get_run_logger", "task_run_logger"]


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
