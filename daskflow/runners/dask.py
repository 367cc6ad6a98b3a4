"""Run tasks on a ``dask.distributed`` cluster: the default runner.

Each attempt is one ``client.submit`` of :func:`run_on_worker` with a small
:class:`~daskflow.runners.execute.AttemptSpec`; futures of upstream tasks are
passed as arguments, so they become edges of the scheduler's graph and data moves
worker to worker. A task's function is shipped once per run, as the result of a
tiny task that the attempts depend on, so a function defined in ``__main__``
(pickled by value, with whatever globals it references) crosses the network once,
not once per submit. Reports (timings, log lines) travel back through
``Worker.log_event`` and a topic subscription, the scheduler's own event channel.

A flow called inside a Dask task (a deployment's flow-run task, or a flow called
by a task) runs its tasks on the cluster it is already on: the runner borrows the
worker's client and secedes the calling thread from the worker's pool, so a
one-thread worker never deadlocks on a flow waiting for its own tasks.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cloudpickle

from ..exceptions import ConcurrencyLimitReached, InvalidOptionError, NoWorkersError, RunnerError, SerializationError
from ..storage.records import without_surrogates
from . import run_facts
from .base import AttemptCall, Outcome, ReportSink, TaskRunner
from .execute import (
    AttemptError,
    AttemptSpec,
    InputLoadError,
    SealedArguments,
    StoredRef,
    execute_attempt,
    load_stored,
)

__all__ = ["REPORT_TOPIC", "DaskTaskRunner", "cluster_client", "ensure_seceded", "hold_slots", "in_worker_task", "key_released"]

logger = logging.getLogger(__name__)

#: The event topic attempt reports are published on.
REPORT_TOPIC = "daskflow-reports"
#: The scheduler's own topics the runner follows: ``all`` carries worker
#: removals (with the tasks that were processing on the worker), the other the
#: nanny's restarts of a worker past its memory budget.
CLUSTER_TOPICS = ("all", "worker-restart-memory")

#: LocalCluster settings daskflow uses unless told otherwise: everything listens on
#: loopback (distributed's dashboard, and each worker's HTTP server, default to
#: all interfaces). ``host`` is added only for worker processes: in-process
#: workers talk over ``inproc://``, which a host address breaks.
LOCAL_CLUSTER_DEFAULTS: dict[str, Any] = {
    "dashboard_address": "127.0.0.1:8787",
    "worker_dashboard_address": "127.0.0.1:0",
}

#: A worker preload for the LocalClusters daskflow starts with worker processes:
#: the driver owns Ctrl-C. A terminal's Ctrl-C reaches its whole foreground process
#: group, so each worker would stop on its own, mid-task, printing Dask's warnings,
#: while the driver cancels the run and closes the cluster in order
#: (:mod:`daskflow.pipeline.interrupt`). Dask runs preload text as a script; text,
#: not a daskflow module, because importing daskflow in every starting worker made
#: worker (re)starts slow enough that closing a cluster mid-restart hung now and then.
WORKERS_LEAVE_CTRL_C_TO_THE_DRIVER = """
import signal
try:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
except ValueError:  # not a main thread: not a worker process of its own
    pass
