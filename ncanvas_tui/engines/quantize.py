"""Explicit quantization (Q/DQ ONNX) on the CPU, and fp16 ONNX for strongly typed builds.

Post-training static quantization with ONNX Runtime's ``quantize_static`` over the
real calibration images (``[paths].calibration``, preprocessed like the model's
inputs), entropy or min-max calibration per ``[build].calibrator``, at most
``calibration_batches`` OPT-sized batches. The Q/DQ flavour depends on who runs it
(measured on the default model):

- ``ort`` (ONNX Runtime CPU): QDQ, uint8 asymmetric activations + per-channel int8
  weights: ~1.8x faster than fp32 with top-1 unchanged on real photos.
- ``trt`` (TensorRT / TensorRT-RTX): int8 symmetric activations and weights,
  per-channel weights, unquantized bias; ORT's default int32 bias is rejected by
  the RTX parser ("_fc.bias_DequantizeLinear: input has type Int32").

Each flavour is cached in ``[paths].engines`` under a name keyed by the model's
sha256, the calibrator and the flavour; the calibration ranges (ORT's calibration
cache, JSON) are shared by both flavours and keyed by model, calibrator and the
image set. A model that already has QuantizeLinear/DequantizeLinear nodes (from
quantization-aware training) is used as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncanvas_tui.engines.prep import (
    check_classifier_input,
    get_meta,
    load_onnx,
    save_onnx,
    set_meta,
)
from ncanvas_tui.engines.store import FILE_MODE, TEMP_PREFIX, atomic_path
from ncanvas_tui.errors import CancelledError, EngineError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress
from ncanvas_tui.vision.catalog import Preprocess

if TYPE_CHECKING:
    import onnx

    from ncanvas_tui.engines.plan import BuildPlan, SourceModel
    from ncanvas_tui.settings import Settings

log = logging.getLogger("ncanvas.engines")
ProgressFn = Callable[[int, int, str], None]

FLAVOURS = ("ort", "trt")
#: bump when the quantization recipe changes: cached Q/DQ models of an older recipe are rebuilt
RECIPE = "3"  # 3: min-max ranges from every calibration image


def flavour_for(backend: str) -> str:
    """Which Q/DQ flavour ``backend`` runs best: 'ort' for onnxruntime, 'trt' for TensorRT(-RTX)."""
    return "ort" if backend == "onnxruntime" else "trt"


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def is_fp16(model: onnx.ModelProto) -> bool:
    import onnx

    return any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def keep_float_tag(keep_float: tuple[str, ...]) -> str:
    """A short file-name tag of a kept-float layer set ('' for none)."""
    if not keep_float:
        return ""
    import hashlib

    return ".kf" + hashlib.sha256("\0".join(sorted(keep_float)).encode()).hexdigest()[:8]


def qdq_path(settings: Settings, source: SourceModel, flavour: str, calibrator: str, image_set: str,
             keep_float: tuple[str, ...] = ()) -> Path:
    """The intermediate Q/DQ ONNX a TensorRT build parses (no sidecar: not an artefact)."""
    return Path(settings.paths.engines) / (f"{source.entry.name}.int8-{flavour}.{calibrator}."
                                           f"{source.sha256[:12]}.{image_set}{keep_float_tag(keep_float)}.onnx")


def qdq_model_for(plan: BuildPlan, *, progress: Progress = no_progress, cancel: CancelToken = NEVER) -> Path:
    """The Q/DQ ONNX a strongly typed TensorRT build parses (built on demand under a lock, else reused).

    A QAT model (already Q/DQ) is returned as it is."""
    from ncanvas_tui.engines.store import EngineStore

    source, cal, calibrator = plan.source, plan.calibration, plan.calibrator
    if source.qat or cal is None or calibrator is None:
        log.info("%s already has Q/DQ nodes (quantization-aware training): used as it is", source.path)
        return source.path
    out = qdq_path(plan.settings, source, "trt", calibrator, cal.key, plan.keep_float)
    with EngineStore(plan.settings).lock(out.name):
        meta = get_meta(out) if out.is_file() else {}
        if (meta.get("source_sha256") == source.sha256 and meta.get("recipe") == RECIPE
                and meta.get("keep_float", "") == ",".join(plan.keep_float)):
            return out
        quantize(plan, "trt", out, progress=progress, cancel=cancel)
    return out


def qdq_fp16_model_for(plan: BuildPlan, *, progress: Progress = no_progress,
                       cancel: CancelToken = NEVER) -> Path:
    """The Q/DQ ONNX with everything outside the Q/DQ pairs in fp16 (inputs/outputs and the Q/DQ
    scales kept fp32): what a strongly typed build (TensorRT 11, RTX) makes int8 *and* fp16 from, as
    trtexec --best does with flags. Without it every layer that has no int8 kernel runs in fp32."""
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.engines.store import EngineStore

    qdq = qdq_model_for(plan, progress=progress, cancel=cancel)
    out = qdq.with_name(qdq.name.removesuffix(".onnx") + ".fp16.onnx")
    with EngineStore(plan.settings).lock(out.name):
        src_sha = get_meta(qdq).get("source_sha256")
        if out.is_file() and get_meta(out).get("source_sha256") == src_sha and src_sha:
            return out
        progress(0, 0, "fp16 outside the Q/DQ pairs (strongly typed int8 + fp16)")
        subproc.call(_qdq_fp16, qdq, out, what="fp16 conversion", progress=progress, cancelled=cancel)
    return out


def _qdq_fp16(qdq: Path, out: Path, *, progress: ProgressFn | None = None,
              cancelled: Callable[[], bool] | None = None) -> None:
    """``qdq_fp16_model_for``'s work, in the child process."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_onnx(qdq)
    try:
        m16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False,
                                       op_block_list=["QuantizeLinear", "DequantizeLinear"])
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"{qdq}: fp16 conversion failed: {' '.join(str(e).split())[:240]}") from None
    set_meta(m16, derived="int8-trt-fp16")  # the ncanvas.* metadata (source sha256, ...) is kept
    save_onnx(m16, out)


