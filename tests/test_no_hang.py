"""A path that is not a regular file (a FIFO, a device) is refused with one line, never waited on:
--settings, story --continue, imagine --story, a model's sidecar, history export --out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_settings

from ncanvas_tui.errors import NcanvasError

LOCAL = """
[llm]
base_url = "http://127.0.0.1:9/v1"
api_key_env = ""
[imagegen]
provider = "sdwebui"
base_url = "http://127.0.0.1:9"
api_key_env = ""
[guardrails]
enabled = false
[paths]
output = "output"
"""


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_settings_fifo_is_refused(cli, fifo: Path) -> None:
    r = cli("models", "list", "--settings", str(fifo), timeout=30)
    assert r.returncode == 2
    assert one_line(r.stderr) == (f"ncanvas: error: {fifo}: is a FIFO (named pipe), not a regular file: "
                                  "refused as the settings file")
    r = cli("models", "list", env={"NCANVAS_SETTINGS": str(fifo)}, timeout=30)
    assert r.returncode == 2 and "is a FIFO" in r.stderr


def test_story_continue_and_imagine_story_refuse_a_fifo(cli, tmp_path: Path, fifo: Path) -> None:
    s = write_settings(tmp_path / "s.toml", LOCAL)
    r = cli("story", "--continue", str(fifo), "--settings", str(s), timeout=30)
    assert r.returncode == 2 and "is a FIFO (named pipe), not a regular file" in one_line(r.stderr)
    r = cli("imagine", "--story", str(fifo), "--settings", str(s), timeout=30)
    assert r.returncode == 2 and "is a FIFO (named pipe), not a regular file" in one_line(r.stderr)


@pytest.mark.parametrize("path", ["/dev/null", "/dev/zero"])
def test_devices_are_refused(path: str) -> None:
    from ncanvas_tui.files import read_regular_file

    with pytest.raises(NcanvasError, match="is a character device, not a regular file: refused as the x"):
        read_regular_file(path, what="x")


def test_regular_file_limits_and_folders(tmp_path: Path) -> None:
    from ncanvas_tui.files import read_regular_file

    p = tmp_path / "f.txt"
    p.write_bytes(b"abc")
    assert read_regular_file(p) == b"abc"
    with pytest.raises(NcanvasError, match="3 bytes is too big for a thing .max 2."):
        read_regular_file(p, what="thing", limit=2)
    with pytest.raises(NcanvasError, match="is a directory, not a thing"):
        read_regular_file(tmp_path, what="thing")
    with pytest.raises(NcanvasError, match="thing not found"):
        read_regular_file(tmp_path / "nope", what="thing")
