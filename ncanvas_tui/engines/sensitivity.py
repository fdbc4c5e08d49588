"""Which layers lose accuracy at int8, and the fewest to keep float: ``verify --layers``, ``build --recover``.

Both run on ONNX Runtime (CPU) for every backend, with the Q/DQ flavour of the backend asked for
(``quantize.flavour_for``), from the calibration ranges of the model, calibrator and image set
that builds use (``*.ort-calib.json``): calibrated once (by an ordinary quantization when the cache
is missing), never per layer. The fp32 logits of the calibration images are the reference.

- **Sensitivity** (``rank_layers``): each quantizable layer (Conv, Gemm, MatMul, ConvTranspose not
  already kept float) is quantized *alone* (ORT's ``QDQQuantizer`` with ``nodes_to_quantize`` = that
  node: Q/DQ on its input activations and weights), and the mean absolute difference of the logits
  from fp32 over the calibration images is its sensitivity. Most sensitive first. 'ort' flavour: run
  with ORT's int8 kernels (as the artefact runs); 'trt': exact fake quantization (``_Session``).
- **Recovery** (``search_keep_float``): every layer quantized as a build quantizes them except the
  first k of the ranking; bisection over k for the fewest that reach a top-1 agreement target
  (agreement is taken as growing with k, which the ranking makes likely, not certain).

The work holds the GIL (ONNX rewriting, sessions), so it runs in a child process (``subproc``);
cancel terminates it.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncanvas_tui.errors import CancelledError, EngineError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from ncanvas_tui.engines.quantize import QuantizeJob
    from ncanvas_tui.settings import Settings

ProgressFn = Callable[[int, int, str], None]
#: the layers ranked: those with weights, where int8 changes the arithmetic
RANKED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
COMPUTED_ON = "onnxruntime"
METRIC = "mean |logit - fp32 logit| over the calibration images with only that layer quantized"


@dataclass(frozen=True)
class SensitivityJob:
    """What the child process needs: the quantization job (model, images, ranges, flavour) and the
    work: 'rank', or 'search' (``ranking`` and ``target``)."""

    quantize: QuantizeJob
    mode: str
    ranking: tuple[str, ...] = ()
    target: float = 1.0


def _plan(settings: Settings, model: str | None, backend: str | None, calibrator: str | None,
          keep_float: tuple[str, ...] = ()) -> tuple[Any, str]:
    """The ONNX Runtime int8 plan whose images/ranges the pass uses, and the flavour of ``backend``."""
    from ncanvas_tui.engines.plan import BuildRequest, plan_build, resolve_build_backend
    from ncanvas_tui.engines.quantize import flavour_for

    plan = plan_build(settings, BuildRequest(model, "int8", backend="onnxruntime", calibrator=calibrator,
                                             keep_float=keep_float))
    if plan.source.qat:
        raise EngineError(f"{plan.source.path}: already has Q/DQ nodes (quantization-aware training); "
                          "its quantization is fixed in the ONNX, there is no layer to rank")
    return plan, flavour_for(resolve_build_backend(backend, settings))


def _source_names(plan: Any) -> set[str]:
    from ncanvas_tui.engines.prep import load_onnx

    return {n.name for n in load_onnx(plan.source.path, external=False).graph.node}


def rank_layers(settings: Settings, model: str | None, *, backend: str | None = None,
                calibrator: str | None = None, progress: Progress = no_progress,
                cancel: CancelToken = NEVER) -> dict[str, Any]:
    """Sensitivity of every quantizable layer (see the module doc): ``{"layers": [{"name", "op",
    "sensitivity"}], "computed_on": "onnxruntime", ...}``, most sensitive first."""
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.engines.quantize import make_job

    t0 = time.perf_counter()
    plan, flavour = _plan(settings, model, backend, calibrator)
    job = make_job(plan, flavour, Path(), progress=progress, cancel=cancel)
    res: dict[str, Any] = subproc.call(_work, SensitivityJob(job, "rank"), what="sensitivity",
                                       progress=progress, cancelled=cancel)
    known = _source_names(plan)
    res["layers"] = [x for x in res["layers"] if x["name"] in known]
    res.update(model=plan.source.entry.name, calibrator=plan.calibrator, flavour=flavour,
               computed_on=COMPUTED_ON, metric=METRIC, seconds=round(time.perf_counter() - t0, 2),
               note=f"ranked on ONNX Runtime (CPU) with the {flavour!r} Q/DQ flavour, for every backend")
    return res


def search_keep_float(settings: Settings, model: str | None, target: float, ranking: list[str], *,
                      backend: str | None = None, calibrator: str | None = None,
                      progress: Progress = no_progress, cancel: CancelToken = NEVER) -> dict[str, Any]:
    """The fewest leading layers of ``ranking`` kept float whose int8 model reaches ``target`` top-1
    agreement with fp32 on the calibration images (bisection; see the module doc)."""
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.engines.quantize import make_job

    plan, flavour = _plan(settings, model, backend, calibrator)
    job = make_job(plan, flavour, Path(), progress=progress, cancel=cancel)
    res: dict[str, Any] = subproc.call(_work, SensitivityJob(job, "search", tuple(ranking), target),
                                       what="recovery search", progress=progress, cancelled=cancel)
    return res


# -- in the child process ------------------------------------------------------------------------

class _Session:
    """Runs ONNX models (protos) on the calibration images, batch by batch, on the CPU.

    ``kernels``: graph optimization ALL, so ORT fuses the Q/DQ pairs into its int8 kernels (QLinearConv
    ...), as the 'ort' artefact runs: their rounding and saturation are part of the error (measured on
    the bundled model: keeping the top 3 of a fake-quant ranking float *raised* the real int8 error,
    of this ranking lowered it by a quarter). Otherwise basic: Q/DQ stays as exact fake quantization,
    what TensorRT's symmetric int8 ('trt' flavour) computes."""

    def __init__(self, batches: list[np.ndarray], input_name: str, *, kernels: bool) -> None:
        self.batches = batches
        self.input_name = input_name
        self.kernels = kernels

    def logits(self, model: onnx.ModelProto) -> np.ndarray:
        import numpy as np
        import onnxruntime as ort

        opts = ort.SessionOptions()
        level = ort.GraphOptimizationLevel
        opts.graph_optimization_level = level.ORT_ENABLE_ALL if self.kernels else level.ORT_ENABLE_BASIC
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
        out = [np.asarray(sess.run(None, {self.input_name: b})[0], dtype=np.float64).reshape(b.shape[0], -1)
               for b in self.batches]
        return np.concatenate(out, axis=0)


