"""Which store, serializer and cache policy each task of a flow run uses, and the
batched cache lookups the driver makes before submitting.

Resolution order for each setting: the task's option, then the flow's, then
config (``daskflow.storage.*``, ``daskflow.cache.refresh``), then the default:
results persisted to ``./.daskflow`` with pickle, cached on
``INPUTS + TASK_SOURCE``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask.config

from ..exceptions import InvalidOptionError, StorageError
from ..storage.store import Manifest, Store, resolve_store
from .cache import NONE, CacheKeyFnPolicy, CachePolicy, StorageKeyPolicy, default_policy

if TYPE_CHECKING:
    from ..runners.base import TaskRunner
    from .task import Task

__all__ = ["CacheLookups", "RunStorage", "TaskStorage", "run_result_key"]

logger = logging.getLogger("daskflow.runs")


@dataclass(frozen=True)
class TaskStorage:
    """How one task's results are stored and cached in one flow run."""

    store: Store | None  # None: not persisted (and so not cached)
    serializer: str
    policy: CachePolicy | None  # None: not cached
    explicit: bool  # caching was asked for: an unhashable input is an error
    expiration: float | None
    refresh: bool


@dataclass
class RunStorage:
    """Flow-level storage defaults of one flow run (shared with its subflows' tasks
    when the subflow sets none), and the stores already probed in this run."""

    result_storage: Store | str | None = None
    persist_result: bool | None = None
    result_serializer: str | None = None
    refresh_cache: bool | None = None
    probed: set[str] = field(default_factory=set)
    _stores: dict[Any, Store] = field(default_factory=dict)
    _tasks: dict[int, TaskStorage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def child(self, result_storage: Any, persist_result: bool | None, result_serializer: str | None, refresh_cache: bool | None) -> RunStorage:
        """Settings for a subflow: its own options win, the parent's fill in."""
        return RunStorage(
            result_storage=result_storage if result_storage is not None else self.result_storage,
            persist_result=persist_result if persist_result is not None else self.persist_result,
            result_serializer=result_serializer or self.result_serializer,
            refresh_cache=refresh_cache if refresh_cache is not None else self.refresh_cache,
            probed=self.probed,
            _stores=self._stores,
        )

    def store(self, value: Store | str | None = None) -> Store:
        """The store for a task option (or the flow default), probed on first use.

        Raises
        ------
        StorageError
            If the store cannot be written, read and deleted (the probe).
        """
        value = value if value is not None else self.result_storage
        cache_key = value.url if isinstance(value, Store) else value
        with self._lock:
            store = self._stores.get(cache_key)
            if store is None:
                store = self._stores[cache_key] = resolve_store(value)
            if store.url not in self.probed:
                if dask.config.get("daskflow.storage.probe", True):
                    store.probe()
                self.probed.add(store.url)
        return store

    def check_runner(self, runner: TaskRunner) -> None:
        """Refuse every ``memory://`` store of this run if tasks run elsewhere."""
        for store in list(self._stores.values()):
            _refuse_memory_elsewhere(store, runner)

    def for_task(self, task: Task[Any, Any], runner: TaskRunner | None = None) -> TaskStorage:
        """The resolved settings of ``task`` (cached per task object)."""
        settings = self._tasks.get(id(task))
        if settings is not None:
            return settings
        persist = task.persist_result if task.persist_result is not None else self.persist_result
        if task.persist_result is None and task.result_storage_key is not None:
            persist = True  # Prefect: a storage key persists the result whatever the flow says
        persist = True if persist is None else persist
        store = self.store(task.result_storage) if persist else None
        if store is not None and runner is not None:
            _refuse_memory_elsewhere(store, runner)
        if task.result_storage_key is not None and task.cache_policy is not NONE:
            # Prefect: a storage key replaces the task's cache policy or cache_key_fn
            # (all but NO_CACHE): the formatted key is the entry, and the cache key.
            policy: CachePolicy | None = StorageKeyPolicy(task.result_storage_key)
            explicit = True
        elif task.cache_key_fn is not None:
            policy = CacheKeyFnPolicy(task.cache_key_fn)
            explicit = True
        elif task.cache_policy is not None:
            policy = None if task.cache_policy is NONE else task.cache_policy
            explicit = policy is not None
        else:
            # Prefect persists (and so caches) when the task or its flow sets
            # persist_result=True, a result storage or a serializer.
            asked = task.persist_result is True or (task.persist_result is None and self.persist_result is True)
            asked = asked or any(v is not None for v in (task.result_storage, task.result_serializer, self.result_storage, self.result_serializer))
            policy, explicit = default_policy(asked), False
        refresh = task.refresh_cache
        if refresh is None:
            refresh = self.refresh_cache
        if refresh is None:
            refresh = bool(dask.config.get("daskflow.cache.refresh", False))
        settings = TaskStorage(
            store=store,
            serializer=task.result_serializer or self.result_serializer or "pickle",
            policy=policy if store is not None else None,
            explicit=explicit,
            expiration=task.cache_expiration,
            refresh=bool(refresh),
        )
        self._tasks[id(task)] = settings
        return settings


def _refuse_memory_elsewhere(store: Store, runner: TaskRunner) -> None:
    """A ``memory://`` store lives in one process: refuse it with workers elsewhere."""
    if store.protocol == "memory" and not runner.shares_memory():
        raise InvalidOptionError(
            f"result storage {store.url!r} is memory of this process, but tasks run in other processes "
            f"({runner.name}); use a folder or s3:// URL, or a runner in this process "
            "(SequentialTaskRunner, ConcurrentTaskRunner, DaskTaskRunner(cluster_kwargs={'processes': False}))"
        )


def run_result_key(task_run_id: str) -> str:
    """Where an uncached task run's result is stored: unique to the run, spread
    over shards like cache keys."""
    return "r" + hashlib.sha256(task_run_id.encode()).hexdigest()[:39]


#: Delivers ``{key: Manifest | None}`` for a batch, or the error that failed it.
LookupCallback = Callable[[list[Any], dict[str, Manifest | None] | BaseException], None]


class CacheLookups:
    """Looks up cache keys in batches on one background thread.

    The flow body never blocks on storage: each submitted task run waits (in the
    engine) for its lookup, and lookups requested while one batch is in flight
    go together in the next, one batched read per store.
    """

    def __init__(self, deliver: LookupCallback, name: str) -> None:
        self._deliver = deliver
        self._pending: list[tuple[Store, str, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"daskflow-lookups-{name}", daemon=True)
        self._thread.start()

    def request(self, store: Store, key: str, item: Any) -> None:
        with self._cond:
            self._pending.append((store, key, item))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch, self._pending = self._pending, []
            by_store: dict[Store, list[tuple[str, Any]]] = {}
            for store, key, item in batch:
                by_store.setdefault(store, []).append((key, item))
            for store, entries in by_store.items():
                items = [item for _, item in entries]
                try:
                    found: dict[str, Manifest | None] | BaseException = store.lookup(key for key, _ in entries)
                except StorageError as exc:
                    found = exc
                except Exception as exc:  # never lose a batch: its task runs wait on it
                    found = StorageError(f"cache lookup in {store.url} failed: {type(exc).__name__}: {exc}", store.url, "read")
                self._deliver(items, found)
