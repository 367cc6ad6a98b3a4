"""``LogEavesdropper``: collect the records of one logger while a block runs (Prefect's
``prefect.logging.LogEavesdropper``), for tests and for showing a library's log lines."""

from __future__ import annotations

import logging
from typing import Any

from ..masking import MaskingFilter

__all__ = ["LogEavesdropper"]


class LogEavesdropper(logging.Handler):
    """A context manager that keeps the lines logged to ``eavesdrop_on`` (and its
    child loggers) inside the block; :meth:`text` returns them.

    Each line reads ``[LEVEL]: message`` (no times, paths or versions: safe to show
    back to a user), with known secrets masked like every line daskflow keeps.

    Parameters
    ----------
    eavesdrop_on : str
        The name of the logger to listen to: ``"daskflow.runs"`` for the flow-run and
        task-run log lines of the runs this process drives.
    level : int, optional
        The lowest level kept. Inside the block the logger's own level is set to it
        (restored afterwards), as in Prefect; the default ``NOTSET`` leaves the
        effective level to the logger's parents.

    Examples
    --------
    >>> import logging
    >>> from daskflow.logging import LogEavesdropper
    >>> with LogEavesdropper("my_library", level=logging.INFO) as eavesdropper:
    ...     logging.getLogger("my_library.io").info("read %d rows", 3)
    >>> eavesdropper.text()
    '[INFO]: read 3 rows'
    """

    def __init__(self, eavesdrop_on: str, level: int = logging.NOTSET) -> None:
        if not isinstance(eavesdrop_on, str):
            raise TypeError(f"LogEavesdropper takes a logger name like 'daskflow.runs', got {eavesdrop_on!r}")
        super().__init__(level=level)
        self.eavesdrop_on = eavesdrop_on
        self.setFormatter(logging.Formatter("[%(levelname)s]: %(message)s"))
        self.addFilter(MaskingFilter())
        self._lines: list[str] = []
        self._logger: logging.Logger | None = None
        self._saved_level = logging.NOTSET

    def __enter__(self) -> LogEavesdropper:
        self._logger = logging.getLogger(self.eavesdrop_on)
        self._saved_level = self._logger.level
        self._logger.setLevel(self.level)
        self._lines = []
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._logger is not None:
            self._logger.removeHandler(self)
            self._logger.setLevel(self._saved_level)
            self._logger = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # a bad record must not break the code being listened to
            self.handleError(record)

    def text(self) -> str:
        """The lines kept so far, one per record, joined by newlines."""
        return "\n".join(self._lines)