def _work(job: SensitivityJob, *, progress: ProgressFn | None = None,
          cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """``rank_layers`` / ``search_keep_float``'s work, in the child process."""
    import numpy as np
    from onnxruntime.quantization.calibrate import load_tensors_data
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from ncanvas_tui.engines import calibrate
    from ncanvas_tui.engines.prep import check_classifier_input
    from ncanvas_tui.engines.quantize import (
        _quantize,
        _quiet_ort,
        calibration_set,
        flavour_kwargs,
        float_nodes,
    )

    say = progress or (lambda d, t, m: None)

    def check() -> None:
        if cancelled is not None and cancelled():
            raise CancelledError(f"{'sensitivity' if job.mode == 'rank' else 'recovery'} cancelled")

    q = job.quantize
    scratch = Path(tempfile.mkdtemp(prefix="ncanvas-sensitivity-"))
    try:
        cal = calibration_set(q)
        cache = q.calibration_cache(cal.used)
        if not cache.is_file():  # calibrate once (an ordinary quantization writes the ranges)
            say(0, 0, "calibrating once (the ranges are cached for builds and later passes)")
            _quantize(replace(q, out=scratch / "int8.onnx", keep_float=()), progress=progress, cancelled=cancelled)
        tensors_range = load_tensors_data(cache)
        model_path = scratch / q.model.name
        shutil.copyfile(q.model, model_path)
        model = load_model_with_shape_infer(model_path)
        input_name, _ = check_classifier_input(q.model, model, q.preprocess.input_size)
        batches = list(calibrate.iter_batches(calibration_set(q), q.preprocess, cancelled=cancelled,
                                              label="image"))
        if q.static_batch is None and len(batches) > 1:  # one call per model, not one per image
            batches = [np.concatenate(batches, axis=0)]
        run = _Session(batches, input_name, kernels=q.flavour == "ort")
        ref = run.logits(model)
        ref_top1 = ref.argmax(axis=1)
        kw = flavour_kwargs(q.flavour)
        op_types = list(set(QLinearOpsRegistry) | set(QDQRegistry))
        base_float = list(dict.fromkeys([*float_nodes(model), *q.keep_float]))

        def quantized(only: list[str] | None, exclude: list[str]) -> onnx.ModelProto:
            m = copy.deepcopy(model)
            with _quiet_ort():
                quantizer = QDQQuantizer(m, True, False, kw["weight_type"], kw["activation_type"], tensors_range,
                                         only or [], exclude, op_types, dict(kw["extra_options"]))
                quantizer.quantize_model()
            return quantizer.model.model  # type: ignore[no-any-return]

        images = int(ref.shape[0])
        if job.mode == "rank":
            layers = [n for n in model.graph.node if n.op_type in RANKED_OPS and n.name and n.name not in base_float]
            out = []
            for i, node in enumerate(layers):
                check()
                diff = np.abs(run.logits(quantized([node.name], [])) - ref).mean()
                out.append({"name": node.name, "op": node.op_type, "sensitivity": round(float(diff), 6)})
                say(i + 1, len(layers), f"layer {i + 1}/{len(layers)}: {node.name}")
            out.sort(key=lambda x: -x["sensitivity"])
            return {"layers": out, "images": images}

        ranking = list(job.ranking)
        evaluated: dict[int, float] = {}

        def agreement(k: int) -> float:
            if k not in evaluated:
                check()
                logits = run.logits(quantized(None, [*base_float, *ranking[:k]]))
                evaluated[k] = float((logits.argmax(axis=1) == ref_top1).mean())
                say(len(evaluated), 0, f"{k} layer(s) float: top-1 agreement {evaluated[k]:.1%}")
            return evaluated[k]

        target = job.target
        if agreement(0) >= target:
            k = 0
        elif agreement(len(ranking)) < target:
            k = len(ranking)
        else:
            lo, hi = 0, len(ranking)          # agreement(lo) < target <= agreement(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if agreement(mid) >= target:
                    hi = mid
                else:
                    lo = mid
            k = hi
        return {"keep_float": ranking[:k], "agreement": round(agreement(k), 4),
                "int8_agreement": round(agreement(0), 4), "reached": agreement(k) >= target,
                "evaluations": [{"kept": n, "agreement": round(a, 4)} for n, a in sorted(evaluated.items())],
                "images": images}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
