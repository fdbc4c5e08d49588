"""The help screen (``?``): what each screen is for and every key, with its binding id.

Ids are what ``[tui].keys`` in settings.toml remaps, e.g. ``keys = { infer_run = "f5" }``.
"""

from __future__ import annotations

from collections.abc import Callable
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
 [b]{screen_engines} Engines[/b]  models and built engines: prep ({engines_prep}), build ({engines_build}), verify ({engines_verify}), bench ({engines_bench}), delete ({engines_delete})
 [b]{screen_infer} Infer[/b]    type a path (Tab completes) or browse the tree, Enter adds an image (up to 8), {infer_run} classifies
 [b]{screen_story} Story[/b]    labels from the last inference + style + theme -> a story ({story_write}), continue it ({story_continue}), copy ({story_copy})
 [b]{screen_imagine} Imagine[/b]  the story distilled into a prompt ({imagine_distil}), drawn by the image API ({imagine_draw})
 [b]{screen_history} History[/b]  every run saved; Enter opens one, {history_export_md} / {history_export_json} export Markdown / JSON
{screen_engines}-{screen_history} switch screens from anywhere (text fields too); so do the number keys 1-5 outside a text field. {help_f1} or ? is this help. {cancel} cancels what is running. Ctrl+P opens the command palette (every action). Tab moves between fields.
Settings live in settings.toml (every key documented there); remap keys with \\[tui].keys = {{id = "key"}}."""


def guide(key_for: Callable[[str], str]) -> str:
    """The guide with the keys in force (remapped ones included)."""
    import re

    ids = set(re.findall(r"{(\w+)}", GUIDE))
    return GUIDE.format(**{i: key_for(i) for i in ids})


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
            yield Static(Text.from_markup(guide(self.app.key_for)), id="help-guide")  # type: ignore[attr-defined]
            yield Static(table, id="help-keys")
            yield Static("Esc closes this help.", classes="hint")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
