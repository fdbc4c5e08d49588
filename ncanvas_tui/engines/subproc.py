"""Run GIL-heavy model transformations in a child process, so the event loop never stalls.

ONNX Runtime's ``quantize_static``, the fp16 conversion and Polygraphy sanitize are
Python-heavy and hold the GIL for 100+ ms at a time: run in the GPU worker thread
they stall the TUI's event loop. ``call(fn, ...)`` runs ``fn`` in a fresh process
(multiprocessing, "spawn") and looks, to its caller, like a plain call:

- ``progress(done, total, message)`` is called in the calling thread, for every
  progress message of the child; the child waits for each one to be acknowledged,
  so cancelling in a progress callback stops it right there, as in-process;
- cancel (the ``cancelled()`` callback: a ``CancelToken``) and Ctrl-C terminate the child; temp files it announced with ``claim(path)`` and its
  scratch temp folder are removed, so nothing half-written is left behind;
- a ``NcanvasError`` raised in the child is raised again here, same class, same
  one-line message; any other exception keeps the child's traceback as its cause;
- log records of the child go to the same loggers here (``record.process`` is the
  child's pid).

TensorRT builds do not come here: TensorRT releases the GIL while it builds, and
the CUDA context lives in the GPU worker thread. Inside the child, ``call`` runs
``fn`` inline. When no child can be started, ``fn`` runs in the calling thread
and a warning says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ncanvas_tui.errors import CancelledError, EngineError, NcanvasError

log = logging.getLogger("ncanvas.engines")
T = TypeVar("T")
ProgressFn = Callable[[int, int, str], None]

#: how often the parent checks for cancel while the child is quiet (seconds)
POLL_S = 0.05
SCRATCH_PREFIX = "ncanvas-child-"


class _RemoteTraceback(Exception):
    """The child's traceback, as the cause of a non-NcanvasError raised again here."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


# -- the child side -----------------------------------------------------------------------------

class _Link:
    """The child's end: sends messages to the parent (one at a time) and waits for acks."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.claims: list[str] = []

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(msg)

    def progress(self, done: int, total: int, message: str) -> None:
        with self.lock:
            self.conn.send(("progress", done, total, message))
            if self.conn.recv() != "go":  # the parent terminates us instead of answering when cancelled
                raise CancelledError("cancelled")

    def claim(self, path: str | Path) -> None:
        self.claims.append(str(path))
        self.send(("claim", str(path)))


_link: _Link | None = None


def in_child() -> bool:
    return _link is not None


def claim(path: Path | str) -> None:
    """Announce a temp file about to be written (before writing it): the parent removes it if the
    child is terminated before it renamed or removed it. A no-op outside a child."""
    if _link is not None:
        _link.claim(str(path))


class _Forward(logging.Handler):
    def __init__(self, link: _Link) -> None:
        super().__init__(logging.DEBUG)
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # logging must never break the work
            d = dict(record.__dict__)
            d["msg"], d["args"] = record.getMessage(), None
            d["exc_info"], d["exc_text"] = None, (self.format(record) if record.exc_info else None)
            d.pop("stack_info", None)
            self.link.send(("log", {k: v for k, v in d.items() if _plain(v)}))


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, tuple))


def _watch_parent(parent: int, scratch: str) -> None:
    """The parent died (SIGKILL): remove what we announced and exit."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            for p in (_link.claims if _link else []):
                with contextlib.suppress(OSError):
                    os.unlink(p)
            shutil.rmtree(scratch, ignore_errors=True)
            os._exit(1)


