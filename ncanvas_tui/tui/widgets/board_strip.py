"""The board strip: one line with the board's power, GPU load and clock, hottest temperature,
RAM and a THROTTLED mark, on every screen (``[tui].board_strip``).

A thread worker of the strip reads the board (``board.shared_reader()``: sysfs files, NVML)
about once a second and posts a ``BoardUpdate``; the handler only sets the text (and only when
it changed), so the event loop never waits on a file or a library. The worker is woken by a
once-a-second timer while the strip's screen is shown: a screen in the background reads
nothing. Only the figures this machine exposes are shown; with none the strip hides itself.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.widgets import Static
from textual.worker import Worker, get_current_worker

from ncanvas_tui.tui.messages import BoardUpdate

INTERVAL_S = 1.0
#: the worker group of the strip's reader (test helpers that wait for idle workers leave it out)
GROUP = "board-strip"


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
        self._text: Text | None = None
        self._reader_wake = threading.Event()
        self._reader_stop = threading.Event()

    def on_mount(self) -> None:
        self._reader_wake.set()  # a first reading at once
        self._reader()
        self.set_interval(INTERVAL_S, self._tick)

    def on_unmount(self) -> None:
        self._reader_stop.set()
        self._reader_wake.set()

    def _tick(self) -> None:
        t0 = time.perf_counter()
        if self.screen.is_current:
            self._reader_wake.set()
        self.ui_s += time.perf_counter() - t0

    @work(thread=True, exclusive=True, group=GROUP, exit_on_error=False, description="board strip")
    def _reader(self) -> None:
        from ncanvas_tui.board.state import shared_reader

        worker = get_current_worker()
        reader = shared_reader()
        while True:
            # woken by the timer (screen shown) or unmount; the timeout bounds how long a cancelled
            # worker that nobody woke can keep its thread (an exiting interpreter joins it)
            woke = self._reader_wake.wait(timeout=2.0)
            if self._reader_stop.is_set() or worker.is_cancelled:
                return
            if not woke:
                continue
            self._reader_wake.clear()
            self.post_message(BoardUpdate(reader.read()))

    @on(Worker.StateChanged)
    def _own_worker(self, event: Worker.StateChanged) -> None:
        event.stop()  # the screen's job hooks (progress bars, buttons) are not about the strip

    def on_board_update(self, message: BoardUpdate) -> None:
        t0 = time.perf_counter()
        message.stop()
        self.state = message.state
        text = strip_text(message.state)
        if text != self._text:
            shown = self._text is not None
            self._text = text
            self.set_class(text is None, "-empty")
            if text is not None:
                self.update(text, layout=not shown)  # one line of fixed size: no layout pass once shown
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
