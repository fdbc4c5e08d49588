"""Helpers for the TUI tests (tests/test_tui*.py): build the app on a test settings
file, wait for things to happen on screen, read the screen as plain text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncanvas_tui import settings as settings_mod
from ncanvas_tui.tui.app import NcanvasApp

PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


def make_app(settings_path: Path, *, start: str | None = None, record_history: bool = True,
             extra: str = "") -> NcanvasApp:
    """The app on ``settings_path`` (plus ``extra`` TOML appended), previews forced to half-blocks."""
    if extra:
        with open(settings_path, "a", encoding="utf-8") as f:
            f.write("\n" + extra + "\n")
    app = NcanvasApp(settings_mod.load(settings_path), previews="halfcell", start=start,
                     record_history=record_history)
    # keep every notification (toasts expire; a slow machine must not make a test miss one)
    app.notified = []  # type: ignore[attr-defined]
    shown = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        app.notified.append(str(message))  # type: ignore[attr-defined]
        shown(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return app


def screen_text(app: Any) -> str:
    """What the terminal shows right now, as plain text (one line per row)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def notes(app: Any) -> list[str]:
    """The notifications shown so far (messages)."""
    return list(getattr(app, "notified", [])) or [str(n.message) for n in app._notifications]


async def wait_for(pilot: Any, cond: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Pause the pilot until ``cond()`` is truthy; fail with the screen text after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        value = cond()
        if value:
            return value
    raise AssertionError(f"timed out waiting for {what or cond}; notifications: {notes(pilot.app)}\n"
                         f"{screen_text(pilot.app)}")


async def type_path(pilot: Any, path: str | Path) -> None:
    """Focus the Infer path input, replace its text with ``path``, press Enter."""
    inp = pilot.app.screen.query_one("#picker-input")
    inp.focus()
    inp.value = str(path)
    inp.cursor_position = len(inp.value)
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause()


async def settle(pilot: Any) -> None:
    """Let workers (thumbnails, table loads) finish and the screen repaint."""
    from textual.widgets import DirectoryTree

    def busy() -> list[Any]:  # the directory tree's loader runs for as long as the tree lives
        return [w for w in pilot.app.workers if w.is_running and not isinstance(w.node, DirectoryTree)
                and w.group != "board-strip"]  # the board strip's reader runs for as long as the strip

    deadline = time.monotonic() + 20
    while busy() and time.monotonic() < deadline:
        await pilot.pause(0.02)
    await pilot.pause()
    await asyncio.sleep(0.05)
    await pilot.pause()