_COMPUTE = ("Conv", "Gemm", "MatMul", "ConvTranspose")
_PASSTHROUGH = ("Flatten", "Reshape", "Softmax", "Squeeze", "Identity", "Transpose", "Cast")


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """The first compute node (on the image input) and the last one (the classifier head) stay in
    float: standard PTQ practice. Measured on the default model with the 7 test photos: quantizing
    them changed top-1 on 2 of 7 photos (entropy and min-max alike), keeping them float on none."""
    nodes = list(model.graph.node)
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input if i.name not in inits}
    outputs = {o.name for o in model.graph.output}
    producer = {out: n for n in nodes for out in n.output}
    keep: list[str] = []
    first = next((n for n in nodes if n.op_type in _COMPUTE and inputs & set(n.input)), None)
    if first is not None and first.name:
        keep.append(first.name)
    for out in outputs:
        n = producer.get(out)
        while n is not None and n.op_type in _PASSTHROUGH:
            n = producer.get(n.input[0]) if n.input else None
        if n is not None and n.op_type in _COMPUTE and n.name and n.name not in keep:
            keep.append(n.name)
    return keep


class _Reader:
    """ORT CalibrationDataReader over real images (duck-typed: get_next / rewind)."""

    def __init__(self, batches: Any, input_name: str) -> None:
        self.batches = batches
        self.input_name = input_name

    def get_next(self) -> dict[str, Any] | None:
        x = next(self.batches, None)
        return None if x is None else {self.input_name: x}

    def rewind(self) -> None:  # pragma: no cover - ORT does not rewind for one pass
        pass


def make_job(plan: BuildPlan, flavour: str, out: Path, *, progress: Progress = no_progress,
             cancel: CancelToken = NEVER) -> QuantizeJob:
    """The ``QuantizeJob`` of ``plan`` (sanitizing the model first, once per model)."""
    from ncanvas_tui.engines.prep import sanitized_model_for

    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}")
    cal, calibrator = plan.calibration, plan.calibrator
    if cal is None or calibrator is None:
        raise EngineError(f"{plan.source.path}: nothing to calibrate (a Q/DQ model is used as it is)")
    model_path = sanitized_model_for(plan.settings, plan.source, progress=progress, cancel=cancel)
    return QuantizeJob(model=model_path, source_sha256=plan.source.sha256, name=plan.source.entry.name,
                       preprocess=plan.source.entry.preprocess, static_batch=plan.source.static_batch,
                       files=cal.files, folder=cal.folder, image_set=cal.key, calibrator=calibrator,
                       flavour=flavour, out=out, engines=Path(plan.settings.paths.engines),
                       keep_float=plan.keep_float)