def _child_main(conn: Any, scratch: str, levels: dict[str, int], fn: Callable[..., Any],
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The child process: quiet stdio, logging and progress to the parent, run fn, send the outcome."""
    global _link
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle: it terminates us
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # Nothing of the child reaches the terminal (the TUI owns it): stdout/stderr go to a file whose
    # tail is reported if the child dies; temp files (ORT's augmented model) go to the scratch folder.
    fd = os.open(os.path.join(scratch, "child.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = scratch
    _link = link = _Link(conn)
    from ncanvas_tui import files

    files.temp_hook = link.claim  # atomic writes announce their temp files: removed if we are killed
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_Forward(link))
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    threading.Thread(target=_watch_parent, args=(os.getppid(), scratch), daemon=True).start()
    link.send(("ready", os.getpid()))
    try:
        result = fn(*args, progress=link.progress, cancelled=None, **kwargs)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        try:
            blob: bytes | None = pickle.dumps(e)
        except Exception:  # noqa: BLE001
            blob = None
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        link.send(("error", blob, f"{type(e).__module__}.{type(e).__qualname__}", str(e), tb))
        return
    link.send(("ok", result))


# -- the parent side ----------------------------------------------------------------------------

def _levels() -> dict[str, int]:
    """Logger levels set here, for the child to log (and forward) the same records."""
    out = {"": logging.getLogger().getEffectiveLevel()}
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and lg.level != logging.NOTSET:
            out[name] = lg.level
    return out


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while the child is spawned: it inherits the mask, so a Ctrl-C
    before it ignores SIGINT cannot print a KeyboardInterrupt traceback; this thread sees it after."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _StderrWithFd:
    """sys.stderr as it is (writes go where they went), with a real file descriptor."""

    def __init__(self, stream: Any, fd: int) -> None:
        self._stream, self._fd = stream, fd

    def fileno(self) -> int:
        return self._fd

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stderr_fd() -> Iterator[None]:
    """multiprocessing starts its resource tracker (once) passing it ``sys.stderr.fileno()``; in the
    TUI sys.stderr is Textual's capture, whose fileno() is -1, and the start fails. Give it /dev/null
    meanwhile (nothing of the tracker should reach the terminal the TUI owns)."""
    try:
        ok = sys.stderr.fileno() >= 0
    except Exception:  # noqa: BLE001 - io.UnsupportedOperation, AttributeError, None
        ok = False
    if ok:
        yield
        return
    fd = os.open(os.devnull, os.O_WRONLY)
    original = sys.stderr
    proxy = _StderrWithFd(original, fd)
    sys.stderr = proxy
    try:
        yield
    finally:
        if sys.stderr is proxy:
            sys.stderr = original
        os.close(fd)


def call(fn: Callable[..., T], *args: Any, what: str, progress: ProgressFn | None = None,
         cancelled: Callable[[], bool] | None = None, **kwargs: Any) -> T:
    """``fn(*args, progress=..., cancelled=..., **kwargs)`` in a child process (see the module doc).
    ``fn`` must be a module-level function; arguments and result must pickle. In the child
    ``cancelled`` is None (cancel terminates it). ``what`` names the work in messages."""
    if _link is not None:  # already in a child: run inline
        return fn(*args, progress=progress, cancelled=cancelled, **kwargs)
    def is_cancelled() -> bool:
        return cancelled is not None and cancelled()

    if is_cancelled():
        raise CancelledError(f"{what} cancelled")
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_child_main, name=f"ncanvas-{what}", daemon=True,
                       args=(child_conn, scratch, _levels(), fn, args, kwargs))
    try:
        with _sigint_blocked(), _stderr_fd():
            proc.start()
    except Exception as e:  # noqa: BLE001 - OSError (EAGAIN, ENOMEM), pickling, a frozen interpreter
        child_conn.close()
        parent_conn.close()
        shutil.rmtree(scratch, ignore_errors=True)
        log.warning("%s: cannot start a child process (%s); running it in this thread instead "
                    "(the terminal may stutter meanwhile)", what, " ".join(str(e).split())[:200])
        return fn(*args, progress=progress, cancelled=is_cancelled, **kwargs)
    child_conn.close()
    claims: list[str] = []
    done = False
    try:
        pid = None
        while True:
            if is_cancelled():
                raise CancelledError(f"{what} cancelled")
            if not parent_conn.poll(POLL_S):
                if not proc.is_alive() and not parent_conn.poll(0):
                    break
                continue
            try:
                msg = parent_conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "progress":
                if progress is not None:
                    progress(msg[1], msg[2], msg[3])
                if is_cancelled():
                    raise CancelledError(f"{what} cancelled")
                parent_conn.send("go")
            elif kind == "log":
                record = logging.makeLogRecord(msg[1])
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)
            elif kind == "claim":
                claims.append(msg[1])
            elif kind == "ready":
                pid = msg[1]
                log.debug("%s: running in child process %d", what, pid)
            elif kind == "ok":
                done = True
                return msg[1]  # type: ignore[no-any-return]
            elif kind == "error":
                done = True
                _raise(what, *msg[1:])
        # the child is gone without an answer
        proc.join(5)
        if pid is None:
            log.warning("%s: the child process did not start (exit code %s); running it in this thread "
                        "instead (the terminal may stutter meanwhile)", what, proc.exitcode)
            done = True
            return fn(*args, progress=progress, cancelled=is_cancelled, **kwargs)
        tail = _tail(Path(scratch) / "child.log")
        raise EngineError(f"{what} failed: its process ended with exit code {proc.exitcode}"
                          + (f" ({tail})" if tail else ""))
    finally:
        _stop(proc, parent_conn, claims, scratch, clean=not done)


def _raise(what: str, blob: bytes | None, type_name: str, message: str, tb: str) -> None:
    exc: BaseException | None = None
    if blob is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(blob)
    if isinstance(exc, NcanvasError):
        raise exc from None
    if exc is None:
        exc = RuntimeError(f"{what} failed in its child process: {type_name}: {message}")
    raise exc from _RemoteTraceback(tb)


def _tail(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " ".join(lines[-1].split())[:200] if lines else ""


def _stop(proc: Any, conn: Any, claims: list[str], scratch: str, *, clean: bool) -> None:
    """End the child (it exits by itself once it answered; else terminate, then kill) and, unless it
    answered, remove the temp files it announced."""
    if not clean:
        proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join(2)
        if proc.is_alive():
            proc.kill()
            proc.join(2)
    with contextlib.suppress(Exception):  # claims still in the pipe
        while conn.poll(0):
            msg = conn.recv()
            if msg[0] == "claim":
                claims.append(msg[1])
    conn.close()
    if clean:
        for p in claims:
            with contextlib.suppress(OSError):
                os.unlink(p)
    shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(Exception):
        proc.close()

