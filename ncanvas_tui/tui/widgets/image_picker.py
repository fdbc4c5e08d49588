"""Pick up to N images with the keyboard: a path input with completion, a folder
tree filtered to images, and the list of what is selected.

- Type a path (Tab / → accepts the suggestion): Enter on a file adds it (again:
  removes it), on a folder opens it in the tree, a glob (``*.jpg``) adds matches.
- In the tree: Enter on an image adds/removes it.
- In the selected list: Delete / Backspace removes the highlighted image.
"""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.suggester import Suggester
from textual.widgets import DirectoryTree, Input, Label, OptionList
from textual.widgets.option_list import Option

from ncanvas_tui.tui.messages import SelectionChanged

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _complete(value: str) -> str | None:
    """Complete the last path component against folders and image files."""
    if not value:
        return None
    expanded = os.path.expanduser(value)
    folder, stem = os.path.split(expanded)
    if not stem:  # "folder/": no guess, the tree shows what is there
        return None
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return None
    for name in names:
        if name.startswith(".") and not stem.startswith("."):
            continue
        if not name.startswith(stem) or name == stem:
            continue
        full = os.path.join(folder, name)
        is_dir = os.path.isdir(full)
        if is_dir or is_image_name(name):
            return value + name[len(stem):] + ("/" if is_dir else "")
    return None


class PathSuggester(Suggester):
    """Completes folders and image files (listing runs in a thread)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(_complete, value)


class PathInput(Input):
    """The path field: Tab accepts the suggestion shown (like Right at the end of the text);
    with no suggestion, Tab moves the focus on as everywhere else."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete", show=False, id="picker_complete"),
    ]

    def action_complete(self) -> None:
        if self._suggestion and self._suggestion != self.value:
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()


class ImageTree(DirectoryTree):
    """A directory tree that shows folders and image files only (no dot files), with emoji or
    plain icons (``[tui].icons``; see ``tui/terminal.py``)."""

    def __init__(self, path: str | Path, *, icons: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        if icons:
            self.ICON_NODE, self.ICON_NODE_EXPANDED = icons["node"], icons["node_expanded"]
            self.ICON_FILE = icons["file"]

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        out = []
        for p in paths:
            if p.name.startswith("."):
                continue
            try:
                if p.is_dir() or is_image_name(p.name):
                    out.append(p)
            except OSError:
                continue
        return out


class SelectedList(OptionList):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("delete,backspace", "remove", "Remove", id="picker_remove"),
    ]

    def action_remove(self) -> None:
        picker = next((a for a in self.ancestors if isinstance(a, ImagePicker)), None)
        if picker is not None and self.highlighted is not None:
            option = self.get_option_at_index(self.highlighted)
            if option.id:
                picker.toggle(option.id)


class ImagePicker(Vertical):
    """Keyboard-only image picker. Posts ``SelectionChanged`` on every change."""

    DEFAULT_CSS = """
    ImagePicker { height: 100%; }
    ImagePicker > #picker-input { height: 3; }
    ImagePicker > ImageTree { height: 1fr; min-height: 4; }
    ImagePicker > #picker-count { height: 1; padding: 0 1; color: $text-muted; }
    ImagePicker > SelectedList { height: auto; max-height: 10; min-height: 3; }
    """

    def __init__(self, root: str | Path, max_images: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.max_images = max_images
        self.selected: list[str] = []

    def compose(self) -> ComposeResult:
        start = str(self.root) + os.sep if self.root.is_dir() else ""
        yield PathInput(value=start, placeholder="image or folder path (Tab completes, Enter adds)",
                    suggester=PathSuggester(), id="picker-input", select_on_focus=False)
        root = self.root if self.root.is_dir() else Path.home()
        from ncanvas_tui.tui.terminal import choose_icons

        settings = getattr(self.app, "settings", None)
        yield ImageTree(root, id="picker-tree",
                        icons=choose_icons(getattr(getattr(settings, "tui", None), "icons", "auto")))
        yield Label(self._count_text(), id="picker-count", markup=False)
        yield SelectedList(id="picker-selected")

    def on_mount(self) -> None:
        self.query_one("#picker-input", Input).border_title = "path (Tab completes)"
        if not self.root.is_dir():
            self.app.notify(f"{self.root}: folder not found (set [paths].images in settings.toml); "
                            f"showing {Path.home()}", severity="warning", timeout=8)

    def _count_text(self) -> str:
        return f"selected {len(self.selected)}/{self.max_images} · Enter adds · Del removes"

    def _refresh(self) -> None:
        lst = self.query_one(SelectedList)
        highlighted = lst.highlighted
        lst.clear_options()
        lst.add_options([Option(Path(p).name, id=p) for p in self.selected])
        if self.selected:
            lst.highlighted = min(highlighted or 0, len(self.selected) - 1)
        self.query_one("#picker-count", Label).update(self._count_text())
        self.post_message(SelectionChanged(list(self.selected)))

    def add(self, path: str) -> bool:
        path = str(Path(path).expanduser().absolute())
        if path in self.selected:
            return False
        if len(self.selected) >= self.max_images:
            self.app.notify(f"at most {self.max_images} images at once (the max batch, [build].batch); "
                            f"remove one first", severity="warning")
            return False
        self.selected.append(path)
        self._refresh()
        return True

    def toggle(self, path: str) -> None:
        path = str(Path(path).expanduser().absolute())
        if path in self.selected:
            self.selected.remove(path)
            self._refresh()
        else:
            self.add(path)

    def clear(self) -> None:
        self.selected.clear()
        self._refresh()

    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.toggle(str(event.path))

    @on(Input.Submitted, "#picker-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            return
        expanded = os.path.expanduser(text)
        if any(c in expanded for c in "*?["):
            matches = sorted(p for p in glob.glob(expanded) if is_image_name(p) and os.path.isfile(p))
            if not matches:
                self.app.notify(f"{text}: no image files match", severity="warning")
            for m in matches:
                if not self.add(m):
                    break
            return
        p = Path(expanded)
        if p.is_dir():
            try:
                os.listdir(p)
            except OSError as e:
                self.app.notify(f"{p}: cannot open folder ({e.strerror})", severity="error")
                return
            self.query_one(ImageTree).path = p
            event.input.value = str(p).rstrip(os.sep) + os.sep
            event.input.cursor_position = len(event.input.value)  # typing goes on after the "/"
            return
        if not p.exists():
            self.app.notify(f"{p}: no such file or folder", severity="error")
            return
        # Not an image name? Still allowed: the classifier says what is wrong with it.
        self.toggle(str(p))
        event.input.value = str(p.parent) + os.sep
