"""Build an artefact from a ``BuildPlan``: a chain of small steps, each with one concern.

    plan_build(settings, BuildRequest) -> BuildPlan          (engines.plan: validate, read, key)
    build(plan) -> BuildResult:
        lock(artefact id) -> reuse? -> ONNX Runtime: quantize -> save
                                    -> TensorRT: prepare ONNX -> parse -> config (profile, timing
                                       cache, calibrator) -> EngineBytesFromNetwork -> save + caches

TensorRT steps use Polygraphy's loaders:

    NetworkFromOnnxPath -> CreateConfig(profiles=[Profile().add(inp, min, opt, max)], ...)
        -> EngineBytesFromNetwork -> atomic write (temp + rename) + JSON sidecar

(``EngineBytesFromNetwork`` rather than ``EngineFromNetwork`` + ``SaveEngine``: the
serialized engine is all we keep, and deserializing needs a GPU, which a
TensorRT-RTX build machine may not have.)

Precision, by what the TensorRT here supports (see ``compat``):

- TensorRT 8.6-10.x: fp16 / int8 builder flags; int8 by implicit calibration with
  EntropyCalibrator2 or MinMaxCalibrator fed real images at the OPT batch shape,
  the calibration cache reused per model + calibrator; a Q/DQ (QAT) model builds
  with the INT8 flag and no calibrator.
- strongly typed TensorRT 11.x / TensorRT-RTX: fp16 from an fp16 ONNX (inputs and
  outputs kept fp32), int8 from the symmetric Q/DQ ONNX (``quantize``).

Timing cache per GPU + TensorRT version (``[build].timing_cache``), loaded and
saved atomically; a corrupt one is moved aside with a warning and the build goes
on without it. Progress: TensorRT's IProgressMonitor where it exists (phases and
steps), else phases and Polygraphy's log lines. ``cancelled()`` is checked
between phases and inside the monitor (which then aborts the build); Ctrl-C,
cancel and disk full leave no engine, cache or temp file behind.

Run builds in the GPU worker thread (it owns the CUDA context); on a CPU-only
machine TensorRT-RTX builds anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncanvas_tui.engines import compat
from ncanvas_tui.engines.plan import BuildPlan, BuildRequest, plan_build
from ncanvas_tui.engines.store import NO_GPU, TEMP_PREFIX, Artefact, EngineStore
from ncanvas_tui.errors import CancelledError, EngineError, ModelError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress

__all__ = ["BuildPlan", "BuildRequest", "BuildResult", "build", "plan_build"]

log = logging.getLogger("ncanvas.engines")
ProgressFn = Callable[[int, int, str], None]


# -- log capture ----------------------------------------------------------------------------------

class _Capture(logging.Handler):
    """Collects Polygraphy/TensorRT log lines during one phase (errors for messages, info for progress)."""

    def __init__(self, forward: ProgressFn | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.forward = forward

    def emit(self, record: logging.LogRecord) -> None:
        msg = " ".join(record.getMessage().split())
        for prefix in ("[E] ", "[W] ", "[I] ", "[V] ", "[!] "):
            msg = msg.replace(prefix, "")
        if record.levelno >= logging.ERROR:
            self.errors.append(msg)
        elif record.levelno >= logging.WARNING:
            self.warnings.append(msg)
        elif self.forward is not None and record.levelno >= logging.INFO:
            self.forward(0, 0, msg[:160])


@contextlib.contextmanager
def _capture(forward: ProgressFn | None = None) -> Iterator[_Capture]:
    handler = _Capture(forward)
    logger = logging.getLogger("Polygraphy")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    if forward is not None:  # log lines become progress messages (TensorRT without a progress monitor)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


# -- caches ---------------------------------------------------------------------------------------

def _move_aside(path: Path, why: str) -> Path:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    with contextlib.suppress(OSError):
        path.replace(aside)
    log.warning("%s: %s; moved aside to %s and building without it", path, why, aside.name)
    return aside


def check_timing_cache(path: Path, accepts: Callable[[bytes], bool]) -> bool:
    """A timing cache TensorRT refuses (truncated by a crash or a full disk, foreign) is moved aside with
    a warning and the build goes on without it: never a failed build. True when ``path`` is usable."""
    if not path.is_file():
        return False
    try:
        data = path.read_bytes()
    except OSError as e:
        _move_aside(path, f"unreadable timing cache ({e.strerror})")
        return False
    if not data or not accepts(data):
        _move_aside(path, "corrupt timing cache (TensorRT refused it)")
        return False
    return True


CALIBRATION_ALGOS = {"entropy2": b"EntropyCalibration2", "minmax": b"MinMaxCalibration"}


def trt_version_tag(version: str) -> set[bytes]:
    """The version numbers a TensorRT calibration cache header may carry for ``version``: TRT 8.x
    writes major*1000+minor*100+patch ("TRT-8601-..."), 10.x and later major*10000+minor*100+patch
    ("TRT-100300-...")."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return {str(major * 1000 + minor * 100 + patch).encode(), str(major * 10000 + minor * 100 + patch).encode()}


