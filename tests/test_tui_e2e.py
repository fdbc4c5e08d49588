"""End to end: the real ``python -m ncanvas_tui --settings ...`` in a real pseudo-terminal
(tmux), driven with keys through Infer on the default model; the screen is read back with
``tmux capture-pane``. Needs the tmux binary (apt-get install -y tmux)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install -y tmux)")]


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              check=check, timeout=30).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "nc")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self("send-keys", "-t", "nc", *(["-l"] if literal else []), *keys)
        time.sleep(0.3)

    def wait_for(self, *texts: str, timeout: float = 60.0) -> str:
        """The screen once every one of ``texts`` is on it: the app paints in several frames, so
        nothing read from the screen is asserted before it has been waited for."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.25)
        missing = [t for t in texts if t not in screen]
        raise AssertionError(f"{missing!r} never appeared on screen:\n{screen}")


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(f"ncanvas-test-{os.getpid()}-{tmp_path.name}")
    yield t
    t("kill-server", check=False)


def test_real_app_in_a_terminal_classifies_three_photos(tmux, settings_path, workdir):
    done = workdir / "exit-code"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["NCANVAS_SYSROOT"] = str(REPO / "tests" / "data" / "boards" / "orin-nano-jp6")  # the board strip's figures
    cmd = (f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m ncanvas_tui "
           f"--settings {shlex.quote(str(settings_path))}; echo $? > {shlex.quote(str(done))}")
    subprocess.run(["tmux", "-L", tmux.socket, "-f", "/dev/null", "new-session", "-d", "-s", "nc", "-x", "140",
                    "-y", "40", cmd], check=True, env={**env, "TERM": "xterm-256color"}, timeout=30)
    # the strip and the image list are painted in different frames: wait for both (reading the
    # strip right after "selected 0/8" once caught an empty first line)
    tmux.wait_for("selected 0/8", "F3 Infer", timeout=30)
    # the board strip, read from the replayed Orin Nano in a real terminal
    tmux.wait_for("board 8.0 W · GPU 47% · 612 MHz · 52.3°C gpu-thermal · RAM 3.0/7.4 GiB")
    # shift+tab from the tree to the path input; type a path; Enter adds it
    tmux.keys("BTab")
    pics = workdir / "pictures"
    for name in ("chelsea.jpg", "coffee.jpg", "flower.jpg"):
        tmux.keys("C-u")  # clear the input
        tmux.keys(str(pics / name), literal=True)
        tmux.keys("Enter")
    tmux.wait_for("selected 3/8")
    tmux.keys("C-r")
    tmux.wait_for("3 classified", "tabby", "espresso", "daisy", timeout=90)
    # F-keys switch from the path input (a text field: Alt+digit would type "£" there, 5 a digit)
    tmux.keys("F4")
    tmux.wait_for("labels (from the last inference")
    tmux.keys("F3")
    tmux.wait_for("3 classified")
    # number keys work from the tree; History lists the run
    tmux.keys("Escape")
    tmux.keys("Tab")
    tmux.keys("5")
    tmux.wait_for("Runs (Enter opens)")
    tmux.wait_for("Egyptian cat")  # the run lists its labels (top-1 of chelsea.jpg first)
    tmux.keys("C-q")
    deadline = time.monotonic() + 20
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done.read_text().strip() == "0"
