"""``FaultyFS``: an fsspec filesystem over another one that fails on purpose.

RELIABILITY.md section 6: "a thin fsspec wrapper filesystem in our test tree that
injects a chosen exception on the Nth call of a given method". It forwards the
calls a :class:`~daskflow.Store` makes (``pipe_file``, ``cat_file``, ``cat``,
``info``, ``exists``, ``rm_file``, ``find``, ``ls``) to the target filesystem and
raises, on the calls its ``faults`` name, the exception the real backend would
raise there: s3fs's ``OSError`` for ``SlowDown`` (with botocore's ``ClientError``
as its cause), a read timeout, ``PermissionError`` for ``AccessDenied``, a reset
connection.

It works from Dask workers: everything it needs travels in its storage options
(JSON), calls are counted across processes in a state folder (under a file lock),
and every call is logged there, so a test can count the tries of one object.
Register the protocol in each process with :func:`register` (on workers:
``client.register_plugin(FaultyFSPlugin())``).

Example::

    Store("faulty:///tmp/store", storage_options={
        "target_protocol": "file", "target_options": {"auto_mkdir": True},
        "state": "/tmp/faults",
        "faults": [{"method": "pipe_file", "every": 5, "at": [2, 4], "error": ["slowdown", "timeout"]}],
    })
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
from distributed.diagnostics.plugin import WorkerPlugin
from fsspec.spec import AbstractFileSystem

PROTOCOL = "faulty"
#: The methods a Store calls; each can be named in a fault.
METHODS = ("pipe_file", "cat_file", "cat", "info", "exists", "rm_file", "find", "ls")


def make_error(name: str, path: str) -> BaseException:
    """The exception a real backend raises for fault ``name`` on ``path``."""
    if name in ("slowdown", "denied", "internal", "nobucket"):
        from botocore.exceptions import ClientError
        from s3fs.errors import translate_boto_error

        code, status, message = {
            "slowdown": ("SlowDown", 503, "Please reduce your request rate."),
            "denied": ("AccessDenied", 403, "Access Denied"),
            "internal": ("InternalError", 500, "We encountered an internal error. Please try again."),
            "nobucket": ("NoSuchBucket", 404, "The specified bucket does not exist"),
        }[name]
        response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
        # What s3fs raises once its own retries are spent: botocore's error, translated.
        return translate_boto_error(ClientError(response, "PutObject"))
    if name == "timeout":
        from botocore.exceptions import ReadTimeoutError

        return ReadTimeoutError(endpoint_url=f"faulty://{path}")
    if name == "reset":
        return ConnectionResetError(104, "Connection reset by peer")
    if name == "permission":
        return PermissionError(13, "Permission denied", path)
    raise ValueError(f"unknown fault {name!r}")


class FaultyFS(AbstractFileSystem):
    """Forwards to ``target_protocol`` and fails the calls ``faults`` select.

    Parameters
    ----------
    target_protocol, target_options
        The filesystem wrapped (``"file"`` with ``{"auto_mkdir": True}``, ``"s3"``...).
    state : str
        A folder shared by every process: call counters and ``calls.jsonl``.
    faults : list of dict
        Each: ``method`` (one of :data:`METHODS`, or ``"*"``); which of its calls fail,
        counted over calls whose path contains ``match`` (default: any): ``calls``
        (1-based numbers) or ``every`` N with ``at`` (positions 1..N in each block
        of N); ``error`` (a :func:`make_error` name, or a list used in turn);
        ``after`` (true: make the call, then raise, as when the answer is lost).
    """

    protocol = PROTOCOL
    cachable = False  # counters live in the state folder, not the instance

    def __init__(
        self,
        target_protocol: str = "file",
        target_options: Mapping[str, Any] | None = None,
        state: str = "",
        faults: list[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not state:
            raise ValueError("FaultyFS needs a state folder shared by every process")
        self.target = fsspec.filesystem(target_protocol, **dict(target_options or {}))
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.faults = [dict(f) for f in faults or ()]

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3:]
        return path.rstrip("/") or "/"

    # ---------------------------------------------------------------- faults
    def _count(self, index: int) -> int:
        """The next number of fault ``index``'s matching calls, over every process."""
        with open(self.state / f"counter-{index}", "a+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.seek(0)
            number = int(file.read() or 0) + 1
            file.seek(0)
            file.truncate()
            file.write(str(number))
            return number

    def _fault(self, method: str, path: str) -> tuple[BaseException | None, bool, list[int]]:
        """The error this call gets (and whether after the call), if any, and the
        call's number under each matching fault. Every matching fault counts the
        call, so each fault's numbers are its own."""
        chosen_error: tuple[BaseException | None, bool] = (None, False)
        numbers: list[int] = []
        for index, fault in enumerate(self.faults):
            if fault.get("method") not in (method, "*") or fault.get("match", "") not in path:
                continue
            number = self._count(index)
            numbers.append(number)
            if "calls" in fault:
                chosen = list(fault["calls"])
                hit = number in chosen
                turn = chosen.index(number) if hit else 0  # which of the faults this is, to pick its error
            else:
                every, chosen = int(fault.get("every", 1)), list(fault.get("at", [1]))
                position = (number - 1) % every + 1
                hit = position in chosen
                turn = (number - 1) // every * len(chosen) + chosen.index(position) if hit else 0
            if hit and chosen_error[0] is None:
                errors = fault["error"] if isinstance(fault["error"], list) else [fault["error"]]
                chosen_error = (make_error(errors[turn % len(errors)], path), bool(fault.get("after", False)))
        return (*chosen_error, numbers)

    def _log(self, method: str, path: str, outcome: str, numbers: list[int]) -> None:
        # ``n``: the call's numbers under its faults. The log's order is when calls
        # ended, which across processes is not the order they were counted in.
        line = json.dumps({"m": method, "p": path, "o": outcome, "n": numbers, "pid": os.getpid(), "t": time.time()}) + "\n"
        with open(self.state / "calls.jsonl", "a") as file:  # O_APPEND: whole lines from every process
            file.write(line)

    def _run(self, method: str, path: str, call: Any) -> Any:
        error, after, numbers = self._fault(method, path)
        if error is not None and not after:
            self._log(method, path, f"raised {type(error).__name__}", numbers)
            raise error
        try:
            value = call()
        except Exception as exc:
            self._log(method, path, f"target raised {type(exc).__name__}", numbers)
            raise
        if error is not None:
            self._log(method, path, f"done, then raised {type(error).__name__}", numbers)
            raise error
        self._log(method, path, "ok", numbers)
        return value

    # -------------------------------------------------------------- forwarded
    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        if mode == "create":
            def call() -> None:
                if self.target.exists(path):
                    raise FileExistsError(path)
                self.target.pipe_file(path, value, **kwargs)
        else:
            def call() -> None:
                self.target.pipe_file(path, value, **kwargs)
        return self._run("pipe_file", path, call)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        return self._run("cat_file", path, lambda: self.target.cat_file(path, start=start, end=end, **kwargs))

    def cat(self, path: Any, recursive: bool = False, on_error: str = "raise", **kwargs: Any) -> Any:
        paths = path if isinstance(path, list) else [path]
        out: dict[str, Any] = {}
        for one in paths:
            one = self._strip_protocol(one)
            try:
                out[one] = self._run("cat", one, lambda one=one: self.target.cat_file(one, **kwargs))
            except Exception as exc:
                if on_error == "raise":
                    raise
                out[one] = exc
        return out if isinstance(path, list) else out[self._strip_protocol(path)]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        return self._run("info", path, lambda: self.target.info(path, **kwargs))

    def exists(self, path: str, **kwargs: Any) -> bool:
        path = self._strip_protocol(path)
        return self._run("exists", path, lambda: self.target.exists(path, **kwargs))

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        return self._run("rm_file", path, lambda: self.target.rm_file(path))

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        return self._run("find", path, lambda: self.target.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        return self._run("ls", path, lambda: self.target.ls(path, detail=detail, **kwargs))


def register() -> None:
    """Make ``faulty://`` known to fsspec in this process."""
    fsspec.register_implementation(PROTOCOL, FaultyFS, clobber=True)


class FaultyFSPlugin(WorkerPlugin):
    """A Dask worker plugin that registers ``faulty://`` on every worker, restarted ones too."""

    name = "daskflow-tests-faulty-fs"

    def setup(self, worker: Any) -> None:
        register()


def calls(state: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every call logged in ``state`` (all processes), in order of logging."""
    path = Path(state) / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def calls_of(state: str | os.PathLike[str], method: str, contains: str = "") -> Iterator[dict[str, Any]]:
    return (c for c in calls(state) if c["m"] == method and contains in c["p"])


register()