def calibration_cache_problem(path: Path, version: str, calibrator: str) -> str | None:
    """Why TensorRT would ignore this calibration cache (then it asks for data again); None: usable.
    A cache is text: a 'TRT-<version>-<algorithm>' header, then 'tensor: hex' lines."""
    try:
        head = path.read_bytes()[:80].split(b"\n", 1)[0]
    except OSError as e:
        return f"unreadable ({e.strerror})"
    m = re.fullmatch(rb"TRT-(\d+)-(\w+)", head.strip())
    if m is None:
        return "not a TensorRT calibration cache"
    if m.group(1) not in trt_version_tag(version):
        return f"written by another TensorRT ({head.decode(errors='replace')}, this is {version})"
    if m.group(2) != CALIBRATION_ALGOS.get(calibrator, b""):
        return f"written by another calibrator ({m.group(2).decode(errors='replace')})"
    return None


def _valid_calibration_cache(path: Path) -> bool:
    """TensorRT calibration caches are text: a 'TRT-<version>-<algo>' header, then name: hex lines."""
    try:
        head = path.read_bytes()[:64]
    except OSError:
        return False
    return head.startswith(b"TRT-")


# -- the build ------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    """What ``build`` made (or found): ``artefact`` None when there is nothing to build (``note`` says why)."""

    plan_id: str
    model: str
    backend: str
    precision: str
    artefact: Artefact | None
    reused: bool = False
    seconds: float = 0.0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.artefact.id if self.artefact else None, "model": self.model,
                             "backend": self.backend, "precision": self.precision, "reused": self.reused,
                             "seconds": round(self.seconds, 3), "note": self.note}
        if self.artefact is not None:
            d["artefact"] = self.artefact.as_dict()
            d["path"] = str(self.artefact.path)
        return d

    @property
    def summary(self) -> str:
        """One line for logs, notifications and the CLI."""
        a = self.artefact
        if a is None:
            return f"{self.model} {self.backend} {self.precision}: {self.note}"
        if self.reused:
            return f"up to date: {a.label} ({a.path.name}; --force rebuilds)"
        return f"built {a.label} in {self.seconds:.1f} s ({a.path.name})"


