"""The ONE module that knows how TensorRT versions differ (8.6, 10.x, 11.x, TensorRT-RTX).

Everything is feature detection on the imported module, never version strings:

================================  =========  =========  ===============  =============
feature                            TRT 8.6    TRT 10.x   TRT 11.x         TensorRT-RTX
================================  =========  =========  ===============  =============
``BuilderFlag.FP16`` / ``INT8``    yes        yes        no (typed)       no (typed)
``IInt8EntropyCalibrator2``        yes        yes        no               no
``IProgressMonitor``               no         yes        yes              yes
``NetworkDefinitionCreationFlag``  explicit   strongly   strongly typed   strongly typed
                                   batch      typed opt  only
``builder_optimization_level``     yes        yes        yes              yes
``MemoryPoolType.WORKSPACE``       yes        yes        yes              yes
timing cache                       yes        yes        yes              no-op (skipped)
================================  =========  =========  ===============  =============

Strongly typed builds (no precision flags) take their precision from the ONNX:
fp16 from an fp16 ONNX, int8 from a Q/DQ ONNX. Type-checked with mypy against
``tensorrt-stubs`` (``python -m mypy ncanvas_tui/engines``).

Polygraphy picks ``tensorrt`` or ``tensorrt_rtx`` once per process, when its TensorRT
backend is first imported (``POLYGRAPHY_USE_TENSORRT_RTX=1``): ``use_polygraphy``
sets that up and refuses to mix both in one process.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ncanvas_tui.backends.trtlib import TRT_BACKENDS, available, import_trt
from ncanvas_tui.errors import BackendError, EngineError

if TYPE_CHECKING:
    import tensorrt as trt_t

__all__ = ["TRT_BACKENDS", "Features", "GpuInfo", "available", "features", "gpu_info", "import_trt"]

log = logging.getLogger("ncanvas.engines")

def use_polygraphy(backend: str) -> ModuleType:
    """Import Polygraphy for ``backend`` with its logger routed to Python logging.

    Returns ``polygraphy.backend.trt``. Raises EngineError when this process already
    loaded Polygraphy's TensorRT backend for the other TensorRT flavour."""
    want_rtx = backend == "tensorrt-rtx"
    loaded = "polygraphy.backend.trt" in sys.modules
    if "polygraphy.config" not in sys.modules:
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if want_rtx else "0"
    try:
        from polygraphy import config as pg_config
    except ImportError as e:
        raise BackendError(f"polygraphy is not installed ({e}); pip install 'ncanvas[engines]'") from None
    if bool(pg_config.USE_TENSORRT_RTX) != want_rtx:
        if loaded:
            other = "tensorrt-rtx" if pg_config.USE_TENSORRT_RTX else "tensorrt"
            raise EngineError(f"this process already uses Polygraphy with {other}; build for {backend} "
                              f"in a new process (POLYGRAPHY_USE_TENSORRT_RTX={'1' if want_rtx else '0'})")
        pg_config.USE_TENSORRT_RTX = want_rtx
    route_polygraphy_logging()
    import polygraphy.backend.trt as pg_trt

    module: ModuleType = pg_trt
    return module


