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
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncanvas_tui.engines.prep import (
    check_classifier_input,
    get_meta,
    load_onnx,
    sanitized_model_for,
    save_onnx,
    set_meta,
)
from ncanvas_tui.engines.store import FILE_MODE, TEMP_PREFIX, atomic_path
from ncanvas_tui.errors import CancelledError, EngineError

if TYPE_CHECKING:
    import onnx

    from ncanvas_tui.settings import Settings
    from ncanvas_tui.vision.catalog import ModelEntry

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


def _image_set_key(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        try:
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            continue
    return h.hexdigest()[:10]


def quantized_path(settings: Settings, entry: ModelEntry, flavour: str, sha: str, calibrator: str) -> Path:
    return Path(settings.paths.engines) / f"{entry.name}.int8-{flavour}.{calibrator}.{sha[:12]}.onnx"


def quantized_model_for(settings: Settings, entry: ModelEntry, backend: str, *,
                        calibrator: str | None = None, force: bool = False,
                        progress: ProgressFn | None = None,
                        cancelled: Callable[[], bool] | None = None) -> Path:
    """The Q/DQ ONNX of ``entry`` for ``backend`` (built on demand, else reused).

    A QAT model (already Q/DQ) is returned as it is."""
    from ncanvas_tui.vision.catalog import sha256_file

    source = entry.require(settings)
    calibrator = calibrator or settings.build.calibrator
    flavour = flavour_for(backend)
    src_model = load_onnx(source, external=False)
    if has_qdq(src_model):
        log.info("%s already has Q/DQ nodes (quantization-aware training): used as it is", source)
        return source
    sha = sha256_file(source)
    out = quantized_path(settings, entry, flavour, sha, calibrator)
    meta = get_meta(out) if out.is_file() else {}
    if not force and meta.get("source_sha256") == sha and meta.get("recipe") == RECIPE:
        return out
    quantize(settings, entry, flavour, out, calibrator=calibrator, progress=progress, cancelled=cancelled)
    return out


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


def quantize(settings: Settings, entry: ModelEntry, flavour: str, out: Path, *,
             calibrator: str, progress: ProgressFn | None = None,
             cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run quantize_static and write the Q/DQ ONNX atomically to ``out``. Returns a summary.

    The work (sanitize, calibration data, quantize_static, saving) runs in a child process
    (``subproc``): it holds the GIL for long stretches. Progress and errors come back here;
    cancel terminates the child and leaves nothing behind."""
    from ncanvas_tui.engines import subproc

    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}")
    last = [""]

    def relay(done: int, total: int, msg: str) -> None:
        last[0] = msg
        if progress is not None:
            progress(done, total, msg)

    try:
        return subproc.call(_quantize, settings, entry, flavour, out, calibrator=calibrator,
                            what="quantization", progress=relay, cancelled=cancelled)
    except CancelledError as e:
        if last[0].startswith("calibration ") and str(e) == "quantization cancelled":
            raise CancelledError("calibration cancelled") from None
        raise


def _quantize(settings: Settings, entry: ModelEntry, flavour: str, out: Path, *,
              calibrator: str, progress: ProgressFn | None = None,
              cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """``quantize``'s work, in the child process (or inline when none could start)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from ncanvas_tui.engines import calibrate, subproc
    from ncanvas_tui.vision.catalog import sha256_file

    t0 = time.perf_counter()
    source = entry.require(settings)
    sha = sha256_file(source)
    model_path = sanitized_model_for(settings, entry, progress)
    model = load_onnx(model_path, external=False)
    input_name, dims = check_classifier_input(model_path, model, entry.preprocess.input_size)
    opt = settings.build.batch[1]
    if isinstance(dims[0], int) and dims[0] > 0:  # static batch: full batches of that size
        cal = calibrate.plan(settings, batch=dims[0])
    else:
        # ORT's calibrators stack the batches, so they must all be the same size: feed single
        # images, up to calibration_batches * OPT of them (the same images TensorRT would see),
        # and no fewer than one OPT batch (the same rule as TensorRT's implicit calibration).
        calibrate.calibration_images(Path(settings.paths.calibration), need=opt)
        cal = calibrate.plan(settings, batch=1, max_batches=settings.build.calibration_batches * opt)
    method = {"entropy2": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax}[calibrator]

    cache = Path(settings.paths.engines) / (f"{entry.name}.{sha[:12]}.{calibrator}.n{cal.used}."
                                            f"{_image_set_key(cal.files[:cal.used])}.r{RECIPE}.ort-calib.json")
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

    class Reader(_Reader, CalibrationDataReader):
        pass

    batches = calibrate.iter_batches(cal, entry, progress=progress, cancelled=cancelled,
                                     label="calibration image" if cal.batch == 1 else "calibration batch")
    reader = Reader(batches, input_name)

    if flavour == "ort":
        # No CalibMaxIntermediateOutputs: ORT's MinMaxCalibrater drops (does not merge) the outputs
        # it has collected each time that many are reached (microsoft/onnxruntime#18893, fix #20226
        # not merged), so min-max saw only the last N mod K images, and none on 8 photos ("No data
        # is collected"); the entropy calibrator ignores the option.
        kw: dict[str, Any] = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                              "extra_options": {}}
    else:
        kw = {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                  "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                 "QuantizeBias": False}}
    kw["nodes_to_exclude"] = float_nodes(model)
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
                     calibration_images=str(cal.used), calibration_folder=str(cal.folder))
            import onnx

            onnx.save(q, str(tmp))
        if not cache_ok and tmp_cache.is_file():
            with contextlib.suppress(OSError):
                os.chmod(tmp_cache, FILE_MODE)
            tmp_cache.replace(cache)
    finally:
        with contextlib.suppress(OSError):
            tmp_cache.unlink()
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
        with contextlib.redirect_stdout(_LogWriter()):  # type: ignore[type-var]
            yield
    finally:
        root.removeFilter(flt)


def fp16_path(settings: Settings, entry: ModelEntry, sha: str) -> Path:
    return Path(settings.paths.engines) / f"{entry.name}.fp16.{sha[:12]}.onnx"


def fp16_model_for(settings: Settings, entry: ModelEntry, *, force: bool = False,
                   progress: ProgressFn | None = None) -> Path:
    """An fp16 ONNX of ``entry`` (weights and compute fp16, inputs/outputs kept fp32) for strongly
    typed TensorRT 11 / RTX. A model that is already fp16 is used as it is. The conversion runs in
    a child process (``subproc``); cancelling the worker job terminates it."""
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.vision.catalog import sha256_file

    source = entry.require(settings)
    src_model = load_onnx(source, external=False)
    if is_fp16(src_model):
        return source
    sha = sha256_file(source)
    out = fp16_path(settings, entry, sha)
    if not force and out.is_file() and get_meta(out).get("source_sha256") == sha:
        return out
    subproc.call(_fp16, settings, entry, out, sha, what="fp16 conversion", progress=progress)
    return out


def _fp16(settings: Settings, entry: ModelEntry, out: Path, sha: str, *, progress: ProgressFn | None = None,
          cancelled: Callable[[], bool] | None = None) -> None:
    """``fp16_model_for``'s work, in the child process (or inline when none could start)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model_path = sanitized_model_for(settings, entry, progress)
    if progress:
        progress(0, 0, "converting to fp16 (inputs/outputs kept fp32)")
    model = load_onnx(model_path)
    try:
        m16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as e:  # noqa: BLE001
        raise EngineError(f"{model_path}: fp16 conversion failed: {' '.join(str(e).split())[:240]}") from None
    set_meta(m16, source_sha256=sha, derived="fp16")
    save_onnx(m16, out)
