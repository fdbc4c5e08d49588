"""Running a TensorRT / TensorRT-RTX engine: the ``tensorrt`` and ``tensorrt-rtx`` backends.

The artefact selection (``engines.artefacts.select``) chose the engine and refused a stale or
foreign one (changed ONNX, other TensorRT version, other GPU, corrupt file) BEFORE anything
deserializes it. ``load()`` then, in the GPU worker thread (where the CUDA primary context is
current):

1. deserializes it (``trt.Runtime.deserialize_cuda_engine``; errors from TensorRT's
   logger end up in the message) and creates an execution context;
2. allocates pinned host buffers (``pagelocked_empty``) and device buffers for the
   largest batch of the profile; on an integrated GPU (Jetson) the pinned memory is
   *mapped*, so the GPU reads and writes it in place and no copies are made.

``infer(batch)`` sets the input shape for this batch (dynamic profile), copies in
asynchronously on a stream, runs ``execute_async_v3`` (TensorRT >= 8.5 / 10 / 11 /
RTX: named tensors, ``set_tensor_address``; an older TensorRT is refused with one line),
copies out,
measures GPU compute time with CUDA events, and returns a COPY of the logits.

Every call that touches CUDA runs in a GPU worker thread: called from any other
thread, ``load``/``infer``/``close`` hop into the shared worker (``on_worker``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ncanvas_tui.backends.base import BackendInfo
from ncanvas_tui.backends.trtlib import import_trt
from ncanvas_tui.errors import BackendError, EngineError
from ncanvas_tui.worker import DeviceBuffer, GpuWorker, current_worker, on_worker

if TYPE_CHECKING:  # checked by mypy against tensorrt-stubs (TensorRT 10 API)
    import tensorrt as trt

log = logging.getLogger(__name__)

#: the TensorRT backends this module runs
TRT_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


def uses_named_tensors(obj: Any) -> bool:
    """TensorRT >= 8.5 (and 10, 11, RTX): named I/O tensors + ``execute_async_v3``.

    ``obj`` is an execution context (or an engine: ``num_io_tensors``)."""
    return hasattr(obj, "execute_async_v3") or hasattr(obj, "num_io_tensors")


_LOGGERS: dict[int, Any] = {}


def _trt_logger(trt_mod: Any) -> Any:
    """THE TensorRT logger of this process for ``trt_mod`` (TensorRT wants one logger per process:
    every runtime gets the same one). It keeps errors (for messages) and sends the rest to logging.
    Builds run in their own child process with Polygraphy's logger, so the two never meet."""
    logger = _LOGGERS.get(id(trt_mod))
    if logger is None:
        logger = _LOGGERS[id(trt_mod)] = _make_logger(trt_mod)
    return logger


