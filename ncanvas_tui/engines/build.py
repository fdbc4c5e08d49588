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
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncanvas_tui.engines import compat
from ncanvas_tui.engines.plan import BuildPlan, BuildRequest, plan_build
from ncanvas_tui.engines.store import (
    NO_GPU,
    TEMP_PREFIX,
    Artefact,
    EngineStore,
    atomic_write_bytes,
    atomic_write_json,
)
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


def read_timing_cache(path: Path) -> bytes:
    """The timing cache bytes, b"" when absent. A file that does not match the checksum in its
    sidecar (truncated, corrupt, foreign) is moved aside with a warning: never a crash."""
    if not path.is_file():
        return b""
    try:
        data = path.read_bytes()
    except OSError as e:
        _move_aside(path, f"unreadable timing cache ({e.strerror})")
        return b""
    meta_path = path.with_name(path.name + ".json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ok = meta.get("sha256") == hashlib.sha256(data).hexdigest() and meta.get("size") == len(data)
    except (OSError, ValueError, AttributeError):
        ok = False
    if not ok:
        _move_aside(path, "corrupt timing cache (checksum does not match its sidecar)")
        with contextlib.suppress(OSError):
            meta_path.unlink()
        return b""
    return data


def write_timing_cache(path: Path, data: bytes, version: str) -> None:
    atomic_write_bytes(path, data)
    atomic_write_json(path.with_name(path.name + ".json"),
                      {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "tensorrt": version})


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
            res.artefact = _build_tensorrt(plan, store, progress, cancel)
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
        build_seconds=round(seconds, 3), notes=notes)


# -- ONNX Runtime: the Q/DQ model -----------------------------------------------------------------

def _build_onnxruntime(plan: BuildPlan, store: EngineStore, progress: Progress, cancel: CancelToken) -> Artefact:
    from ncanvas_tui.engines.quantize import quantize

    t0 = time.perf_counter()
    progress(0, 0, "explicit quantization (Q/DQ ONNX: uint8 activations, per-channel int8 weights)")
    summary = quantize(plan, "ort", plan.path, progress=progress, cancel=cancel)
    notes = list(plan.notes)
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
    from ncanvas_tui.engines.quantize import fp16_model_for, qdq_model_for

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
        return (qdq_model_for(plan, progress=progress, cancel=cancel),
                ["int8 from a symmetric Q/DQ ONNX (explicit quantization)"])
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
    """Step 3a: the timing cache of this GPU + TensorRT version (validated; a rejected one moved aside)."""

    def __init__(self, plan: BuildPlan, store: EngineStore, notes: list[str]) -> None:
        feats, gpu = plan.features, plan.gpu
        assert feats is not None and gpu is not None
        self.path: Path | None = None
        self.data = b""
        self.config: Any = None
        self.version = feats.version
        want = plan.settings.build.timing_cache
        path = store.timing_cache_path(plan.backend, feats.version, gpu.name)
        if want and feats.timing_cache:
            self.path, self.data = path, read_timing_cache(path)
        elif want:
            notes.append("no timing cache (TensorRT-RTX compiles kernels at load time)")
            if path.exists():
                read_timing_cache(path)  # still validated: a corrupt file is moved aside, never used

    def attach(self, config: Any) -> None:
        """Called by Polygraphy's PostprocessConfig with the builder config."""
        self.config = config
        if self.path is None:
            return
        with _capture() as cap:
            compat.load_timing_cache(config, self.data)
        if self.data and any("timing cache" in w.lower() for w in cap.warnings + cap.errors):
            _move_aside(self.path, "TensorRT rejected the timing cache")
            compat.load_timing_cache(config, b"")

    def save(self) -> None:
        if self.path is None or self.config is None:
            return
        data = compat.serialize_timing_cache(self.config)
        if data:
            try:
                write_timing_cache(self.path, data, self.version)
            except EngineError as e:  # the engine is saved; a cache we could not write is no failure
                log.warning("%s", e)