def build(plan: BuildPlan, *, progress: Progress = no_progress, cancel: CancelToken = NEVER) -> BuildResult:
    """Build (or reuse) the artefact ``plan`` describes. Two builds of the same artefact (any
    processes) wait for each other; the second finds the first's result and reuses it."""
    t0 = time.perf_counter()
    res = BuildResult(plan.id, plan.source.entry.name, plan.backend, plan.precision, None)
    if plan.backend == "onnxruntime" and plan.precision != "int8":
        res.note = ("nothing to build: ONNX Runtime runs the fp32 ONNX as it is" if plan.precision == "fp32" else
                    "nothing to build: ONNX Runtime on the CPU runs fp16 requests as fp32 (fp16 is for the "
                    "GPU: use --backend tensorrt or tensorrt-rtx)")
        return res
    if plan.backend == "onnxruntime" and plan.source.qat:
        res.note = "nothing to build: the model already has Q/DQ nodes (QAT); ONNX Runtime runs it as it is"
        return res
    store = EngineStore(plan.settings)
    store.clean_temp_files()
    cancel.check("build")
    progress(0, 0, "waiting for another build of the same artefact" if _locked(store, plan) else "starting")
    with store.lock(plan.id):
        existing = _reusable(store, plan)
        if existing is not None:
            progress(1, 1, f"up to date: {existing.path.name}")
            res.artefact, res.reused = existing, True
            return res
        cancel.check("build")
        if plan.backend == "onnxruntime":
            res.artefact = _build_onnxruntime(plan, store, progress, cancel)
        else:
            # TensorRT builds (calibration included) run in a child process: cancel and Ctrl-C stop them
            # at once on every version (TensorRT-RTX ignores KeyboardInterrupt in its logger callback),
            # its temp files are removed, and Polygraphy binds there to the TensorRT flavour it needs
            from ncanvas_tui.engines import subproc

            res.artefact = subproc.call(_tensorrt_in_child, plan, what="build", progress=progress,
                                        cancelled=cancel)
    res.seconds = time.perf_counter() - t0
    return res


def _locked(store: EngineStore, plan: BuildPlan) -> bool:
    """Whether another process holds the build lock of this artefact now (for the progress line)."""
    import fcntl

    path = store.root / ".locks" / f"{plan.id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _reusable(store: EngineStore, plan: BuildPlan) -> Artefact | None:
    """The artefact already built for this plan, when it is intact and ``--force`` was not given."""
    if plan.force or not plan.path.is_file():
        return None
    rec = store._load(plan.path)
    try:
        store.check(rec, trt_version=None, gpu_name=None, compute_capability=None,
                    model_sha256=plan.source.sha256)
    except EngineError as e:
        log.info("rebuilding: %s", e)
        return None
    if plan.features is not None and rec.opt_level != (plan.opt_level if plan.features.optimization_level
                                                       else None):
        log.info("rebuilding %s: opt level %s requested, built with %s", rec.name, plan.opt_level, rec.opt_level)
        return None
    return rec


def _record(plan: BuildPlan, *, source_onnx: Path, notes: list[str], seconds: float) -> Artefact:
    """The sidecar of what ``plan`` builds (size and sha256 are filled in by ``EngineStore.save``)."""
    from ncanvas_tui.board import conditions_snapshot

    key, cal = plan.key, plan.calibration
    return Artefact(
        path=plan.path, id=plan.id, model=key.model, backend=plan.backend, precision=plan.precision,
        batch=list(key.batch), backend_version=key.backend_version, model_sha256=key.model_sha256,
        source_onnx=str(source_onnx), gpu_name=plan.gpu.name if plan.gpu else "cpu",
        compute_capability=plan.gpu.compute_capability if plan.gpu else "",
        calibrator=plan.calibrator, calibration_set=key.calibration_set,
        calibration_images=len(cal.files) if cal else 0, quantization=plan.quantization,
        keep_float=list(key.keep_float), dla_core=key.dla_core, options=dict(key.options),
        opt_level=plan.opt_level if plan.features is not None and plan.features.optimization_level else None,
        sparse=plan.sparse, workspace_mib=plan.settings.build.workspace_mib if plan.features else None,
        build_seconds=round(seconds, 3), notes=notes, conditions=conditions_snapshot())


# -- ONNX Runtime: the Q/DQ model -----------------------------------------------------------------

def _build_onnxruntime(plan: BuildPlan, store: EngineStore, progress: Progress, cancel: CancelToken) -> Artefact:
    from ncanvas_tui.engines.quantize import quantize

    t0 = time.perf_counter()
    progress(0, 0, "explicit quantization (Q/DQ ONNX: uint8 activations, per-channel int8 weights)")
    summary = quantize(plan, "ort", plan.path, progress=progress, cancel=cancel)
    notes = list(plan.notes)
    if plan.keep_float:
        notes.append(f"{len(plan.keep_float)} layer(s) kept float (no Q/DQ around them)")
    if summary.get("skipped"):
        notes.append(f"calibration skipped {summary['skipped']} unreadable image(s)")
    try:
        return store.save(_record(plan, source_onnx=plan.source.path, notes=notes,
                                  seconds=time.perf_counter() - t0))
    except BaseException:
        plan.path.unlink(missing_ok=True)
        raise


