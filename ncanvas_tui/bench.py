"""Latency percentiles and throughput per batch size, with the raw backend call as baseline.

For each batch size the same real images go through the whole pipeline
(decode + crop + normalize, infer, softmax + top-k) for a time budget; the backend's
raw call (``InferenceSession.run`` for ONNX Runtime) on the same prepared batch is
timed in the same run, so ``infer_ms / raw_infer_ms`` says what our layer costs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncanvas_tui.errors import CancelledError, ImageError
from ncanvas_tui.resources import sample_photos
from ncanvas_tui.settings import Settings
from ncanvas_tui.vision.classify import Classifier, softmax_if_logits, top_k
from ncanvas_tui.vision.preprocess import LoadedImage, is_image_name

FALLBACK_IMAGES = sample_photos()


def find_images(settings: Settings, given: Sequence[str] | None = None, limit: int = 16) -> list[str]:
    """Bench images: the given ones, else [paths].calibration, else [paths].images, else the bundled photos."""
    if given:
        return list(given)
    for folder in (settings.paths.calibration, settings.paths.images, FALLBACK_IMAGES):
        try:
            names = sorted(n for n in os.listdir(folder) if is_image_name(n))
        except OSError:
            continue
        if names:
            return [str(Path(folder) / n) for n in names[:limit]]
    raise ImageError(f"no images to benchmark with in {settings.paths.calibration} or {settings.paths.images}; "
                     "pass --images PATH...")


def percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if xs else 0.0


Cancelled = Callable[[], bool] | None


def check_cancelled(cancelled: Cancelled, what: str = "bench") -> None:
    """Raise ``CancelledError`` when ``cancelled()`` says so (Esc on the Engines screen, job cancel)."""
    if cancelled is not None and cancelled():
        raise CancelledError(f"{what}: cancelled")


def job_cancelled(cancelled: Cancelled) -> Cancelled:
    """``cancelled``, else the running GPU worker job's flag (``worker.current_job()``), else None."""
    if cancelled is not None:
        return cancelled
    from ncanvas_tui.worker import current_job

    job = current_job()
    return job.is_cancelled if job is not None else None


def _timed_loop(fn: Callable[[], Any], seconds: float, min_iters: int, max_iters: int,
                cancelled: Cancelled = None) -> list[float]:
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < min_iters or (time.perf_counter() < end and len(times) < max_iters):
        check_cancelled(cancelled)
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def raw_call(clf: Classifier) -> Callable[[np.ndarray], Any]:
    """The backend's own call with nothing of ours around it (the baseline)."""
    be = clf.load()
    session = getattr(be, "session", None)
    if session is not None:  # ONNX Runtime
        name, out = be.input_name, be.output_name  # type: ignore[attr-defined]
        return lambda batch: session.run([out], {name: batch})
    raw = getattr(be, "raw_infer", None)
    return raw if raw is not None else be.infer