class _ImplicitCalibration:
    """Step 3b: TensorRT <= 10's implicit INT8 calibration: Polygraphy's Calibrator fed real images at
    the OPT shape, with a cache per model, calibrator, OPT batch, TensorRT version and image set."""

    def __init__(self, plan: BuildPlan, store: EngineStore, input_name: str, trt: Any, pg: Any,
                 progress: Progress, cancel: CancelToken, notes: list[str]) -> None:
        from ncanvas_tui.engines import calibrate

        cal, feats = plan.calibration, plan.features
        assert cal is not None and feats is not None and plan.calibrator is not None
        opt = plan.batch[1]
        self.final = store.calibration_cache_path(plan.source.entry.name, plan.source.sha256, plan.calibrator,
                                                  opt, feats.version, cal.key)
        if self.final.exists() and not _valid_calibration_cache(self.final):
            _move_aside(self.final, "corrupt calibration cache")
        self.tmp = self.final.with_name(f"{TEMP_PREFIX}{self.final.name}")
        self.plan: calibrate.CalibrationSet | None = None
        if self.final.is_file():
            shutil.copyfile(self.final, self.tmp)
            notes.append(f"calibration cache reused: {self.final.name}")
        else:
            self.plan = calibrate.CalibrationSet(folder=cal.folder, files=list(cal.files), batch=opt,
                                                 batches=len(cal.files) // opt, skipped=[])
        self.served = 0
        pre = plan.source.entry.preprocess
        cal_plan = self.plan

        def data_loader() -> Iterator[dict[str, Any]]:
            if cal_plan is None:
                return
            for x in calibrate.iter_batches(cal_plan, pre, progress=progress, cancelled=cancel):
                self.served += 1
                yield {input_name: x}

        self.calibrator = pg.Calibrator(data_loader(), cache=str(self.tmp),
                                        BaseClass=compat.calibrator_base(trt, plan.calibrator), batch_size=opt)

    def check_complete(self) -> None:
        if self.plan is not None and self.served < self.plan.batches:
            raise EngineError(f"{self.plan.folder}: calibration stopped after {self.served} of "
                              f"{self.plan.batches} batches (unreadable images or a batch of the wrong shape)")

    def keep(self) -> None:
        if self.tmp.is_file() and self.tmp.stat().st_size and _valid_calibration_cache(self.tmp):
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
    if feats.optimization_level:
        kw["builder_optimization_level"] = plan.opt_level
    if plan.sparse:
        if feats.sparse_weights:
            kw["sparse_weights"] = True
        else:
            notes.append("2:4 sparse weights not supported by this TensorRT: ignored")
    return kw


def _build_tensorrt(plan: BuildPlan, store: EngineStore, progress: Progress, cancel: CancelToken) -> Artefact:
    t0 = time.perf_counter()
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
    strongly_typed = feats.strongly_typed_only or (plan.mode == "typed" and plan.precision != "fp32")
    builder, network, parser = _parse(pg, onnx, strongly_typed)
    if network.num_inputs != 1:
        raise ModelError(f"{onnx}: TensorRT sees {network.num_inputs} inputs; an image classifier has one")
    inp = network.get_input(0)
    if len(inp.shape) != 4:
        raise ModelError(f"{onnx}: input {inp.name!r} has rank {len(inp.shape)}; expected [N, 3, H, W]")

    progress(3, 6, "configuring")
    chw = plan.source.chw
    profile = pg.Profile().add(inp.name, min=(batch[0], *chw), opt=(batch[1], *chw), max=(batch[2], *chw))
    timing = _TimingCache(plan, store, notes)
    calib = (_ImplicitCalibration(plan, store, inp.name, trt, pg, progress, cancel, notes)
             if plan.quantization == "implicit" and not plan.source.qat else None)
    kw = _config_kwargs(plan, profile, trt, notes)
    if calib is not None:
        kw["calibrator"] = calib.calibrator
    monitor = compat.make_progress_monitor(trt, progress, cancel) if feats.progress_monitor else None
    if monitor is not None:
        kw["progress_monitor"] = monitor
    config = pg.PostprocessConfig(pg.CreateConfig(**kw), lambda _b, _n, c: timing.attach(c))

    try:
        _check_cancel(cancel, "before building")
        progress(4, 6, f"building {plan.backend} {plan.precision} engine (batch {batch[0]}-{batch[1]}-{batch[2]})")
        tb = time.perf_counter()
        with _capture(forward=None if monitor is not None else progress) as cap:
            try:
                host_mem = pg.EngineBytesFromNetwork((builder, network, parser), config=config)()
            except CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - PolygraphyException from a failed build
                if (monitor is not None and getattr(monitor, "aborted", False)) or cancel():
                    raise CancelledError("build cancelled; nothing was written") from None
                errs = [m for m in cap.errors if m] or [" ".join(str(e).split())]
                raise EngineError(f"{onnx}: {plan.backend} build failed: {'; '.join(errs)[:400]}") from None
        if host_mem is None or (monitor is not None and getattr(monitor, "aborted", False)):
            raise CancelledError("build cancelled; nothing was written")
        if calib is not None:
            calib.check_complete()
        build_s = time.perf_counter() - tb
        _check_cancel(cancel, "after building")
        progress(5, 6, "saving engine")
        record = _record(plan, source_onnx=onnx, notes=notes, seconds=build_s)
        if plan.gpu is not None and plan.gpu.name == NO_GPU:
            record.notes.append("built without a GPU (TensorRT-RTX): runs on any RTX GPU, compiled at load")
        store.save(record, memoryview(host_mem))
        if calib is not None:
            calib.keep()
        timing.save()
        progress(6, 6, f"built {record.path.name} in {time.perf_counter() - t0:.1f} s")
        return record
    finally:
        if calib is not None:
            calib.cleanup()
