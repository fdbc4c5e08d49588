"""What this terminal can draw, decided before Textual takes it over.

- Previews: kitty draws textual-image's Kitty-protocol images with Unicode placeholders only
  from kitty 0.28; an older kitty (Debian 12 ships 0.26.5) shows rows of boxes and logs
  "Malformed GraphicsCommand". kitty has no Sixel, so an older kitty gets half-blocks. The
  version comes from the terminal itself (XTVERSION, ``CSI > q``: works over SSH), else from
  ``kitty --version`` when kitty runs on this machine. Other terminals keep textual-image's
  own probe (Sixel, then the Kitty protocol, else half-blocks). ``[tui].previews`` forces one.
- File-tree icons: emoji only where the terminal is known to draw them (kitty, WezTerm, iTerm2,
  VS Code, Apple Terminal, ghostty); elsewhere (xterm's default fonts) plain glyphs.
  ``[tui].icons`` forces one.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping

KITTY_PLACEHOLDERS = (0, 28)          # the first kitty with Unicode placeholders
EMOJI_TERMINALS = ("iTerm.app", "WezTerm", "vscode", "Apple_Terminal", "ghostty", "kitty")
PLAIN_ICONS = {"node": "▸ ", "node_expanded": "▾ ", "file": "  "}
EMOJI_ICONS = {"node": "📁 ", "node_expanded": "📂 ", "file": "📄 "}

Version = tuple[int, ...]


def parse_version(text: str) -> Version | None:
    """``kitty(0.26.5)`` / ``kitty 0.26.5 created by ...`` -> (0, 26, 5)."""
    m = re.search(r"kitty[\s(]+v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


def is_kitty(env: Mapping[str, str]) -> bool:
    return env.get("TERM") == "xterm-kitty" or bool(env.get("KITTY_WINDOW_ID")) or env.get("TERM_PROGRAM") == "kitty"


def xtversion(timeout: float = 0.3) -> str:
    """The terminal's answer to XTVERSION (``ESC P > | name(version) ESC \\``), "" when none."""
    import select
    import sys
    import termios
    import tty

    out = sys.__stdout__
    if out is None or not out.isatty() or not sys.stdin.isatty():
        return ""
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    answer = b""
    try:
        tty.setcbreak(fd)
        out.write("\x1b[>0q")
        out.flush()
        while select.select([fd], [], [], timeout)[0]:
            answer += os.read(fd, 256)
            if answer.endswith(b"\x1b\\"):
                break
    except OSError:
        return ""
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
    return answer.decode("utf-8", "replace")


def kitty_version(env: Mapping[str, str], query: Callable[[], str] = xtversion) -> Version | None:
    found = parse_version(query())
    if found is None and env.get("KITTY_WINDOW_ID") and not env.get("SSH_CONNECTION"):
        try:
            found = parse_version(subprocess.run(["kitty", "--version"], capture_output=True, text=True,
                                                 timeout=2, check=False).stdout)
        except (OSError, subprocess.SubprocessError):
            found = None
    return found


def choose_previews(setting: str, env: Mapping[str, str] | None = None,
                    query: Callable[[], str] = xtversion) -> str:
    """The ``[tui].previews`` mode to use: a forced one as it is; ``auto`` resolved for kitty."""
    env = os.environ if env is None else env
    if setting != "auto" or not is_kitty(env):
        return setting
    version = kitty_version(env, query)
    return "tgp" if version is not None and version >= KITTY_PLACEHOLDERS else "halfcell"


def choose_icons(setting: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The file tree's icons for ``[tui].icons`` (auto | emoji | plain)."""
    env = os.environ if env is None else env
    if setting == "emoji":
        return EMOJI_ICONS
    if setting == "plain":
        return PLAIN_ICONS
    known = is_kitty(env) or env.get("TERM_PROGRAM", "") in EMOJI_TERMINALS
    return EMOJI_ICONS if known else PLAIN_ICONS