# -- TensorRT / TensorRT-RTX: the engine ---------------------------------------------------------

def _check_cancel(cancel: CancelToken, phase: str) -> None:
    if cancel():
        raise CancelledError(f"build cancelled ({phase}); nothing was written")


def prepare_onnx(plan: BuildPlan, progress: Progress, cancel: CancelToken) -> tuple[Path, list[str]]:
    """Step 1: the ONNX the parser reads (sanitized; fp16 or Q/DQ for strongly typed builds)."""
    from ncanvas_tui.engines.prep import sanitized_model_for
    from ncanvas_tui.engines.quantize import fp16_model_for, qdq_fp16_model_for, qdq_model_for

    settings, source = plan.settings, plan.source
    if plan.precision == "fp16" and plan.mode == "typed":
        progress(0, 0, "fp16 ONNX for a strongly typed build")
        return (fp16_model_for(settings, source, progress=progress, cancel=cancel),
                ["fp16 from an fp16 ONNX (inputs/outputs fp32)"])
    if plan.precision == "int8" and source.qat:
        return sanitized_model_for(settings, source, progress=progress, cancel=cancel), [
            "Q/DQ model (quantization-aware training) used as it is"]
    if plan.quantization == "explicit":
        progress(0, 0, "explicit quantization (Q/DQ ONNX, symmetric int8)")
        if plan.mode == "typed" and not plan.strict_int8:
            return (qdq_fp16_model_for(plan, progress=progress, cancel=cancel),
                    ["int8 from a symmetric Q/DQ ONNX, fp16 elsewhere (explicit quantization)"])
        return (qdq_model_for(plan, progress=progress, cancel=cancel),
                ["int8 from a symmetric Q/DQ ONNX, fp32 elsewhere (explicit quantization)"])
    return sanitized_model_for(settings, source, progress=progress, cancel=cancel), []


def _parse(pg: Any, onnx: Path, strongly_typed: bool) -> tuple[Any, Any, Any]:
    """Step 2: (builder, network, parser); a parse failure is a ModelError carrying the parser's errors."""
    with _capture() as cap:
        try:
            return pg.NetworkFromOnnxPath(str(onnx), strongly_typed=strongly_typed)()  # type: ignore[no-any-return]
        except Exception as e:  # noqa: BLE001 - PolygraphyException
            errs = [m for m in cap.errors if m] or [" ".join(str(e).split())]
            raise ModelError(f"{onnx}: TensorRT's ONNX parser failed: {'; '.join(errs)[:400]}") from None


class _TimingCache:
    """Step 3a: the timing cache of this GPU + TensorRT version, loaded and saved by Polygraphy
    (``CreateConfig(load_timing_cache=...)``, ``EngineBytesFromNetwork(save_timing_cache=...)``: the file
    is locked and merged, so two builds at once both add to it). One TensorRT refuses is moved aside."""

    def __init__(self, plan: BuildPlan, store: EngineStore, builder: Any, notes: list[str]) -> None:
        feats, gpu = plan.features, plan.gpu
        assert feats is not None and gpu is not None
        self.path: Path | None = None
        self.load: Path | None = None
        if not plan.settings.build.timing_cache:
            return
        if not feats.timing_cache:
            notes.append("no timing cache (TensorRT-RTX compiles kernels at load time)")
            return
        self.path = store.timing_cache_path(plan.backend, feats.version, gpu.name)
        config = builder.create_builder_config()
        if check_timing_cache(self.path, lambda data: compat.timing_cache_ok(config, data)):
            self.load = self.path
            notes.append(f"timing cache: {self.path.name}")