def quantize(plan: BuildPlan, flavour: str, out: Path, *, progress: Progress = no_progress,
             cancel: CancelToken = NEVER) -> dict[str, Any]:
    """Run quantize_static on the plan's (sanitized) model and write the Q/DQ ONNX atomically to
    ``out``. Returns a summary.

    The work (calibration data, quantize_static, saving) runs in a child process (``subproc``):
    it holds the GIL for long stretches. Progress and errors come back here; cancel terminates
    the child and leaves nothing behind."""
    from ncanvas_tui.engines import subproc

    job = make_job(plan, flavour, out, progress=progress, cancel=cancel)
    last = [""]

    def relay(done: int, total: int, msg: str) -> None:
        last[0] = msg
        progress(done, total, msg)

    try:
        return subproc.call(_quantize, job, what="quantization", progress=relay, cancelled=cancel)
    except CancelledError as e:
        if last[0].startswith("calibration ") and str(e) == "quantization cancelled":
            raise CancelledError("calibration cancelled") from None
        raise


@dataclass(frozen=True)
class QuantizeJob:
    """Everything the child process needs (picklable; nothing re-read or re-hashed there)."""

    model: Path               # the (sanitized) fp32 ONNX to quantize
    source_sha256: str
    name: str
    preprocess: Preprocess
    static_batch: int | None
    files: tuple[Path, ...]   # the calibration images
    folder: Path
    image_set: str
    calibrator: str
    flavour: str
    out: Path
    engines: Path             # where the calibration ranges are cached
    keep_float: tuple[str, ...] = ()  # nodes left float (no Q/DQ around them), besides ``float_nodes``

    def calibration_cache(self, used: int) -> Path:
        """The ORT calibration ranges of this model, calibrator and image set (shared by every flavour,
        kept-float set and the sensitivity pass)."""
        return self.engines / (f"{self.name}.{self.source_sha256[:12]}.{self.calibrator}.n{used}."
                               f"{self.image_set}.r{RECIPE}.ort-calib.json")


def calibration_set(job: QuantizeJob) -> Any:
    """The ``calibrate.CalibrationSet`` ORT's calibrator is fed for ``job``."""
    from ncanvas_tui.engines import calibrate

    if job.static_batch is not None:  # static batch: full batches of that size
        return calibrate.CalibrationSet(folder=job.folder, files=list(job.files), batch=job.static_batch,
                                        batches=len(job.files) // job.static_batch, skipped=[])
    # ORT's calibrators stack the batches, so they must all be the same size: feed single images
    return calibrate.CalibrationSet(folder=job.folder, files=list(job.files), batch=1,
                                    batches=len(job.files), skipped=[])


def flavour_kwargs(flavour: str) -> dict[str, Any]:
    """quantize_static's activation/weight types and extra options of a flavour."""
    from onnxruntime.quantization import QuantType

    if flavour == "ort":
        # No CalibMaxIntermediateOutputs: ORT's MinMaxCalibrater drops (does not merge) the outputs
        # it has collected each time that many are reached (microsoft/onnxruntime#18893, fix #20226
        # not merged), so min-max saw only the last N mod K images, and none on 8 photos ("No data
        # is collected"); the entropy calibrator ignores the option.
        return {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "extra_options": {}}
    return {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}}