def bench_batch(clf: Classifier, images: Sequence[str], batch: int, *, seconds: float = 2.0,
                min_iters: int = 5, max_iters: int = 1000, warmup: int = 2,
                cancelled: Cancelled = None) -> dict[str, Any]:
    """One batch size: whole pipeline, raw backend call, infer stage alone. ``cancelled()`` is
    polled before every timed call (raises ``CancelledError``)."""
    check_cancelled(cancelled)
    be = clf.load()
    paths = [images[i % len(images)] for i in range(batch)]
    pre_ms: list[float] = []
    inf_ms: list[float] = []
    post_ms: list[float] = []
    loaded0 = clf.load_images(paths)
    bad = [x for x in loaded0 if not isinstance(x, LoadedImage)]
    if bad:
        raise bad[0]
    prepared = clf.normalize([x.rgb for x in loaded0 if isinstance(x, LoadedImage)])

    def one() -> None:
        t0 = time.perf_counter()
        loaded = clf.load_images(paths)
        x = clf.normalize([g.rgb for g in loaded if isinstance(g, LoadedImage)])
        t1 = time.perf_counter()
        logits = be.infer(x)
        t2 = time.perf_counter()
        top_k(softmax_if_logits(logits), clf.top)
        t3 = time.perf_counter()
        pre_ms.append((t1 - t0) * 1e3)
        inf_ms.append((t2 - t1) * 1e3)
        post_ms.append((t3 - t2) * 1e3)

    for _ in range(warmup):
        check_cancelled(cancelled)
        one()
    for xs in (pre_ms, inf_ms, post_ms):
        xs.clear()
    total = _timed_loop(one, seconds, min_iters, max_iters, cancelled)
    raw = raw_call(clf)
    for _ in range(warmup):
        check_cancelled(cancelled)
        raw(prepared)
    raw_ms = _timed_loop(lambda: raw(prepared), seconds / 2, min_iters, max_iters, cancelled)
    # the infer stage alone, measured the same way as the raw baseline (interleaving-free);
    # TensorRT backends also time the GPU compute of each call with CUDA events (last_gpu_ms)
    gpu_ms: list[float] = []
    has_gpu_timer = hasattr(be, "last_gpu_ms")

    def infer_only() -> None:
        be.infer(prepared)
        if has_gpu_timer:
            gpu_ms.append(float(be.last_gpu_ms))  # type: ignore[attr-defined]

    ours_ms = _timed_loop(infer_only, seconds / 2, min_iters, max_iters, cancelled)
    p50 = percentile(total, 50)
    result = {
        "batch": batch,
        "iterations": len(total),
        "p50_ms": round(p50, 3),
        "p90_ms": round(percentile(total, 90), 3),
        "p99_ms": round(percentile(total, 99), 3),
        "images_per_s": round(batch * 1e3 / float(np.mean(total)), 2),
        "preprocess_ms": round(percentile(pre_ms, 50), 3),
        "infer_ms": round(percentile(inf_ms, 50), 3),
        "postprocess_ms": round(percentile(post_ms, 50), 3),
        "raw_infer_ms": round(percentile(raw_ms, 50), 3),
        "infer_only_ms": round(percentile(ours_ms, 50), 3),
    }
    result["infer_vs_raw"] = round(result["infer_only_ms"] / max(result["raw_infer_ms"], 1e-9), 3)
    result["preprocess_ms_per_image"] = round(result["preprocess_ms"] / batch, 3)
    if gpu_ms:
        # GPU compute (CUDA events around execute) vs host time of the same calls (copies, launch, sync)
        result["gpu_compute_ms"] = round(percentile(gpu_ms, 50), 3)
        result["gpu_compute_p99_ms"] = round(percentile(gpu_ms, 99), 3)
        result["host_infer_ms"] = result["infer_only_ms"]
        result["gpu_share"] = round(result["gpu_compute_ms"] / max(result["host_infer_ms"], 1e-9), 3)
    return result


def run_bench(settings: Settings, *, model: str | None = None, backend: str | None = None,
              precision: str | None = None, batches: Sequence[int] = (1, 4, 8),
              images: Sequence[str] | None = None, seconds: float = 2.0,
              progress: Callable[[str], None] | None = None,
              cancelled: Cancelled = None) -> dict[str, Any]:
    """``cancelled()`` (default: the running GPU worker job's flag) is polled between batch sizes
    and inside the timed loops; when it says so this raises ``CancelledError``."""
    cancelled = job_cancelled(cancelled)
    check_cancelled(cancelled)
    clf = Classifier(settings, model, backend, precision)
    try:
        paths = find_images(settings, images)
        info = clf.load().info
        results = []
        for b in batches:
            check_cancelled(cancelled)
            if b > info.max_batch:
                if progress:
                    progress(f"batch {b} skipped: the model's max batch is {info.max_batch}")
                continue
            if progress:
                progress(f"batch {b}: measuring for ~{seconds * 2:.0f} s")
            results.append(bench_batch(clf, paths, b, seconds=seconds, cancelled=cancelled))
    finally:
        clf.close()
    return {"model": clf.entry.name, "backend": info.name, "precision": info.precision,
            "version": info.version, "device": info.device, "images": len(paths),
            "threads": os.environ.get("OMP_NUM_THREADS") or "auto", "cpu_count": os.cpu_count(),
            "notes": info.notes, "artefact": info.model_path, "results": results}