def _make_logger(trt_mod: Any) -> Any:

    class _Logger(trt_mod.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            sev = trt_mod.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(" ".join(str(msg).split()))
                log.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def _dims(d: Any) -> tuple[int, ...]:
    """A TensorRT ``Dims`` (or any sequence) as a tuple of ints."""
    return tuple(int(d[i]) for i in range(len(d)))


class _Tensor:
    """One I/O tensor of the engine and its buffer."""

    def __init__(self, name: str, index: int, is_input: bool, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.name = name
        self.index = index
        self.is_input = is_input
        self.dtype = dtype
        self.shape = shape            # with -1 for dynamic dims
        self.buf: DeviceBuffer | None = None


class EngineRunner:
    """A deserialized engine with its context, stream, events and I/O buffers.

    Create it anywhere; ``load``, ``infer`` and ``close`` must run where a CUDA
    context is current (a ``GpuWorker`` thread). ``TensorRTBackend`` wraps it.
    """

    def __init__(self, engine: bytes | Path, trt_mod: Any, *, label: str = "engine",
                 mapped: bool | None = None) -> None:
        self.source = engine
        self.trt = trt_mod
        self.label = label
        self.mapped = mapped              # None: when the GPU is integrated (Jetson)
        self.runtime: Any = None
        self.engine: trt.ICudaEngine | None = None
        self.context: trt.IExecutionContext | None = None
        self.stream: Any = None
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []
        self.profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
        self.max_batch = 0
        self.last_gpu_ms = 0.0            # GPU compute time of the last infer (CUDA events)
        self.last_host_ms = 0.0           # host wall time of the last infer (copies + launch + sync)
        self._ev: tuple[Any, Any] | None = None
        self._cleanup_token: int | None = None
        self._worker: GpuWorker | None = None

    # ---- load ----------------------------------------------------------------------------------

    def load(self) -> None:
        import pycuda.driver as cuda

        if cuda.Context.get_current() is None:
            raise BackendError(f"{self.label}: no current CUDA context; load engines in the GPU worker")
        data = self.source.read_bytes() if isinstance(self.source, Path) else self.source
        logger = _trt_logger(self.trt)
        logger.errors.clear()  # what this load logs, for its message
        self.runtime = self.trt.Runtime(logger)
        # as Polygraphy's EngineFromBytes: plugins registered before deserializing (an engine with a
        # plugin layer fails otherwise), host code allowed (version-compatible engines carry some)
        init_plugins = getattr(self.trt, "init_libnvinfer_plugins", None)
        if init_plugins is not None:
            init_plugins(logger, "")
        if hasattr(self.runtime, "engine_host_code_allowed"):
            self.runtime.engine_host_code_allowed = True
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            why = "; ".join(logger.errors[-2:]) or "TensorRT could not deserialize it"
            raise EngineError(f"{self.label}: cannot load engine: {why}")
        self.engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"{self.label}: cannot create an execution context "
                              f"({'; '.join(logger.errors[-2:]) or 'out of GPU memory?'})")
        self.context = context
        if not uses_named_tensors(context):
            raise EngineError(f"{self.label}: this TensorRT has no execute_async_v3 (named tensors); "
                              "ncanvas needs TensorRT 8.6 or newer")
        self._discover(engine)
        w = current_worker()
        self._worker = w
        integrated = bool(w and w.cuda and w.cuda.integrated and w.cuda.can_map_host_memory)
        mapped = integrated if self.mapped is None else self.mapped
        self.mapped = mapped
        self.stream = cuda.Stream()
        self._ev = (cuda.Event(), cuda.Event())
        try:
            self._allocate(mapped)
        except BaseException:
            self.close()
            raise
        if w is not None:
            self._cleanup_token = w.add_cleanup(self.close)

    def _discover(self, engine: trt.ICudaEngine) -> None:
        trt_mod = self.trt
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_in = engine.get_tensor_mode(name) == trt_mod.TensorIOMode.INPUT
            t = _Tensor(name, i, is_in, np.dtype(trt_mod.nptype(engine.get_tensor_dtype(name))),
                        _dims(engine.get_tensor_shape(name)))
            (self.inputs if is_in else self.outputs).append(t)
        if self.inputs and -1 in self.inputs[0].shape:
            lo, opt, hi = engine.get_tensor_profile_shape(self.inputs[0].name, 0)
            self.profile = (_dims(lo), _dims(opt), _dims(hi))
        if len(self.inputs) != 1 or not self.outputs:
            raise EngineError(f"{self.label}: engine has {len(self.inputs)} inputs and {len(self.outputs)} "
                              "outputs; an image classifier has one input and at least one output")
        inp = self.inputs[0]
        if len(inp.shape) != 4:
            raise EngineError(f"{self.label}: input {inp.name!r} has shape {inp.shape}; expected [N, 3, H, W]")
        if self.profile is not None:
            self.max_batch = int(self.profile[2][0])
            self.max_input_shape = self.profile[2]
        else:
            self.max_batch = int(inp.shape[0])
            self.max_input_shape = inp.shape

    def _set_batch(self, n: int) -> None:
        inp = self.inputs[0]
        shape = (n, *self.max_input_shape[1:])
        ctx: Any = self.context
        ok = ctx.set_input_shape(inp.name, shape)
        if ok is False:
            lo = self.profile[0][0] if self.profile else self.max_batch
            raise EngineError(f"{self.label}: batch {n} is outside the engine's profile {lo}..{self.max_batch}")

    def _out_shape(self, t: _Tensor) -> tuple[int, ...]:
        ctx: Any = self.context
        return _dims(ctx.get_tensor_shape(t.name))

    def _allocate(self, mapped: bool) -> None:
        self._set_batch(self.max_batch)
        inp = self.inputs[0]
        inp.buf = DeviceBuffer(tuple(self.max_input_shape), inp.dtype, mapped=mapped)
        for t in self.outputs:
            shape = self._out_shape(t)
            if any(d < 0 for d in shape):
                raise EngineError(f"{self.label}: output {t.name!r} has data-dependent shape {shape}")
            t.buf = DeviceBuffer(shape, t.dtype, mapped=mapped)
        assert self.context is not None
        for t in [*self.inputs, *self.outputs]:
            assert t.buf is not None
            if self.context.set_tensor_address(t.name, t.buf.device_ptr) is False:
                raise EngineError(f"{self.label}: TensorRT refused the buffer address of tensor {t.name!r}")

    # ---- infer ---------------------------------------------------------------------------------

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """NCHW batch -> [N, classes] float32 logits of the first output (a copy)."""
        if self.context is None:
            raise BackendError(f"{self.label}: engine not loaded (or closed)")
        t0 = time.perf_counter()
        n = int(batch.shape[0])
        if not 1 <= n <= self.max_batch:
            raise EngineError(f"{self.label}: batch of {n}; this engine takes 1..{self.max_batch}")
        inp = self.inputs[0]
        assert inp.buf is not None and self._ev is not None
        if tuple(batch.shape[1:]) != tuple(self.max_input_shape[1:]):
            raise EngineError(f"{self.label}: input shape {tuple(batch.shape)} does not fit "
                              f"{tuple(self.max_input_shape)}")
        self._set_batch(n)
        inp.buf.host[:n] = batch                      # casts to the engine's input dtype
        per_in = inp.buf.nbytes // self.max_batch
        inp.buf.to_device(self.stream, n * per_in)
        start, end = self._ev
        start.record(self.stream)
        ctx: Any = self.context
        ok = ctx.execute_async_v3(self.stream.handle)
        end.record(self.stream)
        out = self.outputs[0]
        assert out.buf is not None
        out_shape = self._out_shape(out)
        rows = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else 1
        nbytes = n * rows * out.buf.dtype.itemsize
        out.buf.to_host(self.stream, nbytes)
        self.stream.synchronize()
        if ok is False:
            raise EngineError(f"{self.label}: TensorRT failed to run the engine (batch {n})")
        self.last_gpu_ms = float(end.time_since(start))
        flat = out.buf.host.reshape(-1)[: n * rows]
        result = np.array(flat, dtype=np.float32, copy=True).reshape(n, rows)
        self.last_host_ms = (time.perf_counter() - t0) * 1e3
        return result

    # ---- close ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Free buffers, then context, engine, runtime (that order). Idempotent."""
        if self._worker is not None:
            self._worker.remove_cleanup(self._cleanup_token)
            self._cleanup_token = None
        if self.stream is not None:
            try:
                self.stream.synchronize()
            except Exception:
                log.debug("stream synchronize failed during close", exc_info=True)
        for t in [*self.inputs, *self.outputs]:
            if t.buf is not None:
                t.buf.free()
                t.buf = None
        self.context = None
        self.engine = None
        self.runtime = None
        self.stream = None
        self._ev = None

    @property
    def worker(self) -> GpuWorker | None:
        """The GPU worker this runner was loaded in (None: loaded outside any worker)."""
        return self._worker

    def describe_io(self) -> dict[str, Any]:
        return {"inputs": [{"name": t.name, "dtype": str(t.dtype), "shape": list(t.shape)} for t in self.inputs],
                "outputs": [{"name": t.name, "dtype": str(t.dtype), "shape": list(t.shape)} for t in self.outputs],
                "profile": [list(s) for s in self.profile] if self.profile else None,
                "api": "execute_async_v3",
                "mapped_host_memory": bool(self.mapped)}


class TensorRTBackend:
    """The ``tensorrt`` / ``tensorrt-rtx`` backend for one engine file.

    The engine was chosen and checked (stale, foreign, corrupt) by the artefact selection before
    this backend exists; this class deserializes and runs it."""

    def __init__(self, name: str, path: Path, *, precision: str, max_batch: int) -> None:
        if name not in TRT_MODULES:
            raise BackendError(f"unknown TensorRT backend {name!r} (tensorrt | tensorrt-rtx)")
        self.path = Path(path)
        self.runner: EngineRunner | None = None
        self.info = BackendInfo(name=name, version="", precision=precision, model_path=str(self.path),
                                max_batch=max_batch, device="cuda")

    @property
    def last_gpu_ms(self) -> float:
        return self.runner.last_gpu_ms if self.runner else 0.0

    def load(self) -> None:
        on_worker(self._load)

    def _load(self) -> None:
        if self.runner is not None:
            return
        trt_mod = import_trt(self.info.name)
        w = current_worker()
        if w is None or w.cuda is None:
            why = w.cuda_error if w is not None else "not in the GPU worker"
            raise BackendError(f"{self.info.name}: cannot run engines here: {why}")
        runner = EngineRunner(self.path, trt_mod, label=str(self.path))
        runner.load()
        self.runner = runner
        self.info.version = str(trt_mod.__version__)
        self.info.max_batch = min(runner.max_batch, self.info.max_batch) or runner.max_batch
        self.info.device = f"cuda:{w.cuda.ordinal} {w.cuda.name} (sm {w.cuda.sm})"
        self.info.notes.append(f"{runner.describe_io()['api']}"
                               + ("; mapped pinned memory (integrated GPU: no copies)" if runner.mapped else ""))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        runner = self.runner
        if runner is None:
            raise BackendError(f"{self.info.name}: engine not loaded")
        w = runner.worker                  # the worker that loaded it (its CUDA context, its buffers)
        if w is None or current_worker() is w:
            return runner.infer(batch)
        return w.run(runner.infer, batch)  # type: ignore[no-any-return]

    def raw_infer(self, batch: np.ndarray) -> np.ndarray:
        """The engine runner's call with nothing of the backend around it (bench baseline)."""
        if self.runner is None:
            raise BackendError(f"{self.info.name}: engine not loaded")
        return self.runner.infer(batch)

    def describe(self) -> dict[str, Any]:
        d = self.info.as_dict()
        if self.runner is not None:
            d["io"] = self.runner.describe_io()
        return d

    def close(self) -> None:
        runner, self.runner = self.runner, None
        if runner is None:
            return
        w = runner.worker
        if w is None or current_worker() is w:
            runner.close()
        elif w.alive and not w.closed:
            try:
                w.run(runner.close, timeout=30)
            except RuntimeError:  # the worker is shutting down: its cleanup frees everything
                pass
        # else: the worker already shut down, and its cleanup closed the runner
