"""Concurrency limits kept in a store: per task tag and per work queue.

Layout under the store root::

    limits/<kind>/<id>.json    {"kind": "tag", "name": "db", "limit": 2}

The limits live with the results and the history, so every run that uses the
store (from any driver, on any cluster) sees them. They are enforced on the Dask
cluster with ``distributed.Semaphore`` leases (see
:mod:`daskflow.runners.dask`), which a holder that dies gives back.
"""

from __future__ import annotations

import hashlib
import json
import time

from ..exceptions import InvalidOptionError
from .store import Store

__all__ = ["LIMIT_KINDS", "Limits"]

#: What a limit can be set on: task runs with a tag, or flow runs of a work queue.
LIMIT_KINDS = ("tag", "queue")
LIMITS = "limits"


class Limits:
    """The concurrency limits of one store.

    Parameters
    ----------
    store : Store
        The store whose ``limits/`` folder holds them.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def _path(self, kind: str, name: str) -> str:
        if kind not in LIMIT_KINDS:
            raise InvalidOptionError(f"limit kind {kind!r}; use one of {', '.join(LIMIT_KINDS)}")
        return f"{LIMITS}/{kind}/{hashlib.sha256(name.encode()).hexdigest()[:16]}.json"

    def set(self, kind: str, name: str, limit: int) -> None:
        """At most ``limit`` task runs with tag ``name`` (or flow runs of queue ``name``) at once.

        Raises
        ------
        InvalidOptionError
            For a limit that is not a whole number of 1 or more, or an empty name.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidOptionError(f"a {kind} limit needs a {kind} name, got {name!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidOptionError(f"a concurrency limit is a whole number of 1 or more, got {limit!r}")
        record = {"kind": kind, "name": name, "limit": limit, "updated": time.time()}
        self.store.put(self._path(kind, name), json.dumps(record).encode())

    def remove(self, kind: str, name: str) -> bool:
        """Drop a limit; False if there was none."""
        path = self._path(kind, name)
        if not self.store.exists(path):
            return False
        self.store.delete(path)
        return True

    def all(self, kind: str) -> dict[str, int]:
        """Every limit of ``kind`` by tag or queue name (one listing, one concurrent read)."""
        prefix = f"{LIMITS}/{kind}"
        paths = [f"{prefix}/{n}" for n in self.store.children(prefix) if n.endswith(".json")]
        out = {}
        for data in self.store.get_many(paths).values():
            if data is None:
                continue  # removed between the listing and the read
            try:
                record = json.loads(data)
                out[str(record["name"])] = int(record["limit"])
            except (ValueError, KeyError, TypeError):
                continue
        return dict(sorted(out.items()))
