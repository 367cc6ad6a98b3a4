"""Where deployments and their fire records live in a store.

Layout under the store root (paths come from hashes, names live in the records)::

    deployments/<id>.json                     one deployment (id: a hash of its name)
    deployments/VERSION                       rewritten at every change (the serve loop polls it)
    code/<sha256>.zip                         code snapshots (see snapshot.py)
    fires/<deployment>/<schedule>/<slot>.json one per fired slot, written create-only
    fires/<deployment>/<schedule>/cursor.json the latest slot fired (where a restart resumes)

A slot is fired by committing its fire record with the store's create-only
write: of any number of serve loops (restarted, or running side by side) exactly
one wins a slot, and only the winner creates the slot's flow run. The fire record
names that run, so a loop that finds a slot fired can tell whether its run exists.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from .._names import same_name
from ..exceptions import CorruptedResultError, DeploymentNotFoundError, InvalidDeploymentError
from ..storage.store import Store

__all__ = ["Registry", "check_deployment_name", "deployment_id", "slot_name"]

DEPLOYMENTS = "deployments"
VERSION = f"{DEPLOYMENTS}/VERSION"
FIRES = "fires"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def deployment_id(name: str) -> str:
    """The storage id of the deployment called ``name`` (one per name per store)."""
    return hashlib.sha256(b"deployment:" + name.encode()).hexdigest()[:16]


def check_deployment_name(name: Any) -> str:
    """``name`` if it can name a deployment (letters, digits, ``_ . -``; used on the command line).

    Raises
    ------
    InvalidDeploymentError
        Naming the value and the rule.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidDeploymentError(
            f"deployment name {name!r} is not usable; use letters, digits, '_', '.' and '-' "
            "(up to 128, starting with a letter or digit), like 'monthly-retrain'"
        )
    return name


def slot_name(slot: datetime) -> str:
    """A slot's file name: its UTC time to the second, sortable (``20261101T053000Z``)."""
    return slot.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


class Registry:
    """Deployments and fire records of one store.

    Parameters
    ----------
    store : Store
        The store whose root holds them (the same one that holds run history).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    # --------------------------------------------------------- deployments
    def put(self, record: dict[str, Any]) -> None:
        """Write (create or replace) a deployment record, signed if the store signs."""
        body = {k: v for k, v in record.items() if k != "signature"}
        data = _dumps(body)
        signature = self.store.signature(data)
        if signature is not None:
            body["signature"] = signature
        self.store.put(f"{DEPLOYMENTS}/{record['id']}.json", _dumps(body))
        self.touch()

    def touch(self) -> None:
        """Mark the deployments as changed (serve loops reload them)."""
        self.store.put(VERSION, f"{time.time():.6f}-{secrets.token_hex(4)}".encode())

    def version(self) -> str | None:
        """The change marker (``None`` if nothing was ever registered)."""
        try:
            return self.store.get(VERSION).decode()
        except FileNotFoundError:
            return None

    def get(self, name: str) -> dict[str, Any]:
        """The deployment called ``name``, or else the one called so in the other
        spelling (``nightly_train`` for ``nightly-train``, see :func:`~daskflow._names.same_name`).

        A deployment's default name is its flow's, and a flow's default name
        became hyphenated: a deployment registered before keeps its underscores
        and is still found (and updated in place when registered again).

        Raises
        ------
        DeploymentNotFoundError
            If there is none, or several in the other spelling (the message says how to list them).
        """
        try:
            data = self.store.get(f"{DEPLOYMENTS}/{deployment_id(name)}.json")
        except FileNotFoundError:
            pass
        else:
            return self._verified(data, name)
        # The id is a hash of the exact name: the other spelling needs the listing.
        spelled = [record for record in self.all() if same_name(record["name"], name)]
        if len(spelled) == 1:
            return spelled[0]
        listing = f"list them with `daskflow deployments ls --storage {self.store.url}`"
        if spelled:
            raise DeploymentNotFoundError(
                f"no deployment {name!r} in {self.store.url}, and {len(spelled)} spelled like it "
                f"({', '.join(repr(r['name']) for r in spelled)}); give one of those names exactly"
            )
        raise DeploymentNotFoundError(f"no deployment {name!r} in {self.store.url}; {listing}")

    def all(self) -> list[dict[str, Any]]:
        """Every deployment, sorted by name (one listing and one concurrent read)."""
        paths = [f"{DEPLOYMENTS}/{n}" for n in self.store.children(DEPLOYMENTS) if n.endswith(".json")]
        out = []
        for path, data in self.store.get_many(paths).items():
            if data is None:
                continue  # removed between the listing and the read
            try:
                out.append(self._verified(data, path))
            except CorruptedResultError:
                raise
            except ValueError:
                continue
        return sorted(out, key=lambda r: r["name"])

    def remove(self, name: str) -> None:
        """Delete the deployment called ``name`` (its runs and fire records stay)."""
        record = self.get(name)
        self.store.delete(f"{DEPLOYMENTS}/{deployment_id(record['name'])}.json")
        self.touch()

    def _verified(self, data: bytes, what: str) -> dict[str, Any]:
        record = json.loads(data)
        signature = record.pop("signature", None)
        if not self.store.verify_signature(_dumps(record), signature):
            raise CorruptedResultError(
                f"deployment {record.get('name', what)!r} in {self.store.url} is not signed with this store's signing key; "
                "it will not be run. Register it again with `daskflow deploy` where the key is set",
                self.store.url, "read",
            )
        return record

    # --------------------------------------------------------------- fires
    def _fire_path(self, deployment: str, schedule: str, slot: datetime) -> str:
        return f"{FIRES}/{deployment}/{schedule}/{slot_name(slot)}.json"

    def claim(self, deployment: str, schedule: str, slot: datetime, fire: dict[str, Any]) -> dict[str, Any] | None:
        """Commit the fire record of a slot; ``None`` if this call won it, else the
        record that was there first."""
        path = self._fire_path(deployment, schedule, slot)
        try:
            self.store.put(path, _dumps(fire), create_only=True)
            return None
        except FileExistsError:
            pass
        try:
            return json.loads(self.store.get(path))
        except (FileNotFoundError, ValueError):
            return {}  # being written by the winner right now

    def fire(self, deployment: str, schedule: str, slot: datetime) -> dict[str, Any] | None:
        """The fire record of a slot, if it was fired."""
        try:
            return json.loads(self.store.get(self._fire_path(deployment, schedule, slot)))
        except (FileNotFoundError, ValueError):
            return None

    def cursor(self, deployment: str, schedule: str) -> float | None:
        """The latest slot fired of a schedule (a timestamp), as last recorded."""
        try:
            return float(json.loads(self.store.get(f"{FIRES}/{deployment}/{schedule}/cursor.json"))["slot"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def set_cursor(self, deployment: str, schedule: str, slot: datetime) -> None:
        self.store.put(f"{FIRES}/{deployment}/{schedule}/cursor.json", _dumps({"slot": slot.timestamp()}))
