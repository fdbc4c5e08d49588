"""Reading a user's file without hanging; the two ways ncanvas writes files.

- App-managed files (artefacts, sidecars, caches, verify results, the guardrails cache):
  ``atomic_write_bytes`` / ``atomic_write_json`` / ``atomic_path``: a temp file beside the target,
  fsynced, renamed over it; a failure (disk full, Ctrl-C) removes the temp file.
- User outputs (stories, pictures, exports, ``ncanvas init``): ``write_new_file``, never over an
  existing file (below).

``read_regular_file`` opens without blocking and refuses anything that is not a regular
file (a FIFO, a socket, a device, a folder) with one line: a path given by mistake can
never hang a command waiting for a writer that never comes.

Stories, pictures and history exports all go through ``write_new_file``: a unique
temp file in the target folder is written and fsynced, given the mode a plain
``open()`` would give it (0666 less the umask; ``mkstemp`` makes 0600), then
hard-linked to the first free name (``stem.ext``, ``stem-2.ext``, ...). ``link`` fails
on an existing name, so nothing is ever overwritten, even by a racing process, and
readers see the whole file or none. Where the file system has no hard links (FAT on
an SD card, some FUSE/SMB mounts) the name is reserved with an exclusive create and
the temp file renamed onto it. The temp file is removed in every case.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ncanvas_tui.errors import NcanvasError


class WriteError(NcanvasError):
    """An app-managed file could not be written (disk full, no permission); nothing was left behind."""

_UMASK = os.umask(0o022)
os.umask(_UMASK)
#: the mode a new file gets: what ``open()`` would give it
FILE_MODE = 0o666 & ~_UMASK
#: the temp-file prefix of atomic writes (listings ignore and clean these)
TEMP_PREFIX = ".ncanvas-tmp-"
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def not_regular(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", "a folder", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular_file(path: str | os.PathLike[str], *, what: str = "file",
                       error: type[NcanvasError] = NcanvasError) -> None:
    """Raise ``error`` (one line) unless ``path`` is a regular file; never opens it."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except OSError as e:
        raise error(f"{p}: cannot read the {what}: {e.strerror or e}") from None
    kind = not_regular(st.st_mode)
    if kind == "a folder":
        raise error(f"{p}: is a directory, not a {what}")
    if kind:
        raise error(f"{p}: is {kind}, not a regular file: refused as the {what}")


def read_regular_file(path: str | os.PathLike[str], *, what: str = "file", limit: int | None = None,
                      error: type[NcanvasError] = NcanvasError) -> bytes:
    """The bytes of ``path``, refusing (``error``, one line naming it) anything that is not a regular
    file, or is over ``limit`` bytes. Opened with ``O_NONBLOCK``, so a FIFO never blocks the open,
    and checked on the open descriptor (``fstat``), so a file swapped after a check is caught too."""
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{p}: is a directory, not a {what}") from None
    except PermissionError:
        raise error(f"{p}: cannot read the {what} (permission denied)") from None
    except OSError as e:  # ENXIO: a FIFO's write end / a socket; EIO, ELOOP, ...
        try:
            kind = not_regular(p.stat().st_mode)
        except OSError:
            kind = None
        if kind:
            raise error(f"{p}: is {kind}, not a regular file: refused as the {what}") from None
        raise error(f"{p}: cannot read the {what}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        kind = not_regular(st.st_mode)
        if kind == "a folder":
            raise error(f"{p}: is a directory, not a {what}")
        if kind:
            raise error(f"{p}: is {kind}, not a regular file: refused as the {what}")
        if limit is not None and st.st_size > limit:
            raise error(f"{p}: {st.st_size} bytes is too big for a {what} (max {limit})")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except OSError as e:
            raise error(f"{p}: cannot read the {what}: {e.strerror or e}") from None
    if limit is not None and len(data) > limit:
        raise error(f"{p}: more than {limit} bytes is too big for a {what}")
    return data


def _fsync_path(path: Path) -> None:
    """fsync a file by name, or a folder to make a new name in it durable (best effort: not every
    platform opens folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes, *, limit: int = 10_000) -> Path:
    """Write ``data`` to the first free ``folder/stem[-N]suffix`` and return that path.

    Raises ``OSError`` (disk full, no permission, ...) or ``FileExistsError`` when ``limit``
    names are taken; the caller turns it into its own one-line error."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".ncanvas-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for n in range(1, limit + 1):
            path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno not in _NO_LINKS:
                    raise
                try:  # no hard links here: reserve the name, then rename onto it
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
                except FileExistsError:
                    continue
                os.replace(tmp, path)
            _fsync_path(folder)
            return path
        raise FileExistsError(errno.EEXIST, f"no free file name for {stem}{suffix}", str(folder))
    finally:
        tmp.unlink(missing_ok=True)


# The one place bytes reach the disk (tests inject ENOSPC here).
_os_write = os.write


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = _os_write(fd, view[: 1 << 24])
        view = view[n:]


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temp path beside ``target``; renamed over it when the block succeeds, removed otherwise.

    Use it for writers that want a path (ONNX save, Polygraphy). The temp file is
    removed on any exception, KeyboardInterrupt included."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=target.suffix, dir=target.parent)
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)
    os.close(fd)
    tmp = Path(name)
    _claim(tmp)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


#: called with each temp path before it is written (a build's child process sets it: its parent then
#: removes the temp files of a child it had to kill); None elsewhere
temp_hook: Callable[[Path], None] | None = None


def _claim(tmp: Path) -> None:
    if temp_hook is not None:
        temp_hook(tmp)


def atomic_write_bytes(target: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``target`` atomically. Disk full -> WriteError naming the file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=target.suffix, dir=target.parent)
    tmp = Path(name)
    _claim(tmp)
    try:
        try:
            with contextlib.suppress(OSError):
                os.fchmod(fd, FILE_MODE)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise WriteError(f"{target}: cannot write ({exc.strerror or exc}); nothing was left behind"
                              ) from None
        raise


def atomic_write_json(target: Path, data: Any) -> None:
    atomic_write_bytes(target, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
