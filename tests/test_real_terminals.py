"""The app in real terminals under Xvfb: xterm with Sixel (``-ti vt340``) and kitty (Debian 12's 0.26.5,
no Unicode placeholders). A classification is driven with the keyboard (xdotool), the window is
screenshot (ImageMagick ``import``) and the preview area must hold picture pixels (many distinct
colours), not rows of placeholder glyphs. Skipped where the packages are not installed
(Debian: xvfb xterm kitty xdotool imagemagick); .ci/run installs them when it can."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PHOTOS, REPO

TOOLS = ("Xvfb", "xterm", "kitty", "xdotool", "import")
pytestmark = [pytest.mark.realterm, pytest.mark.slow,
              pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS),
                                 reason=f"needs {', '.join(TOOLS)} (Debian: xvfb xterm kitty xdotool imagemagick)")]

COLS, ROWS = 160, 48


@pytest.fixture
def display(tmp_path):
    r, w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1900x1200x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(r, 16)
        if not chunk:
            break
        number += chunk
    os.close(r)
    try:
        yield f":{number.decode().strip()}"
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def project(tmp_path: Path) -> Path:
    pics = tmp_path / "pictures"
    pics.mkdir()
    shutil.copy(PHOTOS / "chelsea.jpg", pics / "chelsea.jpg")
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[paths]\nimages = "{pics}"\noutput = "{tmp_path / "output"}"\n'
                        f'engines = "{tmp_path / "engines"}"\n[inference]\nbackend = "onnxruntime"\n'
                        '[guardrails]\nenabled = false\n[tui]\nboard_strip = false\n', encoding="utf-8")
    return settings


def xdo(env, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30,
                          check=False).stdout


def wait_window(env, name: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = xdo(env, "search", "--name", name).split()
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no window named {name}")


def distinct_colours_in_previews(png: Path) -> int:
    """Distinct colours in the preview area: right of the 38-column picker, rows 4-12."""
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        w, h = im.size
        cw, ch = w / COLS, h / ROWS
        box = (int(40 * cw), int(4 * ch), int(150 * cw), int(12 * ch))
        raw = im.crop(box).tobytes()
        return len({raw[i:i + 3] for i in range(0, len(raw), 3)})


def run_in(terminal: list[str], title: str, display: str, tmp_path: Path) -> tuple[int, str]:
    settings = project(tmp_path)
    env = {**os.environ, "DISPLAY": display, "NCANVAS_SETTINGS": str(settings), "PYTHONPATH": str(REPO),
           "COLORTERM": "truecolor"}
    env.pop("TMUX", None)
    log = tmp_path / f"{title}.log"
    app = f"{sys.executable} -m ncanvas_tui --settings {settings}"
    with open(log, "wb") as out:
        term = subprocess.Popen([*terminal, "sh", "-c", app], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            win = wait_window(env, title)
            xdo(env, "windowmove", win, "0", "0")
            xdo(env, "mousemove", "20", "20")  # no window manager: the focus follows the pointer
            time.sleep(6)  # the app starts (textual-image asks the terminal what it draws)
            xdo(env, "key", "Down", "Return")  # the folder tree has the focus: its first image

            time.sleep(2)
            xdo(env, "key", "ctrl+r")
            time.sleep(6)
            shot = tmp_path / f"{title}.png"
            subprocess.run(["import", "-window", win, str(shot)], env=env, check=True, timeout=30)
            return distinct_colours_in_previews(shot), log.read_text("utf-8", "replace")
        finally:
            term.terminate()
            term.wait(10)


def test_xterm_sixel_shows_a_picture(display, tmp_path):
    colours, _ = run_in(["xterm", "-ti", "vt340", "-title", "nc-xterm", "-geometry", f"{COLS}x{ROWS}",
                         "-fa", "", "-xrm", "XTerm*numColorRegisters: 256", "-e"], "nc-xterm", display, tmp_path)
    assert colours > 100, f"{colours} colours in the preview area: no picture"


def test_kitty_026_shows_a_picture_not_placeholder_boxes(display, tmp_path):
    colours, log = run_in(["kitty", "--title", "nc-kitty", "-o", "font_size=8", "-o",
                           f"initial_window_width={COLS}c", "-o", f"initial_window_height={ROWS}c",
                           "-o", "remember_window_size=no"], "nc-kitty", display, tmp_path)
    assert "Malformed GraphicsCommand" not in log
    assert colours > 100, f"{colours} colours in the preview area: no picture"