"""


#: An argument at least this large (bytes, or an array's ``nbytes``) is sent to
#: the cluster once per run, as the value of a task its attempts depend on,
#: instead of inside every attempt's graph (a 200 MB flow parameter passed to
#: ten tasks would otherwise cross ten times, and sit in the scheduler ten times).
SHARE_BYTES = 1_000_000


def payload_bytes(value: Any) -> int:
    """The size of a bytes-like or array-like value (0 for anything else: not measured)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value.nbytes if isinstance(value, memoryview) else len(value)
    size = getattr(value, "nbytes", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def shared_value(value: Any) -> Any:
    """Worker side of :meth:`DaskTaskRunner.share`: the argument itself."""
    return value


#: A task function whose pickle is larger than this (a closure over data, a
#: function from ``__main__`` referencing big globals) is shipped once per run as a
#: dependency; a smaller one rides along with each submit, which costs less than a
#: dependency (about 0.2 ms per task measured on 2 cores).
SHIP_ONCE_BYTES = 16_384


def load_callable(blob: bytes) -> Callable[..., Any]:
    """Worker side of :meth:`DaskTaskRunner.prepare`."""
    return cloudpickle.loads(blob)


class _ReportedFailures(logging.Filter):
    """Drops the worker's "Compute Failed" log of an attempt whose failure daskflow
    reports itself (with the user's traceback, on the driver and in the run record),
    so a LocalCluster does not print every failure twice."""

    keys: set[str] = set()
    _installed = False
    _lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Compute Failed") and record.args:
            key = record.args[0] if isinstance(record.args, tuple) else None
            if key in self.keys:
                self.keys.discard(key)
                return False
        return True

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                logging.getLogger("distributed.worker").addFilter(cls())
                cls._installed = True


def run_on_worker(fn: Callable[..., Any], spec: AttemptSpec, sealed: SealedArguments, *resolved: Any) -> Any:
    """The Dask task of one attempt: run it, publish the report, return the value.

    ``sealed`` holds the arguments (opaque to Dask, which logs and serves task
    specs); ``resolved`` starts with the values of the futures lifted out of them
    and goes on with those the attempt only waited for.
    """
    from distributed import get_worker
    from distributed.worker import thread_state

    args, kwargs = sealed.open(resolved[: sealed.lifted])
    worker = get_worker()
    key = getattr(thread_state, "key", None)
    publish = _Publisher(worker)
    try:
        with run_facts.attempt_running(spec.flow_run_id), (
            hold_slots([("tag", tag, limit) for tag, limit in spec.limits]) if spec.limits else contextlib.nullcontext()
        ):
            value, report = execute_attempt(fn, spec, args, kwargs, publish, key, lambda: key_released(worker, key))
        if spec.result is None and not str(worker.address).startswith("inproc://"):
            _check_transferable(value, spec, report)
    except (AttemptError, InputLoadError) as exc:
        publish.finish()  # the report travels inside the error
        report = getattr(exc, "report", None)
        if isinstance(report, dict):
            report.setdefault("worker", worker.address)  # the scheduler adds it to published reports only
        _ReportedFailures.install()
        _ReportedFailures.keys.add(key)
        raise
    # Sent before the task's own completion message on the same worker stream, so
    # the driver sees it before the future finishes, and before any later start of
    # this key elsewhere: a start with no end before it means a worker died mid-run,
    # a start after an end is Dask recomputing a result lost with its worker.
    publish(report)
    return value


def key_released(worker: Any, key: Any) -> bool:
    """Whether the scheduler has let go of the running task ``key`` on ``worker``
    (its future was cancelled): the worker keeps running it, as ``cancelled``,
    and forgets its result when it ends."""
    # A plain dict read from a thread other than the worker's event loop: the
    # GIL makes it atomic, and a stale answer is corrected at the next look.
    state = worker.state.tasks.get(key)
    return state is None or state.state in ("cancelled", "released")


def _check_transferable(value: Any, spec: AttemptSpec, report: dict[str, Any]) -> None:
    """Fail the attempt now if its unpersisted value cannot leave this worker.

    Dask serialises a result only when another process needs it (a dependent
    on another worker, the driver), long after the task run was recorded
    Completed, and then fails with a bare ``TypeError``. Serialising it here
    costs one pickling (zero-copy for arrays) and turns that into a Failed task
    run with the remedy. Persisted values were serialised by the store already.
    """
    from distributed.protocol import serialize

    try:
        serialize(value, on_error="raise")
    except Exception as error:
        exc = error.__cause__ or error  # Dask's TypeError wraps pickle's own reason
        type_name = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
        message = (
            f"task run {spec.task_run_name!r} returned a value of type {type_name} that cannot be serialised to leave "
            f"its worker ({type(exc).__name__}: {exc}). Return something picklable, persist it with a "
            "result_serializer that can store it, or keep it in one process with a threads runner "
            "(ConcurrentTaskRunner, or DaskTaskRunner(cluster_kwargs={'processes': False}))"
        )
        raise AttemptError(
            spec.task_run_id, spec.attempt, "failed", SerializationError(message),
            "daskflow.exceptions.SerializationError", message, "", report,
        ) from None


def load_on_worker(ref: StoredRef) -> Any:
    """The Dask task that loads a stored input (see :meth:`DaskTaskRunner.load`)."""
    try:
        return load_stored(ref)
    except InputLoadError:
        from distributed.worker import thread_state

        _ReportedFailures.install()  # the driver reports it (and recomputes the input)
        _ReportedFailures.keys.add(getattr(thread_state, "key", None))
        raise


def run_facts_on_worker(flow_run_id: str) -> Any:
    """The facts of flow run ``flow_run_id`` (a :class:`daskflow.context.FlowRunSnapshot`)
    for a task on a Dask worker reading ``runtime.flow_run.parameters`` and the like,
    asked of the run's driver (see :mod:`daskflow.runners.run_facts`); ``None`` outside
    a Dask worker."""
    from distributed import Variable, get_client, get_worker

    try:
        worker = get_worker()
    except ValueError:
        return None
    return run_facts.fetch(
        flow_run_id,
        ask=lambda: worker.log_event(REPORT_TOPIC, {"ev": "facts", "fr": flow_run_id}),
        read=lambda timeout: Variable(run_facts.variable_name(flow_run_id), get_client()).get(timeout=timeout),
    )


#: An attempt's start report is held back this long; an attempt that ends sooner
#: sends only its end report (which carries the start time): one scheduler event
#: per short task instead of two. A worker that dies sooner cannot be told from a
#: lost report anyway (reports leave the worker every few milliseconds).
START_REPORT_DELAY = 0.1


class _Publisher:
    """Sends an attempt's reports through ``Worker.log_event``, deferring the start."""

    __slots__ = ("ended", "lock", "start", "worker")

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.start: dict[str, Any] | None = None
        self.ended = False
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        # A lone surrogate in a log line or an artifact would break the worker's
        # whole stream to the scheduler (msgpack refuses it): send it escaped.
        message = without_surrogates(message)
        if message["ev"] == "start":
            self.start = message
            self.worker.loop.add_callback(self.worker.loop.call_later, START_REPORT_DELAY, self._send_start)
            return
        if message["ev"] == "end":
            self.finish()
        self.worker.log_event(REPORT_TOPIC, message)

    def finish(self) -> None:
        with self.lock:
            self.ended = True

    def _send_start(self) -> None:  # on the worker's event loop
        with self.lock:
            if self.ended:
                return
            # Queued before the end report can be: the end waits for this lock.
            self.worker.log_event(REPORT_TOPIC, self.start)


def _quiet_dask_logs() -> dict[str, int]:
    """Raise every ``distributed`` logger of this process to CRITICAL; their old levels."""
    names = ["distributed", *(n for n in list(logging.root.manager.loggerDict) if n.startswith("distributed."))]
    old = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return old


def start_loopback_cluster(cls: type, kwargs: dict[str, Any]) -> Any:
    """``cls(**kwargs)``: a LocalCluster daskflow starts itself, its dashboard
    answering only to its own names. Dask's dashboard websockets take only
    loopback origins on the dashboard's port (Dask's default takes any site's)
    and every dashboard route answers 403 to a foreign ``Host`` header (DNS
    rebinding); see :mod:`daskflow.status.origins`.
    """
    from ..status.origins import loopback_dashboard_config, narrow_dashboard

    address = kwargs.get("dashboard_address")
    port = str(address).rpartition(":")[2] if address else ""
    with loopback_dashboard_config(int(port) if port.isdigit() else None) as websockets:
        cluster = cls(**kwargs)
        scheduler = getattr(cluster, "scheduler", None)

        async def narrow() -> None:  # on the cluster's event loop, which serves the dashboard
            narrow_dashboard(scheduler, bound_hosts(getattr(scheduler, "http_server", None)), websockets=websockets)

        try:
            if scheduler is not None:
                cluster.sync(narrow)
        except BaseException:
            cluster.close()
            raise
    return cluster


@contextlib.contextmanager
def cluster_client(address: str | None) -> Iterator[Any]:
    """A :class:`distributed.Client` of the scheduler at ``address``, or of a
    LocalCluster on 127.0.0.1 started for the block (and closed after it).

    Raises
    ------
    RunnerError
        If the scheduler at ``address`` cannot be reached.
    """
    from distributed import Client, LocalCluster

    if address is None:
        with start_loopback_cluster(LocalCluster, {**LOCAL_CLUSTER_DEFAULTS, "host": "127.0.0.1"}) as cluster, \
                Client(cluster, set_as_default=False) as client:
            yield client
        return
    try:
        client = Client(address, set_as_default=False, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise RunnerError(f"cannot connect to the Dask scheduler at {address!r} ({exc}); start one with `dask scheduler` or check the address") from exc
    try:
        yield client
    finally:
        client.close()


def in_worker_task() -> bool:
    """Whether this thread is running a Dask task on a worker."""
    from distributed.worker import thread_state

    if getattr(thread_state, "key", None) is None:
        return False
    try:
        from distributed import get_worker

        get_worker()
    except ValueError:
        return False
    return True


def ensure_seceded() -> bool:
    """Secede this Dask task's thread from its worker's pool, once.

    A task that waits for other tasks (a flow driving its task runs, a run
    waiting for a concurrency slot) must not hold a worker slot, or a worker
    whose every slot is held by waiting parents can never run their children.
    Returns True if this call seceded (the caller may ``rejoin()`` later), False
    if the thread is not a task's or has seceded already.
    """
    from distributed import secede
    from distributed.worker import thread_state

    key = getattr(thread_state, "key", None)
    if key is None or getattr(thread_state, "start_time", None) is None:
        return False  # not a task thread (or an async task, which cannot secede)
    if getattr(thread_state, "daskflow_seceded", None) == key:
        return False
    secede()
    thread_state.daskflow_seceded = key
    return True


#: Semaphores this process has used, by name (registering one is a scheduler round trip).
_semaphores: dict[str, Any] = {}
_semaphores_lock = threading.Lock()


def _semaphore(kind: str, name: str, limit: int) -> Any:
    from distributed import Semaphore

    # The limit is part of the name: every holder of one name must agree on
    # max_leases, so a changed limit is a new semaphore (the old one's holders
    # finish under the old limit).
    full = f"daskflow-{kind}-{name}-{limit}"
    with _semaphores_lock:
        semaphore = _semaphores.get(full)
        if semaphore is None:
            semaphore = _semaphores[full] = Semaphore(max_leases=limit, name=full)
        return semaphore


@contextlib.contextmanager
def hold_slots(
    limits: Sequence[tuple[str, str, int]],
    *,
    wait: bool = True,
    rejoin_after_wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[bool]:
    """Hold one lease of each ``(kind, name, limit)`` concurrency limit while the block runs.

    Leases are ``distributed.Semaphore`` leases on the scheduler, shared by every
    run on the cluster; one whose holder dies expires after
    ``distributed.scheduler.locks.lease-timeout``. Leases are taken in a fixed
    order, so two tasks with the same tags never wait for each other. A task
    that has to wait secedes from the worker's pool while it waits (its slot
    runs other work) and, with ``rejoin_after_wait``, takes a slot again before
    the block runs. ``on_wait`` is told which limit it waits for. Yields whether
    it had to wait.

    Raises
    ------
    ConcurrencyLimitReached
        With ``wait=False``, when a limit has no free lease (none is held then).
    """
    held: list[Any] = []
    waited = False
    try:
        for kind, name, limit in sorted(limits):
            semaphore = _semaphore(kind, name, limit)
            if not semaphore.acquire(timeout=0):
                if not wait:
                    raise ConcurrencyLimitReached(f"the concurrency limit of {kind} {name!r} ({limit} at once) is reached")
                if on_wait is not None:
                    on_wait(f"{kind} {name!r} (limit {limit})")
                seceded = ensure_seceded()
                waited = True
                semaphore.acquire()
                if seceded and rejoin_after_wait:
                    from distributed import rejoin
                    from distributed.worker import thread_state

                    rejoin()
                    thread_state.daskflow_seceded = None
            held.append(semaphore)
        yield waited
    finally:
        for semaphore in reversed(held):
            try:
                semaphore.release()
            except Exception:  # an expired lease (the scheduler gave it away) cannot be released twice
                logger.debug("releasing %s failed", semaphore.name, exc_info=True)


class _ReportRouter:
    """One subscription to the report topic per client, routed to each flow run's sink.

    A client holds one handler per topic, and a worker's shared client can carry
    several flow runs at once (deployments running side by side on one worker):
    each run registers its sink here instead of replacing the others' handler.
    """

    _routers: dict[str, _ReportRouter] = {}
    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sinks: dict[str, ReportSink] = {}

    @classmethod
    def add(cls, client: Any, flow_run_id: str, sink: ReportSink) -> None:
        with cls._lock:
            router = cls._routers.get(client.id)
            if router is None:
                router = cls._routers[client.id] = cls(client)
                client.subscribe_topic(REPORT_TOPIC, router.route)
                for topic in CLUSTER_TOPICS:
                    client.subscribe_topic(topic, router.cluster_event)
            router.sinks[flow_run_id] = sink

    @classmethod
    def remove(cls, client: Any, flow_run_id: str) -> None:
        with cls._lock:
            router = cls._routers.get(client.id)
            if router is None:
                return
            router.sinks.pop(flow_run_id, None)
            if router.sinks:
                return
            del cls._routers[client.id]
            for topic in (REPORT_TOPIC, *CLUSTER_TOPICS):
                try:
                    client.unsubscribe_topic(topic)
                except Exception:  # the scheduler may already be gone
                    pass

    def route(self, event: tuple[float, dict[str, Any]]) -> None:
        # Runs on the client's event loop: hand over and return.
        msg = event[1]
        sink = self.sinks.get(msg.get("fr")) if isinstance(msg, dict) else None
        if sink is not None:
            sink(msg)

    def cluster_event(self, event: tuple[float, Any]) -> None:
        """A worker died (with the keys it was processing) or its nanny restarted it
        for memory: told to every run, each picks its own keys. A start report
        lost with its worker (sent after START_REPORT_DELAY) is counted this way."""
        msg = event[1]
        if not isinstance(msg, dict):
            return
        if msg.get("action") == "remove-worker":
            keys = [k for k in msg.get("processing-tasks") or () if isinstance(k, str)]
            if msg.get("expected") or not keys:
                return  # retired or closed on purpose: Dask does not count it either
            report = {"ev": "worker-lost", "worker": msg.get("worker"), "keys": keys}
        elif "rss" in msg and "worker" in msg and "action" not in msg:
            report = {"ev": "worker-memory", "worker": msg["worker"], "rss": msg["rss"]}
        else:
            return
        for sink in list(self.sinks.values()):
            sink(report)


class _NoWorkersWatch:
    """Ends a run's attempts ``Crashed`` once no worker has been left for ``timeout`` seconds.

    Dask's own ``no-workers-timeout`` is a scheduler setting (off by default,
    and out of reach on an external cluster), so with every worker dead the
    futures would wait forever. The driver asks the scheduler for its worker
    count about once a second while attempts are outstanding, and cancels them
    when the count has stayed zero for ``timeout`` after this run saw a worker;
    :meth:`DaskTaskRunner.outcome` reports each as a
    :class:`~daskflow.exceptions.NoWorkersError`. A cluster that never had a
    worker (adaptive, still provisioning) is waited for, with one warning.
    """

    def __init__(self, client: Any, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self.pending: set[Any] = set()
        self.lock = threading.Lock()
        #: Keys cancelled for want of workers, with the message to report.
        self.failed: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daskflow-no-workers-watch", daemon=True)
        self._thread.start()

    def add(self, futures: Sequence[Any]) -> None:
        with self.lock:
            self.pending.update(futures)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _workers(self) -> int | None:
        try:
            return int(self.client.sync(self.client.scheduler.identity, n_workers=0)["n_workers"])
        except Exception:  # closing, or the scheduler is unreachable: comms errors end the run anyway
            return None

    def _run(self) -> None:
        import time

        interval = min(1.0, max(0.05, self.timeout / 10))
        empty_since: float | None = None
        # Only workers that were there and are gone end a run: a cluster that has
        # not started any yet (adaptive, a batch queue) may take longer than the
        # timeout to get its first; that wait is said, once, not ended.
        seen_worker, warned = bool(self._workers()), False
        started = time.monotonic()
        while not self._stop.wait(interval):
            with self.lock:
                self.pending = {f for f in self.pending if not f.done()}
                waiting = list(self.pending)
            workers = self._workers() if waiting else None
            if workers != 0:
                seen_worker = seen_worker or bool(workers)
                empty_since = None
                continue
            now = time.monotonic()
            address = getattr(self.client.scheduler, "address", "the scheduler")
            if not seen_worker:
                if not warned and now - started >= self.timeout:
                    warned = True
                    logger.warning(
                        "No Dask worker has joined the scheduler at %s in %g s; %d attempts wait for one "
                        "(start workers: dask worker %s)", address, self.timeout, len(waiting), address,
                    )
                continue
            empty_since = empty_since if empty_since is not None else now
            if now - empty_since < self.timeout:
                continue
            message = no_workers_message(address, self.timeout, "daskflow.dask.no-workers-timeout")
            logger.error("No Dask workers left on %s for %g s: ending %d outstanding attempts", address, self.timeout, len(waiting))
            with self.lock:
                for future in waiting:
                    self.failed[future.key] = message
            try:
                self.client.cancel(waiting)
            except Exception:
                logger.debug("cancelling %d futures failed", len(waiting), exc_info=True)
            empty_since = None


def no_workers_message(address: str, timeout: float, setting: str) -> str:
    """Why an attempt ended for want of workers, and what to do about it."""
    return (
        f"no Dask workers left on the scheduler at {address} for {timeout:g} s ({setting}); start workers "
        f"(`dask worker {address}`), check the worker logs for why they died, or raise {setting} "
        "(null waits for workers forever)"
    )


def no_workers_timeout() -> float | None:
    """The configured ``daskflow.dask.no-workers-timeout`` in seconds, or None (wait forever).

    Raises
    ------
    InvalidOptionError
        If it is neither null nor a duration above 0 (``60``, ``"2 minutes"``).
    """
    import math

    import dask.config
    from dask.utils import parse_timedelta

    raw = dask.config.get("daskflow.dask.no-workers-timeout", 60)
    if raw is None:
        return None
    try:
        value = float(parse_timedelta(raw, default="seconds"))
    except (TypeError, ValueError, KeyError):
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value <= 0:
        raise InvalidOptionError(
            f"daskflow.dask.no-workers-timeout is {raw!r}; give seconds above 0 like 60 (or '2 minutes'), or null to wait forever"
        )
    return value


def bound_hosts(http_server: Any) -> list[str]:
    """The addresses a tornado HTTP server (a scheduler's dashboard) listens on."""
    hosts = []
    for sock in getattr(http_server, "_sockets", {}).values():
        try:
            hosts.append(sock.getsockname()[0])
        except OSError:
            continue
    return hosts


def _inproc_dashboard_link(link: str, scheduler: Any) -> str:
    from urllib.parse import urlsplit, urlunsplit

    hosts = bound_hosts(getattr(scheduler, "http_server", None))
    host = next((h for h in hosts if h not in ("0.0.0.0", "::")), "127.0.0.1")
    parts = urlsplit(link)
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{netloc}:{parts.port}" if parts.port else netloc))


def _daskflow_version() -> str:
    import daskflow

    return daskflow.__version__


class DaskTaskRunner(TaskRunner):
    """Run tasks on a Dask cluster.

    Parameters
    ----------
    address : str, optional
        Address of an existing scheduler (``tcp://127.0.0.1:8786``). Without it the
        run starts its own cluster and closes it when the run ends.
    cluster_class : type or str, optional
        Cluster to start when no address is given: a class or its import path
        (``"dask_jobqueue.SLURMCluster"``). Default
        :class:`distributed.LocalCluster`, bound to 127.0.0.1.
    cluster_kwargs : dict, optional
        Keyword arguments for ``cluster_class``.
    client_kwargs : dict, optional
        Keyword arguments for :class:`distributed.Client`.
    adapt_kwargs : dict, optional
        If given, ``cluster.adapt(**adapt_kwargs)`` is called after start.
    resources : dict, optional
        Dask worker resources every task of the run requires, merged under each
        task's own ``resources=``. A deployment's work queue is one:
        ``{"queue-gpu": 0}`` sends every task to workers started with
        ``--resources queue-gpu=1`` and uses none of their amount.

    Notes
    -----
    Called inside a Dask task (no ``address``, no cluster options), the runner
    uses the cluster it is on: it borrows the worker's client, secedes the
    calling thread from the worker's pool while the flow runs and rejoins it
    afterwards. It never starts a cluster inside a worker.

    When a worker dies, Dask reschedules the tasks it held. daskflow records an
    attempt that was seen *running* there as ``Crashed`` and counts Dask's rerun
    as the next attempt, which spends one of the task's retries if any is left.
    An attempt whose worker died before its start report came (the scheduler's
    worker removal names it) counts as a Crashed attempt too, but spends no retry:
    it may only have been queued there. After
    ``distributed.scheduler.allowed-failures`` deaths (default 3) Dask gives up
    with ``KilledWorker``: every death counts as an attempt, the message says
    whether the worker exceeded its memory limit, and the task is retried if
    retries remain, else it ends ``Crashed``.

    With no worker left at all for ``daskflow.dask.no-workers-timeout`` seconds
    (default 60; ``None`` waits forever) the attempts still waiting end
    ``Crashed`` with a :class:`~daskflow.exceptions.NoWorkersError`, on a cluster
    the run started or an external one. A value that is not persisted must be
    picklable to leave its worker: one that is not fails its attempt at once.

    Examples
    --------
    >>> from daskflow import flow, DaskTaskRunner
    >>> @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 4}))
    ... def sweep(): ...
    """

    name = "dask"

    def __init__(
        self,
        address: str | None = None,
        cluster_class: type | str | None = None,
        cluster_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        adapt_kwargs: dict[str, Any] | None = None,
        resources: dict[str, float] | None = None,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise InvalidOptionError(f"address must be a scheduler address string like 'tcp://127.0.0.1:8786', got {address!r}")
        if address is not None and (cluster_class is not None or cluster_kwargs):
            raise InvalidOptionError(
                "give either address= (connect to a running scheduler) or cluster_class=/cluster_kwargs= "
                "(start a cluster), not both"
            )
        for label, value in (
            ("cluster_kwargs", cluster_kwargs), ("client_kwargs", client_kwargs), ("adapt_kwargs", adapt_kwargs), ("resources", resources)
        ):
            if value is not None and not isinstance(value, dict):
                raise InvalidOptionError(f"{label} must be a dict, got {type(value).__name__}: {value!r}")
        for resource, amount in (resources or {}).items():
            if not isinstance(resource, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise InvalidOptionError(f"resources must map names to amounts of 0 or more, like {{'queue-gpu': 0}}; got {resource!r}: {amount!r}")
        self.address = address
        self.cluster_class = cluster_class
        self.cluster_kwargs = cluster_kwargs
        self.client_kwargs = client_kwargs
        self.adapt_kwargs = adapt_kwargs
        self.resources = dict(resources) if resources else None
        self._client: Any = None
        self._cluster: Any = None
        #: True when the client is a worker's own (a flow run inside a Dask task).
        self._borrowed = False
        self._seceded = False
        #: The ``distributed`` log levels silence_teardown changed, restored by shutdown.
        self._loud: dict[str, int] | None = None
        #: A client to use instead of making one (see :meth:`on_client`).
        self._lent: Any = None
        self._watch: _NoWorkersWatch | None = None
        #: Large arguments sent once this run: id -> (value, future); the value is
        #: kept so its id cannot be reused by another object while the run lasts.
        self._shared: dict[int, tuple[Any, Any]] = {}
        #: Flow runs whose facts are in a scheduler variable (removed when the run ends).
        self._facts_sent: set[str] = set()
        #: A cluster of the runner's own starts at the first use of the client
        #: (see :meth:`start`); until then these wait for it.
        self._pending = False
        self._start_lock = threading.RLock()
        self._start_error: BaseException | None = None
        self._pending_sinks: dict[str, ReportSink] = {}
        self._on_start: list[tuple[Callable[[], None] | None, Callable[[], None]]] = []

    @classmethod
    def on_client(cls, client: Any) -> DaskTaskRunner:
        """A runner whose runs use ``client`` (a worker's own) and leave it open.

        For task runs started inside a Dask task: the worker's client is made
        once per worker, where a new ``Client`` costs a connection per run.
        The caller secedes and rejoins its thread itself.
        """
        runner = cls()
        runner._lent = client
        return runner

    def duplicate(self) -> DaskTaskRunner:
        runner = super().duplicate()
        assert isinstance(runner, DaskTaskRunner)
        runner._lent = self._lent
        return runner

    def _settings(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "cluster_class": self.cluster_class,
            "cluster_kwargs": self.cluster_kwargs,
            "client_kwargs": self.client_kwargs,
            "adapt_kwargs": self.adapt_kwargs,
            "resources": self.resources,
        }

    @property
    def client(self) -> Any:
        """The :class:`distributed.Client` of a started runner (a cluster of its
        own starts here, at the first use)."""
        if self._pending or self._start_error is not None:
            self._start_now()
        if self._client is None:
            raise RunnerError("the DaskTaskRunner is not started; it starts when a flow run begins")
        return self._client

    @property
    def dashboard_link(self) -> str | None:
        if self._client is None:
            return None
        link = self._client.dashboard_link
        scheduler = getattr(self._cluster, "scheduler", None)
        if link and scheduler is not None and str(getattr(scheduler, "address", "")).startswith("inproc://"):
            # An in-process scheduler's address names a placeholder host
            # (inproc://192.0.2.2/...), and Dask builds the link from it; name
            # the interface the dashboard really listens on.
            return _inproc_dashboard_link(link, scheduler)
        return link

    def start(self) -> None:
        from distributed import Client

        client_kwargs = {"set_as_default": False, **(self.client_kwargs or {})}
        if self._lent is not None:
            self._client = self._lent
            self._borrowed = True
        elif self.address is None and self.cluster_class is None and not self.cluster_kwargs and in_worker_task():
            from distributed import get_client

            # Already on a cluster: use it (a LocalCluster cannot start inside a
            # worker, whose process is a daemon). Seceding frees this thread's
            # slot for the run's own tasks.
            self._client = get_client()
            self._borrowed = True
            self._seceded = ensure_seceded()
        elif self.address is not None:
            try:
                self._client = Client(self.address, **client_kwargs)
            except OSError as exc:
                raise RunnerError(
                    f"cannot connect to the Dask scheduler at {self.address!r}: {exc}. "
                    "Check that `dask scheduler` is running there, or drop address= to start a local cluster."
                ) from exc
            self._check_workers()
        else:
            # A cluster of the run's own starts when a task run first has to
            # execute (the client's first use): a fully cached run never waits
            # seconds for worker processes it has nothing to give.
            self._cluster_class()  # a bad cluster_class fails now, before the run
            self._pending = True
            return
        self._watch_workers()

    def _watch_workers(self) -> None:
        timeout = no_workers_timeout()
        if timeout is not None and not self._borrowed:
            # A borrowed client's run holds a worker itself: the count never drops to zero.
            self._watch = _NoWorkersWatch(self._client, timeout)

    def _start_now(self) -> None:
        """Start the runner's own cluster (once; a failure is raised again at each use)."""
        from distributed import Client

        with self._start_lock:
            if self._start_error is not None:
                raise self._start_error
            if not self._pending:
                return
            self._pending = False
            hooks, self._on_start = self._on_start, []
            for before, _ in hooks:
                if before is not None:
                    before()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    # Dask warns on stderr (port 8787 in use, ...) in the middle of
                    # the run's console lines: say it once, as a run log line.
                    warnings.simplefilter("always")
                    self._cluster = self._start_cluster()
                for warning in caught:
                    text = " ".join(str(warning.message).split())
                    if "already in use" in text:
                        logger.debug("%s", text)  # the run's "Dask dashboard:" line names the port used
                    else:
                        logger.warning("starting the local Dask cluster: %s", text)
                try:
                    self._client = Client(self._cluster, **{"set_as_default": False, **(self.client_kwargs or {})})
                except BaseException:
                    self._cluster.close()
                    self._cluster = None
                    raise
            except Exception as exc:
                error = exc if isinstance(exc, (RunnerError, InvalidOptionError)) else RunnerError(f"the local Dask cluster failed to start: {exc}")
                if error is not exc:
                    error.__cause__ = exc
                self._start_error = error
                raise error from None
            self._watch_workers()
            sinks, self._pending_sinks = self._pending_sinks, {}
            for flow_run_id, sink in sinks.items():
                _ReportRouter.add(self._client, flow_run_id, sink)
        for _, callback in hooks:
            callback()

    def when_started(self, callback: Callable[[], None], before: Callable[[], None] | None = None) -> None:
        with self._start_lock:
            if self._pending:
                self._on_start.append((before, callback))
                return
        if self._client is not None:
            callback()

    def _start_cluster(self) -> Any:
        cls = self._cluster_class()
        kwargs = dict(self.cluster_kwargs or {})
        from distributed import LocalCluster

        if cls is LocalCluster:
            defaults = dict(LOCAL_CLUSTER_DEFAULTS)
            if kwargs.get("processes", True):
                defaults["host"] = "127.0.0.1"
                defaults["preload"] = [WORKERS_LEAVE_CTRL_C_TO_THE_DRIVER]
            kwargs = {**defaults, **kwargs}
        try:
            cluster = start_loopback_cluster(cls, kwargs) if cls is LocalCluster else cls(**kwargs)
        except TypeError as exc:
            raise InvalidOptionError(f"cluster_kwargs {kwargs!r} are not accepted by {cls.__name__}: {exc}") from exc
        if self.adapt_kwargs is not None:
            cluster.adapt(**self.adapt_kwargs)
        return cluster

    def _cluster_class(self) -> type:
        from distributed import LocalCluster

        cls = self.cluster_class or LocalCluster
        if isinstance(cls, str):
            module_name, _, attr = cls.rpartition(".")
            try:
                cls = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError, ValueError) as exc:
                raise InvalidOptionError(
                    f"cluster_class {self.cluster_class!r} cannot be imported ({exc}); "
                    "give the full path like 'dask_jobqueue.SLURMCluster' and install its package"
                ) from exc
        if not callable(cls):
            raise InvalidOptionError(f"cluster_class must be a class or an import path, got {cls!r}")
        return cls

    def _check_workers(self) -> None:
        """Fail before any task is submitted if workers cannot import daskflow."""
        if not self._client.scheduler_info(n_workers=-1).get("workers"):
            return  # nobody to ask yet (adaptive cluster); tasks will wait for workers
        try:
            versions = self._client.run(_daskflow_version)
        except ImportError as exc:
            self.shutdown()
            raise RunnerError(
                f"the Dask workers at {self.address} cannot import daskflow ({exc}); "
                "install daskflow in the workers' environment (pip install daskflow)"
            ) from exc
        from daskflow import __version__

        mismatched = {w: v for w, v in versions.items() if v != __version__}
        if mismatched:
            logger.warning("daskflow %s on this machine but %s on workers", __version__, mismatched)

    def shutdown(self) -> None:
        with self._start_lock:
            self._pending = False
            self._start_error = None
            self._pending_sinks = {}
            self._on_start = []
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._shared = {}
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None and self._borrowed:
            self._borrowed = False
            if self._seceded:
                from distributed import rejoin

                self._seceded = False
                rejoin()  # the caller goes on computing in its task: take a slot again
            return
        try:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        finally:
            loud, self._loud = self._loud, None
            for name, level in (loud or {}).items():
                logging.getLogger(name).setLevel(level)

    def silence_teardown(self) -> None:
        """Quiet Dask after Ctrl-C: the tasks it cuts short make Dask warn, on the
        workers ("ended with CancelledError") and in the nannies ("still alive after
        4.0 seconds, killing"), about a stop the user asked for. Only the logs of a
        cluster this runner started are touched, never those of a scheduler it
        joined; :meth:`shutdown` restores this process's levels."""
        if self._cluster is None or self._client is None or self._loud is not None:
            return
        self._loud = _quiet_dask_logs()
        try:
            self._client.run(_quiet_dask_logs)
        except Exception:  # workers Ctrl-C stopped too: nothing left to quiet there
            logger.debug("could not quiet the workers' logs", exc_info=True)

    def subscribe(self, flow_run_id: str, sink: ReportSink) -> None:
        with self._start_lock:
            if self._pending:
                self._pending_sinks[flow_run_id] = sink  # added when the cluster starts
                return
        _ReportRouter.add(self.client, flow_run_id, sink)

    def unsubscribe(self, flow_run_id: str) -> None:
        with self._start_lock:
            self._pending_sinks.pop(flow_run_id, None)
        if self._client is not None:
            _ReportRouter.remove(self._client, flow_run_id)
            if flow_run_id in self._facts_sent:
                from distributed import Variable

                self._facts_sent.discard(flow_run_id)
                Variable(run_facts.variable_name(flow_run_id), self._client).delete()

    def answer_run_facts(self, flow_run_id: str, facts: Callable[[], Any]) -> None:
        # Asked by a task on a worker (run_facts_on_worker): sent once per run, pickled
        # (a variable holds msgpack data); each process that asked keeps it while it runs the run's tasks.
        if flow_run_id in self._facts_sent or self._client is None:
            return
        from distributed import Variable

        Variable(run_facts.variable_name(flow_run_id), self._client).set(run_facts.encode(facts))
        self._facts_sent.add(flow_run_id)

    def prepare(self, name: str, fn: Callable[..., Any]) -> Any:
        blob = cloudpickle.dumps(fn)
        if len(blob) <= SHIP_ONCE_BYTES:
            return fn  # pickled by reference or tiny: cheaper to send along than to depend on
        return self.client.submit(load_callable, blob, key=f"daskflow-fn-{name}-{uuid.uuid4().hex}", pure=False)

    def load(self, ref: StoredRef) -> Any:
        # One load per run, kept in cluster memory and moved worker to worker
        # like any result, however many tasks take it as input.
        return self.client.submit(load_on_worker, ref, key=f"daskflow-load-{ref.key[:20]}-{uuid.uuid4().hex[:12]}", pure=False)

    def share(self, value: Any) -> Any:
        # A task, not client.scatter: Dask recomputes a task's value from its spec
        # when the worker holding it dies, while scattered data is lost with it.
        if payload_bytes(value) < SHARE_BYTES:
            return value
        entry = self._shared.get(id(value))
        if entry is None or entry[0] is not value:
            entry = self._shared[id(value)] = (value, self.client.submit(
                shared_value, value, key=f"daskflow-arg-{type(value).__name__}-{uuid.uuid4().hex}", pure=False))
        return entry[1]

    def shares_memory(self) -> bool:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return bool(workers) and all(address.startswith("inproc://") for address in workers)

    def _resources(self, call: AttemptCall) -> dict[str, float] | None:
        if not self.resources:
            return call.resources
        return {**self.resources, **(call.resources or {})}

    def submit(self, calls: Sequence[AttemptCall]) -> list[Any]:
        handles = self._submit(calls)
        if self._watch is not None:
            self._watch.add(handles)
        return handles

    def _submit(self, calls: Sequence[AttemptCall]) -> list[Any]:
        from distributed import Future

        client = self.client
        # Arguments travel sealed (their repr shows nothing, see SealedArguments);
        # the futures in them go beside, as Dask dependencies, then those waited for.
        sealed = [SealedArguments.seal(c.args, c.kwargs, c.spec.task_run_name, Future) for c in calls]
        extra = [[*lifted, *c.wait_for] for (_, lifted), c in zip(sealed, calls, strict=True)]
        if len(calls) == 1 or len({len(e) for e in extra}) > 1:
            return [
                client.submit(run_on_worker, call.fn, call.spec, box, *more, key=call.key, resources=self._resources(call), pure=False)
                for call, (box, _), more in zip(calls, sealed, extra, strict=True)
            ]
        # One message to the scheduler for the whole batch (Task.map): every call
        # has as many dependencies, passed as that many more iterables.
        return client.map(
            run_on_worker,
            [c.fn for c in calls],
            [c.spec for c in calls],
            [box for box, _ in sealed],
            *[list(column) for column in zip(*extra, strict=True)],
            key=[c.key for c in calls],
            resources=self._resources(calls[0]),
            pure=False,
            batch_size=None,
        )

    def add_done_callback(self, handle: Any, callback: Callable[[Any], None]) -> None:
        handle.add_done_callback(callback)

    def outcome(self, handle: Any) -> Outcome:
        status = handle.status
        if status == "finished":
            return Outcome("finished")
        if status == "cancelled":
            message = self._watch.failed.get(handle.key) if self._watch is not None else None
            return Outcome("error", NoWorkersError(message)) if message else Outcome("cancelled")
        if status == "lost":
            return Outcome("error", LookupError(f"the result of {handle.key!r} was lost with its worker"))
        try:
            error = handle.exception()
        except Exception as exc:  # e.g. cancelled between the status read and the fetch
            return Outcome("error", exc)
        if type(error).__name__ == "NoWorkerError":  # the scheduler's own no-workers-timeout, where set
            timeout = getattr(error, "timeout", None) or 0
            address = getattr(self._client.scheduler, "address", "the scheduler") if self._client is not None else "the scheduler"
            error = NoWorkersError(no_workers_message(address, timeout, "distributed.scheduler.no-workers-timeout"))
        return Outcome("error", error)

    def outcome_known_failed(self, handle: Any) -> bool:
        return handle.status in ("error", "cancelled", "lost")

    def result(self, handle: Any, timeout: float | None = None) -> Any:
        return handle.result(timeout=timeout)

    def cancel(self, handles: Sequence[Any]) -> None:
        if handles and self._client is not None:
            self._client.cancel(list(handles))
