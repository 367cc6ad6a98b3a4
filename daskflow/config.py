"""daskflow's defaults in the ``daskflow`` namespace of ``dask.config``.

Set them in a YAML file of the Dask config folder, with environment variables
(``DASK_DASKFLOW__LOGGING__LEVEL=DEBUG``) or in code with ``dask.config.set``.
"""

from __future__ import annotations

import os

import dask.config
import yaml

__all__ = ["DEFAULTS_FILE", "log_level"]

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