class _ImplicitCalibration:
    """Step 3b: TensorRT <= 10's implicit INT8 calibration: Polygraphy's Calibrator fed real images at
    the OPT shape, with a cache per model, calibrator, OPT batch, TensorRT version and image set.

    The calibrator always has its data: TensorRT reads the cache first and asks for batches only when
    it refuses it (another version, a damaged file), which then is moved aside. The data loader runs
    under TensorRT's ``get_batch`` trampoline, which takes ANY exception for "end of data": the
    ``Feed`` keeps it (cancel, Ctrl-C, unreadable images) and ``check_complete`` raises it again."""

    def __init__(self, plan: BuildPlan, store: EngineStore, input_name: str, trt: Any, pg: Any,
                 progress: Progress, cancel: CancelToken, notes: list[str]) -> None:
        from ncanvas_tui.engines import calibrate

        cal, feats = plan.calibration, plan.features
        assert cal is not None and feats is not None and plan.calibrator is not None
        opt = plan.batch[1]
        self.final = store.calibration_cache_path(plan.source.entry.name, plan.source.sha256, plan.calibrator,
                                                  opt, feats.version, cal.key)
        if self.final.exists():
            problem = calibration_cache_problem(self.final, feats.version, plan.calibrator)
            if problem:
                _move_aside(self.final, f"calibration cache {problem}")
        self.tmp = self.final.with_name(f"{TEMP_PREFIX}{self.final.name}")
        from ncanvas_tui.engines.subproc import claim

        claim(self.tmp)
        self.cached = self.final.is_file()
        if self.cached:
            shutil.copyfile(self.final, self.tmp)
        self.plan = calibrate.CalibrationSet(folder=cal.folder, files=list(cal.files), batch=opt,
                                             batches=len(cal.files) // opt, skipped=[])
        self.feed = calibrate.Feed(calibrate.iter_batches(self.plan, plan.source.entry.preprocess,
                                                          progress=progress, cancelled=cancel), input_name)
        self.notes = notes
        self.calibrator = pg.Calibrator(self.feed, cache=str(self.tmp),
                                        BaseClass=compat.calibrator_base(trt, plan.calibrator), batch_size=opt)

    def check_complete(self) -> None:
        """After the build: the data loader's own exception, else "stopped early", else fine."""
        self.feed.raise_if_failed()
        if self.cached and self.feed.served == 0:
            self.notes.append(f"calibration cache reused: {self.final.name}")
            return
        if self.cached:  # TensorRT refused the cache and calibrated again: keep the new one
            _move_aside(self.final, "TensorRT refused the calibration cache")
        if self.feed.served < self.plan.batches:
            raise EngineError(f"{self.plan.folder}: calibration stopped after {self.feed.served} of "
                              f"{self.plan.batches} batches (unreadable images or a batch of the wrong shape)")

    def keep(self) -> None:
        if self.tmp.is_file() and self.tmp.stat().st_size:
            os.replace(self.tmp, self.final)

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _config_kwargs(plan: BuildPlan, profile: Any, trt: Any, notes: list[str]) -> dict[str, Any]:
    """Step 3c: Polygraphy ``CreateConfig`` arguments for the plan's precision and options."""
    feats = plan.features
    assert feats is not None
    kw: dict[str, Any] = {"profiles": [profile],
                          "memory_pool_limits": compat.memory_pool_limits(trt, plan.settings.build.workspace_mib)}
    if plan.mode == "flags" and plan.precision == "fp16":
        kw["fp16"] = True
    if plan.mode == "flags" and plan.precision == "int8":
        kw["int8"] = True
        # layers without an int8 kernel: fp16 (as trtexec --best) unless --strict-int8 (then fp32)
        kw["fp16"] = not plan.strict_int8 and feats.builder_flag_fp16
    kw["tf32"] = plan.tf32  # Polygraphy clears TF32 unless asked
    if plan.keep_float and plan.quantization == "implicit":
        # the kept-float layers carry fp32 precision constraints (``keep_layers_float``): obeyed, not hints
        kw["precision_constraints"] = "obey"
    verbosity = getattr(getattr(trt, "ProfilingVerbosity", None), "DETAILED", None)
    if verbosity is not None:  # the engine inspector then lists the ONNX nodes of each layer (bench --layers)
        kw["profiling_verbosity"] = verbosity
    if feats.optimization_level:
        kw["builder_optimization_level"] = plan.opt_level
    if plan.dla_core is not None:
        kw["use_dla"] = True            # Polygraphy: default device DLA (core 0; the core is set in dla_setup)
        kw["allow_gpu_fallback"] = True
    if plan.sparse:
        if feats.sparse_weights:
            kw["sparse_weights"] = True
        else:
            notes.append("2:4 sparse weights not supported by this TensorRT: ignored")
    return kw


def _tensorrt_in_child(plan: BuildPlan, *, progress: ProgressFn | None = None,
                       cancelled: Callable[[], bool] | None = None) -> Artefact:
    """The TensorRT build, in the child process ``subproc`` starts (cancel there = termination)."""
    token = _Polled(cancelled) if cancelled is not None else CancelToken()
    return _build_tensorrt(plan, EngineStore(plan.settings), progress or no_progress, token)


class _Polled(CancelToken):
    """A token that asks a callable (the inline fallback when no child process could start)."""

    __slots__ = ("_ask",)

    def __init__(self, ask: Callable[[], bool]) -> None:
        super().__init__()
        self._ask = ask

    @property
    def cancelled(self) -> bool:
        return self._ask()


def keep_layers_float(network: Any, trt: Any, names: tuple[str, ...]) -> list[str]:
    """TensorRT <= 10 implicit int8: the layers of ``names`` (the ONNX parser names a layer after its
    node) compute and output fp32 (``ILayer.precision``, ``set_output_type``), obeyed with the
    OBEY_PRECISION_CONSTRAINTS flag. Returns the names no layer has."""
    want = set(names)
    found: set[str] = set()
    for i in range(int(network.num_layers)):
        layer = network.get_layer(i)
        if layer.name in want:
            layer.precision = trt.float32
            for j in range(int(layer.num_outputs)):
                layer.set_output_type(j, trt.float32)
            found.add(layer.name)
    return sorted(want - found)


class DlaSetup:
    """Polygraphy PostprocessConfig step for a DLA build: the DLA core asked for (Polygraphy picks core
    0), and which layers DLA cannot run (they fall back to the GPU: ``config.can_run_on_DLA``)."""

    def __init__(self, core: int) -> None:
        self.core = core
        self.layers = 0
        self.gpu_layers: int | None = None
        self.fallback: list[str] = []

    def __call__(self, builder: Any, network: Any, config: Any) -> None:
        config.DLA_core = self.core
        self.layers = int(network.num_layers)
        can_run = getattr(config, "can_run_on_DLA", None)
        if can_run is None:
            return
        self.fallback = [network.get_layer(i).name for i in range(self.layers)
                         if not can_run(network.get_layer(i))]
        self.gpu_layers = len(self.fallback)

    @property
    def summary(self) -> str:
        if self.gpu_layers is None:
            return f"DLA core {self.core}"
        return (f"DLA core {self.core}: {self.layers - self.gpu_layers} of {self.layers} layers on DLA, "
                f"{self.gpu_layers} fall back to the GPU" + (f" ({', '.join(self.fallback[:5])}"
                                                             f"{', ...' if len(self.fallback) > 5 else ''})"
                                                             if self.fallback else ""))


def _build_tensorrt(plan: BuildPlan, store: EngineStore, progress: Progress, cancel: CancelToken) -> Artefact:
    feats, batch = plan.features, plan.batch
    assert feats is not None
    trt = compat.import_trt(plan.backend)
    pg = compat.use_polygraphy(plan.backend)
    notes = list(plan.notes)

    progress(1, 6, "preparing ONNX")
    onnx, more = prepare_onnx(plan, progress, cancel)
    notes += more
    _check_cancel(cancel, "before parsing")
    progress(2, 6, f"parsing {onnx.name}")
    typed = feats.strongly_typed_only or (plan.mode == "typed" and plan.precision != "fp32")
    builder, network, parser = _parse(pg, onnx, typed and feats.strongly_typed_flag)
    if network.num_inputs != 1:
        raise ModelError(f"{onnx}: TensorRT sees {network.num_inputs} inputs; an image classifier has one")
    inp = network.get_input(0)
    if len(inp.shape) != 4:
        raise ModelError(f"{onnx}: input {inp.name!r} has rank {len(inp.shape)}; expected [N, 3, H, W]")

    progress(3, 6, "configuring")
    if plan.keep_float:
        if plan.quantization == "implicit":
            missing = keep_layers_float(network, trt, plan.keep_float)
            if missing:
                raise EngineError(f"{onnx}: --keep-float: TensorRT's network has no layer {', '.join(missing[:5])}")
            notes.append(f"{len(plan.keep_float)} layer(s) kept fp32 (precision constraints, obeyed)")
        else:
            notes.append(f"{len(plan.keep_float)} layer(s) kept float (no Q/DQ around them)")
    chw = plan.source.chw
    profile = pg.Profile().add(inp.name, min=(batch[0], *chw), opt=(batch[1], *chw), max=(batch[2], *chw))
    timing = _TimingCache(plan, store, builder, notes)
    calib = (_ImplicitCalibration(plan, store, inp.name, trt, pg, progress, cancel, notes)
             if plan.quantization == "implicit" and not plan.source.qat else None)
    kw = _config_kwargs(plan, profile, trt, notes)
    if calib is not None:
        kw["calibrator"] = calib.calibrator
    if timing.load is not None:
        kw["load_timing_cache"] = str(timing.load)
    monitor = compat.make_progress_monitor(trt, progress, cancel) if feats.progress_monitor else None
    if monitor is not None:
        kw["progress_monitor"] = monitor
    config: Any = pg.CreateConfig(**kw)
    dla = DlaSetup(plan.dla_core) if plan.dla_core is not None else None
    if dla is not None:
        config = pg.PostprocessConfig(config, dla)

    try:
        _check_cancel(cancel, "before building")
        progress(4, 6, f"building {plan.backend} {plan.precision} engine (batch {batch[0]}-{batch[1]}-{batch[2]})")
        tb = time.perf_counter()
        with _capture(forward=None if monitor is not None else progress) as cap:
            try:
                host_mem = pg.EngineBytesFromNetwork(
                    (builder, network, parser), config=config,
                    save_timing_cache=str(timing.path) if timing.path is not None else None)()
            except CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - PolygraphyException from a failed build
                if calib is not None:
                    calib.feed.raise_if_failed()  # the data loader's exception, not "build failed"
                if (monitor is not None and getattr(monitor, "aborted", False)) or cancel():
                    raise CancelledError("build cancelled; nothing was written") from None
                errs = [m for m in cap.errors if m] or [" ".join(str(e).split())]
                raise EngineError(f"{onnx}: {plan.backend} build failed: {'; '.join(errs)[:400]}") from None
        if calib is not None:
            calib.check_complete()
        if host_mem is None or (monitor is not None and getattr(monitor, "aborted", False)):
            raise CancelledError("build cancelled; nothing was written")
        build_s = time.perf_counter() - tb
        _check_cancel(cancel, "after building")
        progress(5, 6, "saving engine")
        if dla is not None:
            notes.append(dla.summary)
        record = _record(plan, source_onnx=onnx, notes=notes, seconds=build_s)
        record.gpu_fallback_layers = dla.gpu_layers if dla is not None else None
        if plan.gpu is not None and plan.gpu.name == NO_GPU:
            record.notes.append("built without a GPU (TensorRT-RTX): runs on any RTX GPU, compiled at load")
        store.save(record, memoryview(host_mem))
        if calib is not None:
            calib.keep()
        progress(6, 6, f"saved {record.path.name}")  # the build's one duration is in its result line
        return record
    finally:
        if calib is not None:
            calib.cleanup()
