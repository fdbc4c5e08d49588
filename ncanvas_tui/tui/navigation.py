"""The five screens, their titles and keys: shared by the app, the navigation strip and the help.

Data only: nothing here imports a screen or the app, so screens can use it without a cycle.
Each screen has a digit (outside text fields) and F(digit+1) (F2-F6), which works in text
fields and in every terminal (tmux/xterm send Alt+digit as ESC+digit, which Textual reads as
a character: Alt+3 types "£"); F1 is help.
"""

from __future__ import annotations

#: mode name -> (title, digit key)
SCREENS: dict[str, tuple[str, str]] = {
    "engines": ("Engines", "1"),
    "infer": ("Infer", "2"),
    "story": ("Story", "3"),
    "imagine": ("Imagine", "4"),
    "history": ("History", "5"),
}


def fkey(mode: str) -> str:
    """The function key of a screen: F2 for the first (1), ..., F6 for the fifth (5)."""
    return f"f{int(SCREENS[mode][1]) + 1}"


_NAMES = {"escape": "Esc", "question_mark": "?", "delete": "Del", "backspace": "Backspace", "enter": "Enter",
          "tab": "Tab", "space": "Space"}


def pretty_key(key: str) -> str:
    """``ctrl+n`` -> ``Ctrl+N``, ``f3`` -> ``F3``, ``escape`` -> ``Esc``, ``m`` -> ``M``."""
    parts = key.strip().split("+")
    out = [p.capitalize() for p in parts[:-1]]
    last = parts[-1]
    out.append(_NAMES.get(last, last.upper() if len(last) <= 3 else last.capitalize()))
    return "+".join(out)
