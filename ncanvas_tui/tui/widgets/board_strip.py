"""The board strip: one line with the board's power, GPU load and clock, hottest temperature,
RAM and a THROTTLED mark, on every screen (``[tui].board_strip``).

About once a second a thread worker reads the board (``board.shared_reader()``: sysfs files,
NVML) and posts a ``BoardUpdate``; the handler only sets the text, so the event loop never
waits on a file or a library. Only the figures this machine exposes are shown; with none the
strip hides itself. The strip of a screen that is not shown does not read.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.widgets import Static
from textual.worker import Worker

from ncanvas_tui.tui.messages import BoardUpdate

INTERVAL_S = 1.0


class BoardStrip(Static):
    DEFAULT_CSS = """
    BoardStrip { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    BoardStrip.-empty { display: none; }
    """

    def __init__(self) -> None:
        super().__init__("", classes="-empty")
        self.state: dict[str, Any] = {}
        #: seconds the event loop spent on this strip (tick + update), for bench/bench_tui.py
        self.ui_s = 0.0
        self.updates = 0

    def on_mount(self) -> None:
        self._read()
        self.set_interval(INTERVAL_S, self._tick)

    def _tick(self) -> None:
        t0 = time.perf_counter()
        if self.screen.is_current:
            self._read()
        self.ui_s += time.perf_counter() - t0

    @work(thread=True, exclusive=True, group="board-strip", exit_on_error=False, description="board strip")
    def _read(self) -> None:
        from ncanvas_tui.board.state import shared_reader

        self.post_message(BoardUpdate(shared_reader().read()))

    @on(Worker.StateChanged)
    def _own_worker(self, event: Worker.StateChanged) -> None:
        event.stop()  # the screen's job hooks (progress bars, buttons) are not about the strip

    def on_board_update(self, message: BoardUpdate) -> None:
        t0 = time.perf_counter()
        message.stop()
        self.state = message.state
        text = strip_text(message.state)
        self.set_class(text is None, "-empty")
        if text is not None:
            self.update(text)
        self.updates += 1
        self.ui_s += time.perf_counter() - t0


def strip_text(state: dict[str, Any]) -> Text | None:
    from ncanvas_tui.board.state import describe_live

    parts = describe_live(state)
    if not parts:
        return None
    text = Text("board ", style="bold")
    for i, part in enumerate(parts):
        if i:
            text.append(" · ", style="dim")
        text.append(part, style="bold reverse red" if part == "THROTTLED" else "")
    return text
