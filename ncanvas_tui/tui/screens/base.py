"""What every screen shares: the navigation strip, the footer, worker error handling."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from ncanvas_tui.tui.navigation import SCREENS, fkey


class NavBar(Static):
    """``ncanvas  F2 Engines  F3 Infer ...  ? help`` with the current screen highlighted.

    It shows the function keys: they switch from anywhere, text fields included (the number
    keys 1-5 do too, outside text fields; the help screen says so)."""

    DEFAULT_CSS = """
    NavBar { height: 1; background: $panel; color: $text-muted; }
    """

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def on_mount(self) -> None:
        self.update(self._text())

    def _text(self) -> Text:
        text = Text(" ncanvas ", style="bold")
        keymap = getattr(self.app, "_keymap", {})
        for mode, (title, _digit) in SCREENS.items():
            key = fkey(mode).upper()
            mapped = keymap.get(f"screen_{mode}")
            if mapped:
                key = mapped[0] if isinstance(mapped, (list, tuple)) else str(mapped).split(",")[0]
            style = "bold reverse" if mode == self.current else ""
            text.append(" ")
            text.append(f" {key} {title} ", style=style)
        text.append("   ? help", style="dim")
        return text


class NcScreen(Screen):
    """Base screen: subclasses set MODE and implement ``compose_body``."""

    MODE = ""

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield from self.compose_body()
        if getattr(self.settings.tui, "board_strip", True):
            from ncanvas_tui.tui.widgets.board_strip import BoardStrip

            yield BoardStrip()
        yield Footer()

    def compose_body(self) -> ComposeResult:  # pragma: no cover - overridden
        yield from ()

    def key(self, binding_id: str) -> str:
        """The key in force for ``binding_id`` ("Ctrl+N", "F3"): every hint is derived from it."""
        return str(self.app.key_for(binding_id))  # type: ignore[attr-defined]

    @property
    def settings(self) -> Any:
        return self.app.settings  # type: ignore[attr-defined]

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """Errors of every worker on this screen end up here: a notification, never a crash."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.report(event.worker.error, event.worker.description or event.worker.name)  # type: ignore[attr-defined]
            self.job_ended(event.worker, failed=True)
        elif event.state in (WorkerState.SUCCESS, WorkerState.CANCELLED):
            self.job_ended(event.worker, failed=False)

    def job_ended(self, worker: Worker[Any], failed: bool) -> None:
        """Hook: a worker of this screen ended (reset progress bars, buttons...)."""
