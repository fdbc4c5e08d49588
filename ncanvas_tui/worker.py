"""The GPU worker: one long-lived thread that owns the CUDA context and runs every job.

Every TensorRT / CUDA call and every engine build runs in this one thread, in order;
the ONNX Runtime backend runs here too (no CUDA then). The UI and the CLI submit
jobs and get ``concurrent.futures.Future``s back::

    worker = get_worker()                       # shared, started on first use
    token = CancelToken()
    job = worker.submit(api.verify, settings, target, progress=on_progress, cancel=token)
    job.future.result()                         # or add_done_callback(...)
    job.cancel()                                # queued: never runs; running: sets the token

The job's arguments go to the function as they are: cancellation is the ``cancel=``
``CancelToken`` the caller passes (the job adopts it, so ``job.cancel()`` sets it), and
progress is the ``progress=`` callback, called **from the worker thread** (guarded: a
failing callback is logged, never breaks the job; the TUI turns it into a thread-safe
``post_message``; the worker never touches a widget). There is no ambient "current job".

CUDA: when pycuda imports and a GPU is present, the thread does ``cuda.init()``,
retains the device's *primary* context (the one TensorRT's runtime API and
Polygraphy use) and pushes it, so it is current in the worker thread only. At
shutdown the worker runs the registered cleanups (backends free their pinned and
device buffers; ``alloc``-ed buffers are freed), then pops and detaches the
context. ``shutdown`` is idempotent and runs at interpreter exit. Without pycuda
or a GPU the worker runs CPU-only and says why in ``cuda_error``.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncanvas_tui.errors import BackendError, CancelledError
from ncanvas_tui.progress import CancelToken, guarded

log = logging.getLogger(__name__)

_STOP = object()
_local = threading.local()


@dataclass
class CudaInfo:
    """What the worker's CUDA device is (filled in the worker thread)."""

    name: str
    compute_capability: tuple[int, int]
    total_memory_mib: int
    integrated: bool            # Jetson: host and device share memory
    can_map_host_memory: bool
    driver_version: int
    ordinal: int = 0

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "compute_capability": self.sm, "total_memory_mib": self.total_memory_mib,
                "integrated": self.integrated, "can_map_host_memory": self.can_map_host_memory,
                "driver_version": self.driver_version, "ordinal": self.ordinal}


class Job:
    """One unit of work: ``future`` holds its result or exception; ``token`` is its cancel flag."""

    _ids = itertools.count(1)

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 name: str | None) -> None:
        self.id = next(self._ids)
        self.fn = fn
        self.args = args
        token = kwargs.get("cancel")
        self.token: CancelToken = token if isinstance(token, CancelToken) else CancelToken()
        if callable(kwargs.get("progress")):
            kwargs = {**kwargs, "progress": guarded(kwargs["progress"])}
        self.kwargs = kwargs
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.future: Future[Any] = Future()
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def __repr__(self) -> str:
        f = self.future
        state = ("cancelled" if self.cancelled else "running" if f.running() else
                 "done" if f.done() else "pending")
        return f"<Job #{self.id} {self.name} {state}>"

    def cancel(self) -> bool:
        """Ask the job to stop. A queued job never runs (its future is cancelled, returns True);
        a running one sees its token set and should raise ``CancelledError`` (returns False)."""
        self.token.cancel()
        return self.future.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled


def current_worker() -> GpuWorker | None:
    """The worker whose thread this is (None in any other thread)."""
    return getattr(_local, "worker", None)


