"""The help screen (``?``): what each screen is for and every key, with its binding id.

Ids are what ``[tui].keys`` in settings.toml remaps, e.g. ``keys = { infer_run = "f5" }``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

GUIDE = """\
[b]ncanvas[/b] turns pictures into stories and stories back into pictures.
 [b]F2/1 Engines[/b]  models and built engines: prep, build (fp32/fp16/int8), verify, bench, delete
 [b]F3/2 Infer[/b]    type a path or browse the tree, Enter adds an image (up to 8), Ctrl+R classifies
 [b]F4/3 Story[/b]    labels from the last inference + style + theme -> a story (Ctrl+R), continue it (Ctrl+N)
 [b]F5/4 Imagine[/b]  the story distilled into a prompt (Ctrl+D), drawn by the image API (Ctrl+R)
 [b]F6/5 History[/b]  every run saved; Enter opens one, M / J export Markdown / JSON
F2-F6 switch screens from anywhere (text fields too); so do the number keys 1-5 outside a text field. F1 or ? is this help. Esc cancels what is running. Ctrl+P opens the command palette. Tab moves between fields.
Settings live in settings.toml (every key documented there); remap keys with \\[tui].keys = {id = "key"}."""


def _keys_of(binding_key: str, keymap: dict[str, list[str]] | dict, bid: str) -> str:
    keys = keymap.get(bid)
    if keys:
        return ", ".join(keys) if isinstance(keys, (list, tuple)) else str(keys)
    return binding_key.replace("question_mark", "?")


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q,f1", "dismiss", "Close", id="help_close")]

    def __init__(self, bindings: dict[str, tuple[str, str, str]]) -> None:
        """``bindings``: every remappable binding, id -> (screen title, default key, description)."""
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        table = Table(box=None, padding=(0, 2), header_style="bold", expand=True)
        table.add_column("screen")
        table.add_column("key")
        table.add_column("does")
        table.add_column(Text("id (for [tui].keys)"), style="dim")  # Text: no markup in "[tui]"
        keymap = getattr(self.app, "_keymap", {})
        for bid, (where, key, desc) in self.bindings.items():
            table.add_row(where, _keys_of(key, keymap, bid), desc, bid)
        with VerticalScroll(id="help-box"):
            yield Static(Text.from_markup(GUIDE), id="help-guide")
            yield Static(table, id="help-keys")
            yield Static("Esc closes this help.", classes="hint")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