def route_polygraphy_logging() -> None:
    """Polygraphy's G_LOGGER prints to stdout (which Textual captures): send it to Python logging."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.colors = False  # also stops the "'colored' module is not installed" print
    G_LOGGER.use_python_logging_system = True


# -- feature detection ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Features:
    module: str
    version: str
    rtx: bool
    builder_flag_fp16: bool
    builder_flag_int8: bool
    implicit_int8_calibrators: bool
    progress_monitor: bool
    strongly_typed_flag: bool
    strongly_typed_only: bool
    optimization_level: bool
    memory_pool: bool
    timing_cache: bool
    sparse_weights: bool

    def precision_mode(self, precision: str) -> str:
        """How ``precision`` is built here: 'flags' (builder flags), 'typed' (from the ONNX types)."""
        if precision == "fp32":
            return "typed" if self.strongly_typed_only else "flags"
        flag = self.builder_flag_fp16 if precision == "fp16" else self.builder_flag_int8
        return "flags" if flag and not self.strongly_typed_only else "typed"


def features(trt: ModuleType) -> Features:
    rtx = trt.__name__.startswith("tensorrt_rtx")
    flags = trt.BuilderFlag
    fp16 = hasattr(flags, "FP16")
    int8 = hasattr(flags, "INT8")
    typed_flag = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    return Features(
        module=trt.__name__,
        version=str(getattr(trt, "__version__", "?")),
        rtx=rtx,
        builder_flag_fp16=fp16,
        builder_flag_int8=int8,
        implicit_int8_calibrators=hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt, "IInt8MinMaxCalibrator"),
        progress_monitor=hasattr(trt, "IProgressMonitor"),
        strongly_typed_flag=typed_flag,
        # TRT 11 and RTX dropped the weak-typing precision flags: networks are strongly typed (detected
        # by the flags' absence; the STRONGLY_TYPED creation flag is set only where it exists)
        strongly_typed_only=not fp16 and not int8,
        optimization_level=hasattr(trt.IBuilderConfig, "builder_optimization_level"),
        memory_pool=hasattr(trt, "MemoryPoolType") and hasattr(trt.MemoryPoolType, "WORKSPACE"),
        # RTX keeps the timing-cache API as deprecated no-ops (and its deserializer wants a GPU).
        timing_cache=hasattr(trt.IBuilderConfig, "create_timing_cache") and not rtx,
        sparse_weights=hasattr(flags, "SPARSE_WEIGHTS"),
    )


def calibrator_base(trt: ModuleType, calibrator: str) -> Any:
    """The TensorRT calibrator class for ``entropy2`` | ``minmax`` (TRT <= 10 only)."""
    names = {"entropy2": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
    cls = getattr(trt, names[calibrator], None)
    if cls is None:
        raise EngineError(f"TensorRT {getattr(trt, '__version__', '?')} has no {names[calibrator]}: "
                          f"int8 here needs a Q/DQ ONNX (explicit quantization)")
    return cls


def memory_pool_limits(trt: ModuleType, workspace_mib: int) -> dict[Any, int] | None:
    if not hasattr(trt, "MemoryPoolType"):
        return None
    return {trt.MemoryPoolType.WORKSPACE: int(workspace_mib) << 20}


def dla_cores(trt: ModuleType) -> int:
    """How many DLA cores the builder sees (0: none, e.g. desktop GPUs, Orin Nano, TensorRT 11.0-11.3)."""
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        return int(getattr(builder, "num_DLA_cores", 0) or 0)
    except Exception:  # noqa: BLE001 - no GPU, no DLA support compiled in: none
        return 0


def timing_cache_ok(config: trt_t.IBuilderConfig, data: bytes) -> bool:
    """Whether TensorRT accepts ``data`` as a timing cache (a truncated or foreign file is refused)."""
    try:
        return config.create_timing_cache(data) is not None
    except Exception:  # noqa: BLE001 - TensorRT raises RuntimeError / TypeError on garbage
        return False


def parser_errors(parser: trt_t.OnnxParser) -> list[str]:
    """The ONNX parser's error messages (node + description)."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node() if hasattr(err, "node") else -1
        name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        where = f"node {node}" + (f" {name}" if name else "") + (f" ({op})" if op else "")
        out.append(f"{where}: {err.desc()}" if node is not None and node >= 0 else str(err.desc()))
    return out


ProgressFn = Callable[[int, int, str], None]


def make_progress_monitor(trt: ModuleType, progress: ProgressFn | None,
                          cancelled: Callable[[], bool] | None) -> Any:
    """A ``trt.IProgressMonitor`` that reports phases/steps and aborts when ``cancelled()``.

    None where this TensorRT has no progress monitor (8.6): the build then reports
    phases and log lines only, and cancellation is checked between phases."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    base = trt.IProgressMonitor

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)  # pybind trampolines must init their base explicitly
            self.steps: dict[str, int] = {}
            self.aborted = False
            self.depth: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            # top-level phases report every step; their sub-phases only their start
            self.steps[phase_name] = num_steps
            self.depth[phase_name] = (self.depth.get(parent_phase, 0) + 1) if parent_phase else 0
            if progress and self.depth[phase_name] <= 1:
                top = parent_phase if parent_phase and self.depth[phase_name] == 1 else None
                progress(0, num_steps, f"{top}: {phase_name}" if top else phase_name)

        def step_complete(self, phase_name: str, step: int) -> bool:
            if cancelled is not None and cancelled():
                self.aborted = True
                return False  # TensorRT aborts the build
            if progress and self.depth.get(phase_name, 0) == 0:
                progress(step + 1, self.steps.get(phase_name, 0), phase_name)
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


# -- the GPU this build is for --------------------------------------------------------------------

@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"; "" when unknown


@functools.lru_cache(maxsize=1)
def gpu_info() -> GpuInfo:
    """Name and compute capability of GPU 0, without creating a CUDA context.

    pycuda's driver API (``cuInit`` + device query: no context), then nvidia-smi, then the
    Jetson device tree; ``none (build-only)`` when there is no GPU (RTX builds on a CPU box).
    The one GPU-identity probe: build (artefact key, sidecar) and run (the stale/foreign check
    before loading) both call it, so names compare equal. Cached for the process."""
    from ncanvas_tui.engines.store import NO_GPU

    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return GpuInfo(str(dev.name()), f"{major}.{minor}")
    except Exception as e:  # noqa: BLE001 - no pycuda, no driver, no device
        log.debug("pycuda device query failed: %s", e)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(check=False, args=[smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
            if line:
                name, _, cc = line.partition(",")
                return GpuInfo(name.strip(), cc.strip())
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    try:
        with open("/proc/device-tree/model", "rb") as f:
            model = f.read().rstrip(b"\0").decode("utf-8", "replace").strip()
        if "jetson" in model.lower() or "nvidia" in model.lower():
            return GpuInfo(model, "")
    except OSError:
        pass
    return GpuInfo(NO_GPU, "")
