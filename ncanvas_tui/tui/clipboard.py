"""Copy over SSH: the OSC 52 clipboard sequence (works over SSH and through tmux), with the
known refusals detected up front, and a file as the fallback.

Terminals never acknowledge OSC 52, so a copy cannot be confirmed; what can be known is when it
is sure to be dropped:

- tmux with ``set-clipboard off`` (tmux swallows the sequence);
- GNU screen (it does not pass OSC 52 on);
- the Linux console (``TERM=linux``: no clipboard at all).

Then the text is saved under ``[paths].output/copied/`` instead and the notification says where.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def refusal(env: Mapping[str, str] | None = None) -> str | None:
    """Why an OSC 52 copy would be dropped here, or None when nothing is known against it."""
    env = os.environ if env is None else env
    if env.get("TMUX"):
        try:
            out = subprocess.run(["tmux", "show-options", "-gv", "set-clipboard"], capture_output=True, check=False,
                                 text=True, timeout=2, env=dict(env)).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out == "off":
            return "tmux has set-clipboard off (tmux set -g set-clipboard on allows it)"
    if env.get("STY"):
        return "GNU screen does not pass the clipboard sequence (OSC 52) on"
    if env.get("TERM") == "linux":
        return "the Linux console has no clipboard"
    return None


def copy(app: Any, text: str, what: str, output: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Copy ``text`` with OSC 52, or (a known refusal) save it to a file; notify either way.
    Returns the file written, or None when the sequence was sent."""
    why = refusal(env)
    if why is None:
        app.copy_to_clipboard(text)
        app.notify(f"{what} copied to the clipboard (OSC 52: works over SSH and tmux if your terminal allows it)")
        return None
    from ncanvas_tui.files import write_new_file

    try:
        path = write_new_file(Path(output) / "copied", f"{what}-{time.strftime('%Y%m%d-%H%M%S')}", ".txt",
                              text.encode("utf-8"))
    except OSError as e:
        app.notify(f"{what} not copied: {why}; and {output}/copied: {e.strerror}", severity="error", timeout=12)
        return None
    app.notify(f"{what} not copied: {why}. Saved to {path} instead", severity="warning", timeout=12)
    return path
