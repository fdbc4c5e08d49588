"""The one progress protocol and the one cancellation token of the core.

Every long core call (prep, build, verify, bench, classify) takes both explicitly::

    def build(plan: BuildPlan, *, progress: Progress = no_progress, cancel: CancelToken = NEVER) -> ...

``progress(done, total, message)``: ``total`` 0 means "no known total" (a phase or a log line).
``cancel`` is polled in loops (``cancel.check(what)`` raises ``CancelledError``); the worker's job
owns one and ``job.cancel()`` sets it. There is no ambient job: a function that is not given a
token cannot be cancelled, and says so by its signature.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from ncanvas_tui.errors import CancelledError

log = logging.getLogger(__name__)


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str, /) -> None: ...


def no_progress(done: int, total: int, message: str, /) -> None:
    """The default ``Progress``: says nothing."""


class CancelToken:
    """A cancel flag passed explicitly. Calling it (``token()``) says whether it was cancelled,
    so it also fits code that polls a ``Callable[[], bool]`` (child processes, calibration loops)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __call__(self) -> bool:
        return self.cancelled

    def check(self, what: str) -> None:
        """Raise ``CancelledError("<what> cancelled")`` once cancelled."""
        if self.cancelled:
            raise CancelledError(f"{what} cancelled")

    def __repr__(self) -> str:
        return f"<CancelToken {'cancelled' if self.cancelled else 'live'}>"


class _Never(CancelToken):
    """The default token: never cancelled (``cancel()`` is refused: it is shared)."""

    __slots__ = ()

    def cancel(self) -> None:
        raise RuntimeError("NEVER cannot be cancelled: pass a CancelToken of your own")


NEVER: CancelToken = _Never()


def guarded(progress: Progress) -> Progress:
    """``progress`` wrapped so that a failing callback is logged and never breaks the work."""
    if progress is no_progress:
        return progress

    def call(done: int, total: int, message: str, /) -> None:
        try:
            progress(done, total, message)
        except Exception:
            log.exception("progress callback failed")

    return call
