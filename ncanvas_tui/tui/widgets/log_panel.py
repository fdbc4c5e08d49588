"""A log panel fed by Python logging (Polygraphy and TensorRT lines included).

``TuiLogHandler`` is a ``logging.Handler`` that posts ``LogLine`` messages to the
app (thread-safe), so library logs never go to raw stdout under the app. The app
keeps a backlog and forwards lines to every mounted ``LogPanel``.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from ncanvas_tui.tui.messages import LogLine

LEVEL_STYLE = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}


NAMED = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)


def level_name(levelno: int) -> str:
    """The standard name at or below ``levelno``: a library's own level (TensorRT's 22, say) reads as
    INFO, never as "Level 22"."""
    return logging.getLevelName(next((n for n in NAMED if levelno >= n), logging.DEBUG))


class TuiLogHandler(logging.Handler):
    """Posts every record to the app as a ``LogLine`` (safe from any thread)."""

    def __init__(self, app: Any, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.app = app
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.app.post_message(LogLine(level_name(record.levelno), record.name, text))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class LogPanel(RichLog):
    """Shows the app's log lines (backlog first, then live)."""

    DEFAULT_CSS = """
    LogPanel { height: 8; border: round $primary-darken-2; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, highlight=False, **kwargs)
        self.border_title = "log"

    def on_mount(self) -> None:
        panels = getattr(self.app, "log_panels", None)
        if panels is not None:
            panels.add(self)
            for line in list(getattr(self.app, "log_lines", [])):
                self.add(line)

    def on_unmount(self) -> None:
        panels = getattr(self.app, "log_panels", None)
        if panels is not None:
            panels.discard(self)

    def add(self, line: LogLine) -> None:
        style = LEVEL_STYLE.get(line.level, "")
        prefix = "" if line.level in ("INFO", "PRINT") else f"{line.level.lower()}: "
        self.write(Text(f"{prefix}{line.text}", style=style))