def format_bench(r: dict[str, Any]) -> str:
    lines = [f"{r['model']} on {r['backend']} {r.get('version', '')} {r['precision']} ({r['images']} images)",
             (f"{'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>8} {'pre ms':>8} "
              f"{'infer ms':>9} {'post ms':>8} {'raw ms':>8} {'ours/raw':>8}")]
    for x in r["results"]:
        lines.append(f"{x['batch']:>5} {x['p50_ms']:>9.2f} {x['p90_ms']:>9.2f} {x['p99_ms']:>9.2f} "
                     f"{x['images_per_s']:>8.1f} {x['preprocess_ms']:>8.2f} {x['infer_ms']:>9.2f} "
                     f"{x['postprocess_ms']:>8.3f} {x['raw_infer_ms']:>8.2f} {x['infer_vs_raw']:>8.3f}")
    lines.extend(f"note: {n}" for n in r.get("notes", []))
    return "\n".join(lines)


# ---- bench --all: accuracy vs latency of every model/precision here, Pareto front, budget ----------

def candidates(settings: Settings) -> list[dict[str, Any]]:
    """Every (model, backend, precision) this machine can run now, for models with a published top-1.

    ONNX Runtime fp32 for each ONNX present; ONNX Runtime int8 where its Q/DQ model was built;
    every usable engine of the library whose TensorRT flavour imports."""
    from ncanvas_tui.engines import compat
    from ncanvas_tui.engines.store import EngineStore
    from ncanvas_tui.vision import catalog

    out: list[dict[str, Any]] = []
    engines = [r for r in EngineStore(settings).list() if not r.problem]
    trt_ok = {b: compat.available(b) for b in compat.TRT_BACKENDS}
    for entry in catalog.all_models(settings):
        if entry.top1 is None or entry.locate(settings) is None:
            continue
        out.append({"model": entry.name, "backend": "onnxruntime", "precision": "fp32", "top1": entry.top1})
        if _ort_int8_exists(settings, entry):
            out.append({"model": entry.name, "backend": "onnxruntime", "precision": "int8", "top1": entry.top1})
        for rec in engines:
            if rec.model == entry.name and trt_ok.get(rec.backend):
                out.append({"model": entry.name, "backend": rec.backend, "precision": rec.precision,
                            "top1": entry.top1, "engine": rec.path.name})
    return out


