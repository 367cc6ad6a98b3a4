"""daskflow's defaults in the ``daskflow`` namespace of ``dask.config``.

Set them in a YAML file of the Dask config folder, with environment variables
(``DASK_DASKFLOW__LOGGING__LEVEL=DEBUG``) or in code with ``dask.config.set``.
"""

from __future__ import annotations

import os

import dask.config
import yaml

__all__ = ["DEFAULTS_FILE", "log_level", "seconds"]

DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "daskflow.yaml")

with open(DEFAULTS_FILE) as _file:
    # Defaults only: values from the user's config files and environment win.
    dask.config.update_defaults(yaml.safe_load(_file))


def log_level() -> int:
    """The configured ``daskflow.logging.level`` as a number.

    Raises
    ------
    InvalidOptionError
        If it is not a logging level name or number.
    """
    import logging

    from .exceptions import InvalidOptionError

    value = dask.config.get("daskflow.logging.level")
    level = value if isinstance(value, int) else logging.getLevelName(str(value).upper())
    if not isinstance(level, int):
        raise InvalidOptionError(
            f"daskflow.logging.level is {value!r}; use DEBUG, INFO, WARNING, ERROR or a number "
            "(dask.config.set({'daskflow.logging.level': 'INFO'}) or DASK_DASKFLOW__LOGGING__LEVEL=INFO)"
        )
    return level


def seconds(key: str, default: float) -> float:
    """The configured number of seconds at ``key`` (``daskflow.history.heartbeat``).

    Raises
    ------
    InvalidOptionError
        If it is not a finite number of 0 or more, naming the key and an example.
    """
    import math

    from .exceptions import InvalidOptionError

    value = dask.config.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise InvalidOptionError(f"{key} is {value!r}; give a number of seconds of 0 or more, like {default}")
    return number
