"""Capture (Ctrl+G on Infer): the ``[capture].source`` open, with a preview refreshed at
``[capture].preview_fps`` while it is open. Enter grabs ``[capture].frames`` frames, saves them
under ``[paths].output/captures/`` and returns their paths (Infer then classifies them); Esc
closes the source and returns nothing. A source that cannot be opened is one notification."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from ncanvas_tui.tui.widgets.preview import image_widget_class


class CaptureScreen(ModalScreen[list[str] | None]):
    DEFAULT_CSS = """
    CaptureScreen { align: center middle; }
    CaptureScreen > #capture-box { width: 80%; height: 80%; border: thick $primary; padding: 0 1; }
    CaptureScreen #capture-image { width: 100%; height: 1fr; }
    CaptureScreen #capture-status { height: 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "grab", "Grab", id="capture_grab"),
        Binding("escape", "close", "Close", id="capture_close"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()
        self._grab = threading.Event()
        self.frames_shown = 0

    @property
    def settings(self) -> Any:
        return self.app.settings  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        from ncanvas_tui.capture import describe

        s = self.settings.capture
        with Vertical(id="capture-box"):
            yield Label(f"Capture from {describe(s.source) if s.source else '(no [capture].source)'}",
                        classes="pane-title", markup=False)
            cls = image_widget_class(getattr(self.app, "previews", "auto"))
            yield (cls(None, id="capture-image") if cls is not None  # type: ignore[arg-type]
                   else Static("(previews off)", id="capture-image"))
            yield Label(f"opening… · Enter grabs {s.frames} frame(s) · Esc closes", id="capture-status",
                        markup=False)

    def on_mount(self) -> None:
        self._run()

    def action_grab(self) -> None:
        self._grab.set()

    def action_close(self) -> None:
        self._stop.set()
        self.dismiss(None)

    def _show(self, rgb: Any) -> None:
        from PIL import Image

        widget = self.query_one("#capture-image")
        if hasattr(widget, "image"):
            im = Image.fromarray(rgb)
            im.thumbnail((640, 640))
            widget.image = im
        self.frames_shown += 1
        n = self.settings.capture.frames
        self.query_one("#capture-status", Label).update(
            f"live · frame {self.frames_shown} · Enter grabs {n} frame(s) · Esc closes")

    def _fail(self, message: str) -> None:
        self.app.notify(message, severity="error", timeout=10)
        self.dismiss(None)

    @work(thread=True, exit_on_error=False, group="capture", description="capture")
    def _run(self) -> None:
        from ncanvas_tui.capture import Capture, captures_dir, save_frames
        from ncanvas_tui.errors import NcanvasError

        s = self.settings
        try:
            with Capture(s.capture.source) as cap:
                while not self._stop.is_set():
                    if self._grab.is_set():
                        frames = [cap.read() for _ in range(s.capture.frames)]
                        paths = save_frames(frames, captures_dir(s))
                        self.app.call_from_thread(self.dismiss, [str(p) for p in paths])
                        return
                    rgb = cap.read()
                    self.app.call_from_thread(self._show, rgb)
                    self._grab.wait(1.0 / s.capture.preview_fps)
        except NcanvasError as e:
            if not self._stop.is_set():
                self.app.call_from_thread(self._fail, str(e))