def _ort_int8_exists(settings: Settings, entry: Any) -> bool:
    from ncanvas_tui.engines import quantize
    from ncanvas_tui.vision.catalog import sha256_file

    try:
        sha = sha256_file(entry.require(settings))
        return quantize.quantized_path(settings, entry, "ort", sha, settings.build.calibrator).is_file()
    except Exception:  # noqa: BLE001 - unreadable model: just not a candidate
        return False


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on both latency (lower) and top-1 (higher); marks ``pareto``."""
    ok = sorted((r for r in rows if r.get("latency_ms") is not None), key=lambda r: (r["latency_ms"], -r["top1"]))
    best = float("-inf")
    front = []
    for r in ok:
        r["pareto"] = r["top1"] > best
        if r["pareto"]:
            front.append(r)
            best = r["top1"]
    return front


def pick_for_budget(rows: list[dict[str, Any]], budget_ms: float) -> dict[str, Any] | None:
    """The most accurate row whose latency fits ``budget_ms`` (ties: the faster)."""
    fits = [r for r in rows if r.get("latency_ms") is not None and r["latency_ms"] <= budget_ms]
    return max(fits, key=lambda r: (r["top1"], -r["latency_ms"])) if fits else None


def run_bench_all(settings: Settings, *, budget_ms: float | None = None, images: Sequence[str] | None = None,
                  seconds: float = 1.0, batch: int = 1,
                  progress: Callable[[str], None] | None = None,
                  cancelled: Cancelled = None) -> dict[str, Any]:
    """Measure every candidate at ``batch`` (latency = p50 of the backend call), then the Pareto
    front of published top-1 vs latency, and the pick for ``budget_ms``. ``cancelled()`` is polled
    between candidates and inside each measurement (raises ``CancelledError``)."""
    from ncanvas_tui.engines.verify import load_verify
    from ncanvas_tui.errors import NcanvasError

    cancelled = job_cancelled(cancelled)
    rows = candidates(settings)
    for i, row in enumerate(rows, 1):
        check_cancelled(cancelled, "bench --all")
        if progress:
            progress(f"[{i}/{len(rows)}] {row['model']} {row['backend']} {row['precision']}")
        try:
            r = run_bench(settings, model=row["model"], backend=row["backend"], precision=row["precision"],
                          batches=[batch], images=images, seconds=seconds, cancelled=cancelled)
        except CancelledError:
            raise
        except NcanvasError as e:
            row["error"] = str(e)
            row["latency_ms"] = None
            continue
        res = r["results"][0] if r["results"] else {}
        row["latency_ms"] = res.get("infer_only_ms")
        row["p50_ms"] = res.get("p50_ms")
        row["images_per_s"] = res.get("images_per_s")
        if "gpu_compute_ms" in res:
            row["gpu_compute_ms"] = res["gpu_compute_ms"]
        row["ran_precision"] = r["precision"]
        if r.get("artefact"):
            v = load_verify(Path(r["artefact"]))
            if v:
                row["verify_top1_agreement"] = v.get("top1_agreement")
    front = pareto_front(rows)
    for r in rows:
        r.setdefault("pareto", False)
    out: dict[str, Any] = {
        "all": True, "batch": batch,
        "latency": f"p50 of the backend call at batch {batch} (ms); top1: published ImageNet top-1 (%) of the model",
        "rows": sorted(rows, key=lambda r: (r.get("latency_ms") is None, r.get("latency_ms") or 0.0)),
        "pareto": [f"{r['model']} {r['backend']} {r['precision']}" for r in front],
        "budget_ms": budget_ms, "pick": None,
    }
    if budget_ms is not None:
        out["pick"] = pick_for_budget(rows, budget_ms)
    return out


def format_bench_all(r: dict[str, Any]) -> str:
    lines = [(f"accuracy vs latency at batch {r['batch']} (latency: p50 of the backend call; "
              "top-1: published ImageNet accuracy; * = Pareto front)"),
             f"  {'model':<24} {'backend':<13} {'prec':<5} {'top-1 %':>7} {'ms':>9} {'img/s':>8}  note"]
    for x in r["rows"]:
        if x.get("latency_ms") is None:
            lines.append(f"  {x['model']:<24} {x['backend']:<13} {x['precision']:<5} {x['top1']:>7.1f} "
                         f"{'-':>9} {'-':>8}  error: {x.get('error', '?')}")
            continue
        note = []
        if x.get("gpu_compute_ms") is not None:
            note.append(f"GPU {x['gpu_compute_ms']:.3f} ms")
        if x.get("verify_top1_agreement") is not None:
            note.append(f"verify top-1 agreement {x['verify_top1_agreement'] * 100:.0f}%")
        elif x["precision"] != "fp32":
            note.append(f"top-1 is the fp32 figure; check with `ncanvas verify {x['model']} --precision "
                        f"{x['precision']} --backend {x['backend']}`")
        if x.get("ran_precision") and x["ran_precision"] != x["precision"]:
            note.append(f"runs as {x['ran_precision']}")
        lines.append(f"{'*' if x['pareto'] else ' '} {x['model']:<24} {x['backend']:<13} {x['precision']:<5} "
                     f"{x['top1']:>7.1f} {x['latency_ms']:>9.3f} {x.get('images_per_s') or 0:>8.1f}  "
                     f"{'; '.join(note)}")
    if not r["rows"]:
        lines.append("  (nothing to measure: no catalog model with a published top-1 is present here)")
    if r.get("budget_ms") is not None:
        p = r.get("pick")
        if p:
            lines.append(f"budget {r['budget_ms']:g} ms: {p['model']} on {p['backend']} {p['precision']} "
                         f"(top-1 {p['top1']:.1f}%, {p['latency_ms']:.3f} ms)")
        else:
            fastest = min((x for x in r["rows"] if x.get("latency_ms") is not None),
                          key=lambda x: x["latency_ms"], default=None)
            extra = (f"; the fastest is {fastest['model']} {fastest['backend']} {fastest['precision']} at "
                     f"{fastest['latency_ms']:.3f} ms") if fastest else ""
            lines.append(f"budget {r['budget_ms']:g} ms: nothing fits{extra}")
    return "\n".join(lines)