def _quantize(job: QuantizeJob, *, progress: ProgressFn | None = None,
              cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """``quantize``'s work, in the child process (or inline when none could start)."""
    import shutil
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )

    from ncanvas_tui.engines import calibrate, subproc

    t0 = time.perf_counter()
    # quantize_static writes "<input>-inferred.onnx" beside its input: give it a private copy, so two
    # builds of one model at once never share that file
    scratch = Path(tempfile.mkdtemp(prefix="ncanvas-quantize-"))
    model_path = scratch / job.model.name
    shutil.copyfile(job.model, model_path)
    model = load_onnx(model_path, external=False)
    input_name, _ = check_classifier_input(job.model, model, job.preprocess.input_size)
    cal = calibration_set(job)
    method = {"entropy2": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax}[job.calibrator]
    calibrator, flavour, out, sha = job.calibrator, job.flavour, job.out, job.source_sha256

    cache = job.calibration_cache(cal.used)
    cache_ok = False
    if cache.is_file():
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
            cache_ok = isinstance(data, dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            cache_ok = False
        if not cache_ok:
            aside = cache.with_name(cache.name + f".corrupt-{int(time.time())}")
            log.warning("%s: corrupt calibration cache moved aside to %s; calibrating again", cache, aside.name)
            with contextlib.suppress(OSError):
                cache.replace(aside)

    class Reader(_Reader, CalibrationDataReader):  # type: ignore[misc]
        pass

    batches = calibrate.iter_batches(cal, job.preprocess, progress=progress, cancelled=cancelled,
                                     label="calibration image" if cal.batch == 1 else "calibration batch")
    reader = Reader(batches, input_name)

    kw = flavour_kwargs(flavour)
    kw["nodes_to_exclude"] = list(dict.fromkeys([*float_nodes(model), *job.keep_float]))
    if progress and cache_ok:
        progress(cal.batches, cal.batches, f"calibration ranges reused from {cache.name}")
    tmp_cache = cache.with_name(f"{TEMP_PREFIX}{cache.name}")
    try:
        with atomic_path(out) as tmp:
            subproc.claim(tmp)
            subproc.claim(tmp_cache)
            log.debug("quantize_static %s (%s, %s) in process %d", model_path.name, flavour, calibrator,
                      os.getpid())
            try:
                with _quiet_ort():
                    quantize_static(str(model_path), str(tmp), calibration_data_reader=reader,
                                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                                    calibrate_method=method,
                                    calibration_cache_path=str(cache if cache_ok else tmp_cache), **kw)
            except CancelledError:
                raise
            except EngineError:
                raise
            except Exception as e:  # noqa: BLE001 - ORT raises many types
                raise EngineError(f"{model_path}: quantization failed: {' '.join(str(e).split())[:240]}"
                                  ) from None
            if cancelled is not None and cancelled():
                raise CancelledError("quantization cancelled")
            q = load_onnx(tmp, external=False)
            set_meta(q, source_sha256=sha, derived=f"int8-{flavour}", calibrator=calibrator, recipe=RECIPE,
                     calibration_images=str(cal.used), calibration_folder=str(cal.folder),
                     calibration_set=job.image_set, keep_float=",".join(job.keep_float))
            import onnx

            onnx.save(q, str(tmp))
        if not cache_ok and tmp_cache.is_file():
            with contextlib.suppress(OSError):
                os.chmod(tmp_cache, FILE_MODE)
            tmp_cache.replace(cache)
    finally:
        with contextlib.suppress(OSError):
            tmp_cache.unlink()
        shutil.rmtree(scratch, ignore_errors=True)
    if cal.skipped:
        log.warning("calibration skipped %d unreadable image(s): %s", len(cal.skipped), cal.skipped[0])
    return {"output": str(out), "flavour": flavour, "calibrator": calibrator, "images": cal.used,
            "batches": cal.batches, "skipped": len(cal.skipped), "seconds": round(time.perf_counter() - t0, 2)}


class _LogWriter:
    """A file-like that sends ORT's calibration prints to logging instead of stdout."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("onnxruntime: %s", text.strip())
        return len(text)

    def flush(self) -> None:
        pass


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _quiet_ort() -> Any:
    """quantize_static prints progress to stdout and nags on the root logger: keep stdout clean."""
    flt = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        with contextlib.redirect_stdout(_LogWriter()):
            yield
    finally:
        root.removeFilter(flt)


def fp16_path(settings: Settings, source: SourceModel) -> Path:
    return Path(settings.paths.engines) / f"{source.entry.name}.fp16.{source.sha256[:12]}.onnx"


def fp16_model_for(settings: Settings, source: SourceModel, *, progress: Progress = no_progress,
                   cancel: CancelToken = NEVER) -> Path:
    """An fp16 ONNX of ``source`` (weights and compute fp16, inputs/outputs kept fp32) for strongly
    typed TensorRT 11 / RTX, made under a lock (two builds wait for each other) and reused while the
    source is unchanged. A model that is already fp16 is used as it is. The conversion runs in a
    child process (``subproc``); cancel terminates it."""
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.engines.prep import sanitized_model_for
    from ncanvas_tui.engines.store import EngineStore

    if is_fp16(load_onnx(source.path, external=False)):
        return source.path
    out = fp16_path(settings, source)
    with EngineStore(settings).lock(out.name):
        if out.is_file() and get_meta(out).get("source_sha256") == source.sha256:
            return out
        model_path = sanitized_model_for(settings, source, progress=progress, cancel=cancel)
        progress(0, 0, "converting to fp16 (inputs/outputs kept fp32)")
        subproc.call(_fp16, model_path, out, source.sha256, what="fp16 conversion", progress=progress,
                     cancelled=cancel)
    return out


def _fp16(model_path: Path, out: Path, sha: str, *, progress: ProgressFn | None = None,
          cancelled: Callable[[], bool] | None = None) -> None:
    """``fp16_model_for``'s work, in the child process (or inline when none could start)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_onnx(model_path)
    try:
        m16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"{model_path}: fp16 conversion failed: {' '.join(str(e).split())[:240]}") from None
    set_meta(m16, source_sha256=sha, derived="fp16")
    save_onnx(m16, out)
