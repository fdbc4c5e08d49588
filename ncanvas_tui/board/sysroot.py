"""Where board-state files are read from: ``/``, or ``$NCANVAS_SYSROOT`` (a captured or test tree).

Every read of the board reader goes through one ``Fs``: paths are given relative to the
root (``"sys/class/thermal"``), failures are ``None`` / ``[]`` (a file the kernel does not
have, or will not let us read, is an unknown, never an error), and a recording ``Fs``
remembers what it read so ``ncanvas doctor --capture-board`` copies exactly those files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

ENV = "NCANVAS_SYSROOT"


def root() -> Path:
    """The folder board-state paths live under: ``$NCANVAS_SYSROOT``, else ``/``."""
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else Path("/")


def replaying() -> bool:
    """True under ``NCANVAS_SYSROOT``: only files are read (live libraries such as NVML stay off)."""
    return bool(os.environ.get(ENV))


class Fs:
    """Reads under ``base`` (default: ``root()``). ``record``: a dict that collects what was read
    (relative path -> bytes; directories -> None)."""

    def __init__(self, base: Path | None = None, record: dict[str, bytes | None] | None = None) -> None:
        self.base = Path(base) if base is not None else root()
        self.record = record
        self._lock = threading.Lock()

    def path(self, rel: str) -> Path:
        return self.base / rel.lstrip("/")

    def read_bytes(self, rel: str, limit: int = 1 << 20) -> bytes | None:
        try:
            with open(self.path(rel), "rb") as f:
                data = f.read(limit)
        except (OSError, ValueError):
            return None
        if self.record is not None:
            with self._lock:  # the first reading is kept: what the first reader (the conditions) saw
                self.record.setdefault(rel.lstrip("/"), data)
        return data

    def read(self, rel: str) -> str | None:
        """The file's text without surrounding whitespace and NULs (device-tree strings end in one)."""
        data = self.read_bytes(rel)
        if data is None:
            return None
        return data.decode("utf-8", errors="replace").strip("\x00 \t\r\n")

    def read_int(self, rel: str) -> int | None:
        text = self.read(rel)
        if text is None:
            return None
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            return None

    def listdir(self, rel: str) -> list[str]:
        try:
            names = sorted(os.listdir(self.path(rel)))
        except OSError:
            return []
        if self.record is not None:
            with self._lock:
                self.record.setdefault(rel.lstrip("/").rstrip("/"), None)
        return names

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()


class FdReader:
    """One sysfs attribute kept open and re-read with ``pread`` (no open/close per sample)."""

    __slots__ = ("fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)

    def read_int(self) -> int | None:
        try:
            data = os.pread(self.fd, 64, 0)
            return int(data.split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