class DeviceBuffer:
    """A host array in pinned (page-locked) memory plus its device twin.

    ``mapped=True`` (Jetson, or any GPU that can map host memory): the device
    reads and writes the pinned host memory directly, so ``device_ptr`` points into
    ``host`` and the copies are no-ops. Create, copy and free it in the worker thread.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, *, mapped: bool = False) -> None:
        import pycuda.driver as cuda

        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.mapped = mapped
        self._device: Any = None
        if mapped:
            self.host = cuda.pagelocked_empty(self.shape, self.dtype,
                                              mem_flags=cuda.host_alloc_flags.DEVICEMAP)
            self.device_ptr = int(self.host.base.get_device_pointer())
        else:
            self.host = cuda.pagelocked_empty(self.shape, self.dtype)
            self._device = cuda.mem_alloc(max(1, self.host.nbytes))
            self.device_ptr = int(self._device)
        self.nbytes = self.host.nbytes
        self.freed = False

    def to_device(self, stream: Any, nbytes: int | None = None) -> None:
        """Async host -> device copy of the first ``nbytes`` (all by default) on ``stream``."""
        if self.mapped:
            return
        import pycuda.driver as cuda

        n = self.nbytes if nbytes is None else nbytes
        if n:
            cuda.memcpy_htod_async(self._device, self.host.reshape(-1).view(np.uint8)[:n], stream)

    def to_host(self, stream: Any, nbytes: int | None = None) -> None:
        """Async device -> host copy of the first ``nbytes`` on ``stream`` (synchronize before reading)."""
        if self.mapped:
            return
        import pycuda.driver as cuda

        n = self.nbytes if nbytes is None else nbytes
        if n:
            cuda.memcpy_dtoh_async(self.host.reshape(-1).view(np.uint8)[:n], self._device, stream)

    def free(self) -> None:
        """Free the device memory and the pinned host memory (idempotent)."""
        if self.freed:
            return
        self.freed = True
        if self._device is not None:
            self._device.free()
            self._device = None
        base = getattr(self.host, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()
        self.host = np.empty((0,), self.dtype)


@dataclass
class _Stats:
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    busy_s: float = 0.0
    names: dict[str, int] = field(default_factory=dict)


class GpuWorker:
    """The thread that owns the GPU. ``use_cuda``: None = when available, True = required, False = never."""

    def __init__(self, *, use_cuda: bool | None = None, device: int = 0, name: str = "ncanvas-gpu") -> None:
        self.use_cuda = use_cuda
        self.device_ordinal = device
        self.name = name
        self.cuda: CudaInfo | None = None
        self.cuda_error: str | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        self._cancel_all = False
        self._closed = threading.Event()
        self._running: Job | None = None
        self._cleanups: dict[int, Callable[[], None]] = {}
        self._cleanup_ids = itertools.count(1)
        self._ctx: Any = None
        self._start_error: BaseException | None = None
        self.stats = _Stats()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> GpuWorker:
        """Start the thread and wait until CUDA is (or is not) set up. Idempotent."""
        with self._lock:
            if self._closing:
                raise RuntimeError(f"{self.name}: worker was shut down; start a new one")
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error
        return self

    def __enter__(self) -> GpuWorker:  # noqa: PYI034 - Self needs typing_extensions on 3.10
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def has_cuda(self) -> bool:
        return self.cuda is not None

    def in_worker_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = True, timeout: float | None = 30.0) -> None:
        """Stop the worker. ``cancel_pending``: queued jobs are cancelled and the running one is
        asked to stop; otherwise the queue is drained first. Then cleanups run, buffers are
        freed and the CUDA context is popped and detached (in the worker thread). Idempotent."""
        with self._lock:
            first = not self._closing
            self._closing = True
            thread = self._thread
        if first:
            if cancel_pending:
                self._cancel_all = True    # queued jobs are cancelled as they come off the queue
                running = self._running
                if running is not None:
                    running.cancel()
            self._queue.put((_STOP, cancel_pending))
        if thread is None:
            self._closed.set()
            return
        if wait and threading.current_thread() is not thread:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: still busy %.0f s after shutdown was asked; leaving it (daemon thread)",
                            self.name, timeout or 0)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # ---- jobs --------------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, name: str | None = None, **kwargs: Any) -> Job:
        """Queue ``fn(*args, **kwargs)`` to run in the worker thread; returns its ``Job``. A
        ``cancel=CancelToken`` argument becomes the job's token (``job.cancel()`` sets it)."""
        if self._thread is None:
            self.start()
        job = Job(fn, args, kwargs, name)
        with self._lock:
            if self._closing:
                raise RuntimeError(f"{self.name}: worker is shut down; no new jobs")
            self.stats.submitted += 1
            self._queue.put(job)
        return job

    def run(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn`` in the worker and wait for its result (directly when already in the worker)."""
        if self.in_worker_thread():
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).future.result(timeout)

    def add_cleanup(self, fn: Callable[[], None]) -> int:
        """Register ``fn`` to run in the worker thread at shutdown (LIFO); returns a token."""
        token = next(self._cleanup_ids)
        self._cleanups[token] = fn
        return token

    def remove_cleanup(self, token: int | None) -> None:
        if token is not None:
            self._cleanups.pop(token, None)

    def alloc(self, shape: tuple[int, ...], dtype: Any = np.float32, *, mapped: bool = False) -> DeviceBuffer:
        """A pinned host + device buffer, freed at shutdown unless freed before. Worker thread only."""
        if self.cuda is None:
            raise BackendError(f"no CUDA in this worker: {self.cuda_error or 'not started'}")
        if not self.in_worker_thread():
            raise RuntimeError("GpuWorker.alloc must be called in the worker thread (submit a job)")
        buf = DeviceBuffer(shape, dtype, mapped=mapped and self.cuda.can_map_host_memory)
        self.add_cleanup(buf.free)
        return buf

    # ---- the thread --------------------------------------------------------------------------

    def _init_cuda(self) -> None:
        if self.use_cuda is False:
            self.cuda_error = "CUDA disabled for this worker"
            return
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            self.cuda_error = f"pycuda not importable ({e}); pip install 'ncanvas[gpu]'"
        else:
            try:
                cuda.init()
                if cuda.Device.count() <= self.device_ordinal:
                    raise BackendError(f"no CUDA device #{self.device_ordinal} "
                                       f"({cuda.Device.count()} present)")
                dev = cuda.Device(self.device_ordinal)
                ctx = dev.retain_primary_context()
                ctx.push()
                self._ctx = ctx
                attr = cuda.device_attribute
                self.cuda = CudaInfo(
                    name=dev.name(), compute_capability=dev.compute_capability(),
                    total_memory_mib=dev.total_memory() // (1 << 20),
                    integrated=bool(dev.get_attribute(attr.INTEGRATED)),
                    can_map_host_memory=bool(dev.get_attribute(attr.CAN_MAP_HOST_MEMORY)),
                    driver_version=cuda.get_driver_version(), ordinal=self.device_ordinal)
                log.debug("%s: CUDA primary context on %s (sm %s)", self.name, self.cuda.name, self.cuda.sm)
                return
            except Exception as e:  # noqa: BLE001 - any driver failure means CPU-only
                self.cuda_error = f"no usable GPU: {' '.join(str(e).split())}"
        if self.use_cuda:
            raise BackendError(f"{self.name}: CUDA required but {self.cuda_error}")

    def _main(self) -> None:
        _local.worker = self
        try:
            self._init_cuda()
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._start_error = e
            with self._lock:
                self._closing = True
            self._ready.set()
            self._closed.set()
            return
        self._ready.set()
        cancel_rest = True
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, tuple) and item and item[0] is _STOP:
                    cancel_rest = item[1]
                    break
                self._run_job(item)
        finally:
            self._drain(cancel_rest)
            self._teardown()
            self._closed.set()

    def _run_job(self, job: Job) -> None:
        if self._cancel_all:
            job.cancel()
        if not job.future.set_running_or_notify_cancel():
            self.stats.cancelled += 1      # cancelled while queued: never runs
            return
        if job.cancelled:                  # cancel() raced with the start
            self.stats.cancelled += 1
            job.future.set_exception(CancelledError(f"{job.name}: cancelled before it started"))
            return
        self._running = job
        job.started_at = time.perf_counter()
        try:
            result = job.fn(*job.args, **job.kwargs)
        except BaseException as e:  # noqa: BLE001 - errors come back as the future's exception
            if isinstance(e, CancelledError):
                self.stats.cancelled += 1
            else:
                self.stats.failed += 1
            job.future.set_exception(e)
        else:
            self.stats.completed += 1
            job.future.set_result(result)
        finally:
            job.finished_at = time.perf_counter()
            self.stats.busy_s += job.finished_at - job.started_at
            self._running = None

    def _drain(self, cancel: bool) -> None:
        """Jobs still queued at shutdown: cancelled (or run, when draining)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, Job):
                continue
            if cancel:
                item.cancel()
                item.future.set_running_or_notify_cancel()
                self.stats.cancelled += 1
            else:
                self._run_job(item)

    def _teardown(self) -> None:
        for token in sorted(self._cleanups, reverse=True):
            fn = self._cleanups.pop(token)
            try:
                fn()
            except Exception:
                log.exception("%s: cleanup %r failed", self.name, fn)
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            try:
                import pycuda.driver as cuda

                cuda.Context.synchronize()
                ctx.pop()
            finally:
                ctx.detach()
            log.debug("%s: CUDA context popped and detached", self.name)


# ---- the shared worker ---------------------------------------------------------------------

_shared: GpuWorker | None = None
_shared_lock = threading.Lock()


def get_worker(*, use_cuda: bool | None = None) -> GpuWorker:
    """The process-wide worker, started on first use and shut down at exit."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed or _shared._closing:
            _shared = GpuWorker(use_cuda=use_cuda)
            _shared.start()
        return _shared


def shutdown_worker() -> None:
    """Shut the shared worker down (idempotent; registered with atexit)."""
    global _shared
    with _shared_lock:
        w, _shared = _shared, None
    if w is not None:
        w.shutdown(timeout=10.0)


atexit.register(shutdown_worker)


def on_worker(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` in a GPU worker thread: directly when this already is one, else through
    the shared worker (waiting for the result). Used by backends whose calls must run
    where the CUDA context is current."""
    if current_worker() is not None:
        return fn(*args, **kwargs)
    return get_worker().run(fn, *args, **kwargs)
