"""State hooks: the hook lists of tasks and flows, and the run views hooks get.

Hooks have Prefect 3's signatures: ``hook(task, task_run, state)`` for tasks and
``hook(flow, flow_run, state)`` for flows. The run passed is a read-only view
of daskflow's run record (``id``, ``name``, ``parameters``, ``tags``, ``state``
and the record's other fields): a hook reads the run, it cannot change it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

__all__ = ["HookList", "RunView"]


class HookList(list):  # type: ignore[type-arg]
    """The hooks of one kind (``on_completion``, ...) of a task or flow.

    A list, and callable as a decorator that adds a hook, as in Prefect::

        @my_flow.on_completion
        def notify(flow, flow_run, state): ...
    """

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"a hook must be callable, got {fn!r}")
        self.append(fn)
        return fn


class RunView:
    """A read-only view of a task run or flow run record, for hooks.

    Attributes read through to the record (so ``state`` is the current one);
    ``parameters`` are the run's bound arguments.
    """

    __slots__ = ("_parameters", "_record")

    def __init__(self, record: Any, parameters: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_record", record)
        object.__setattr__(self, "_parameters", parameters)

    @property
    def parameters(self) -> dict[str, Any]:
        if self._parameters is not None:
            return dict(self._parameters)
        return dict(getattr(self._record, "parameters", None) or {})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._record, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self._record).__name__} views passed to hooks are read-only (tried to set {name!r})")

    def __dir__(self) -> Iterable[str]:
        return sorted({*dir(self._record), "parameters"})

    def __repr__(self) -> str:
        return f"RunView({self._record.name!r}, state={self._record.state.name!r})"
