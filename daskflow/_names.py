"""When two flow (or deployment, or run) names are the same name.

A flow without ``name=`` is named after its function with ``_`` turned into
``-``, as in Prefect 3 (``def train_model`` is ``train-model``). daskflow
before that kept the function name (``train_model``), and histories and
deployment registries written then hold that spelling. So every lookup by
name (``daskflow runs ls --flow``, the status page's filter, deployments by
name, runs by name) treats names that differ only in ``_`` versus ``-`` as one
name: :func:`same_name` is that rule, and the only place it is decided.

Names are otherwise compared exactly as given (case, Unicode form): only the
one change the default name made is forgiven. This module sits below every
layer (``storage`` uses it as much as ``pipeline``).
"""

from __future__ import annotations

__all__ = ["name_key", "same_name"]


def name_key(name: str) -> str:
    """The spelling of ``name`` that names equal to it share: ``_`` turned into ``-``.

    A flow's default name is the key of its function's name, so the old
    default (the function name) and the new one are the same name.

    Examples
    --------
    >>> name_key("hpo_kfold")
    'hpo-kfold'
    """
    return name.replace("_", "-")


def same_name(a: str | None, b: str | None) -> bool:
    """Whether ``a`` and ``b`` name the same flow, run or deployment (equal once ``_`` is read as ``-``).

    ``None`` (a record without the field) is no name: it is the same as nothing.

    Examples
    --------
    >>> same_name("hpo_kfold", "hpo-kfold"), same_name("train", "Train")
    (True, False)
    """
    if a is None or b is None:
        return False
    return a == b or name_key(a) == name_key(b)
