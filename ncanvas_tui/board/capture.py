"""``ncanvas doctor --capture-board DIR``: copy the files the board reader reads into a tree that
``NCANVAS_SYSROOT=DIR`` replays (a Jetson user can send it; tests replay such trees).

The reader runs once with a recording ``Fs``; what it read is written under DIR at the same
paths, byte for byte, so the replay reads exactly what the capture read. DIR must be new or
empty; symlinks of sysfs become plain folders and files.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ncanvas_tui.board import power, state, sysfs
from ncanvas_tui.board.sysroot import Fs
from ncanvas_tui.errors import NcanvasError

MANIFEST = "ncanvas-board-capture.json"


class CaptureError(NcanvasError):
    """The capture folder cannot be used (not empty, not writable)."""


def read_everything(fs: Fs) -> dict[str, Any]:
    """Run every reader once on ``fs`` (what a capture records, what a replay compares)."""
    src = power.power_source("cpu", fs)  # rails (Jetson) or RAPL; NVML is a library, not files
    reading = src.read() if src is not None else {}
    if src is not None:
        src.close()
    sysfs.rapl_zones(fs)
    return {"conditions": state.conditions_snapshot(fs), "live": state.LiveReader(fs).read(),
            "power_source": src.name if src is not None else None,
            "power_total": src.total_label if src is not None else None,
            "reading": reading, "oc": sysfs.oc_counters(fs)}


def capture_board(dest: str | os.PathLike[str], base: Path | None = None) -> dict[str, Any]:
    """Write the tree; returns {"dir", "files", "state"}. Raises ``CaptureError``."""
    dest = Path(dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CaptureError(f"{dest}: already exists and is not an empty folder; give a new folder to capture into")
    record: dict[str, bytes | None] = {}
    fs = Fs(base, record=record)
    seen = read_everything(fs)
    files = 0
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for rel, data in sorted(record.items()):
            target = dest / rel
            if data is None:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files += 1
        manifest = {"captured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from": str(fs.base),
                    "files": files, "state": seen}
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as e:
        raise CaptureError(f"{dest}: cannot write the board capture: {e.strerror or e}") from None
    return {"dir": str(dest), "files": files, "state": seen}
