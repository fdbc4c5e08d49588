"""Image previews with textual-image.

Kitty's graphics protocol or Sixel where the terminal answers for them, Unicode
half-blocks otherwise (over SSH and inside tmux too). ``[tui].previews`` forces a
method (tests force ``halfcell`` so snapshots do not depend on the terminal).
The picture is decoded and shrunk to a thumbnail in a thread: a 12 MP photo is
never resized on the event loop at every redraw.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label, Static

THUMB_PX = 256
MODES = ("auto", "tgp", "sixel", "halfcell", "unicode", "off")


_CACHED: dict[type, type] = {}


def _cached(cls: type) -> type:
    """``cls`` (a textual-image widget drawing with characters: half-blocks / Unicode) whose
    rendered lines are kept per (picture, size): a redraw (scroll, another widget changing,
    a screen switch) reuses them instead of resizing the picture and re-colouring every cell."""
    if cls not in _CACHED:
        from textual.widget import _RenderCache

        renderable = cls._Renderable  # type: ignore[attr-defined]

        class Cached(cls, Renderable=renderable):  # type: ignore[misc, valid-type, call-arg]
            _lines_key: tuple[int, int, int] | None = None
            _lines: list = []  # noqa: RUF012 - replaced per instance on first render

            def _render_content(self) -> None:
                key = (id(self.image), self.size.width, self.size.height)
                if key == self._lines_key and self._lines:
                    self._render_cache = _RenderCache(self.size, self._lines)
                    self._dirty_regions.clear()
                    return
                super()._render_content()
                self._lines_key, self._lines = key, list(self._render_cache.lines)

        Cached.__name__ = f"Cached{cls.__name__}"
        _CACHED[cls] = Cached
    return _CACHED[cls]


def image_widget_class(mode: str) -> type[Widget] | None:
    """The textual-image widget class for a ``[tui].previews`` mode (None: previews off)."""
    if mode == "off":
        return None
    from textual_image import widget as tiw
    from textual_image.renderable.halfcell import Image as HalfcellRenderable
    from textual_image.renderable.unicode import Image as UnicodeRenderable

    cls = {
        "auto": tiw.Image, "tgp": tiw.TGPImage, "sixel": tiw.SixelImage,
        "halfcell": tiw.HalfcellImage, "unicode": tiw.UnicodeImage,
    }.get(mode, tiw.Image)
    if getattr(cls, "_Renderable", None) in (HalfcellRenderable, UnicodeRenderable):
        return _cached(cls)  # graphics protocols (Kitty/Sixel) keep textual-image's own handling
    return cls


def load_thumbnail(path: str | Path, px: int = THUMB_PX) -> Any:
    """A small RGB Pillow image (EXIF orientation applied). Raises OSError/ValueError on bad files."""
    from PIL import Image, ImageOps

    from ncanvas_tui.files import not_regular

    kind = not_regular(os.stat(path).st_mode)
    if kind:  # a FIFO would block the open forever
        raise ValueError(f"{path}: is {kind}, not an image file")
    with Image.open(path) as im:
        im.draft("RGB", (px, px))
        im = ImageOps.exif_transpose(im)
        im.thumbnail((px, px))
        return im.convert("RGB")


class Preview(Vertical):
    """A picture and its caption. ``mark_bad`` turns the caption into an error."""

    DEFAULT_CSS = """
    Preview { width: 1fr; height: 100%; min-width: 10; }
    Preview > .preview-image { width: 100%; height: 1fr; }
    Preview > .preview-caption { width: 100%; height: 1; color: $text-muted; text-overflow: ellipsis; }
    Preview.bad > .preview-caption { color: $error; text-style: bold; }
    """

    def __init__(self, path: str | Path, mode: str = "auto", caption: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = str(path)
        self.mode = mode
        self.caption = caption if caption is not None else Path(path).name

    def compose(self) -> ComposeResult:
        cls = image_widget_class(self.mode)
        if cls is None:
            yield Static("(previews off)", classes="preview-image")
        else:
            yield cls(None, classes="preview-image")  # type: ignore[arg-type]
        yield Label(self.caption, classes="preview-caption", markup=False)

    def on_mount(self) -> None:
        if image_widget_class(self.mode) is not None:
            self._load()

    @work(thread=True, exit_on_error=False, group="thumbnails")
    def _load(self) -> None:
        try:
            thumb = load_thumbnail(self.path)
        except Exception as e:  # noqa: BLE001 - a bad file is shown as bad, never a crash
            reason = "not an image" if not isinstance(e, OSError) or "identify" in str(e) else str(e)
            self.app.call_from_thread(self.mark_bad, reason)
            return
        self.app.call_from_thread(self._show, thumb)

    def _show(self, thumb: Any) -> None:
        for child in self.query(".preview-image"):
            if hasattr(child, "image"):
                child.image = thumb  # type: ignore[attr-defined]

    def mark_bad(self, reason: str) -> None:
        self.add_class("bad")
        self.query_one(".preview-caption", Label).update(f"✗ {Path(self.path).name}: {reason}")
