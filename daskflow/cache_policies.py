"""Cache policies under Prefect 3's module name (``from prefect.cache_policies
import INPUTS`` becomes ``from daskflow.cache_policies import INPUTS``)."""

from ._absent import module_getattr
from .pipeline.cache import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    NONE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
)

__all__ = ["DEFAULT", "FLOW_PARAMETERS", "INPUTS", "NONE", "NO_CACHE", "RUN_ID", "TASK_SOURCE", "CacheKeyFnPolicy", "CachePolicy"]


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
