"""Latency percentiles and throughput per batch size, with the raw backend call as baseline.

For each batch size the same real images go through the whole pipeline
(decode + crop + normalize, infer, softmax + top-k) for a time budget; the backend's
raw call (``InferenceSession.run`` for ONNX Runtime) on the same prepared batch is
timed in the same run, so ``infer_ms / raw_infer_ms`` says what our layer costs.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncanvas_tui.board import EnergyMeter, backend_device
from ncanvas_tui.engines.artefacts import Selection, select
from ncanvas_tui.errors import CancelledError, ImageError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress
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


#: how much longer than asked a timed loop may run to collect the power sampler's minimum readings
UNTIL_MAX_S = 10.0


def _timed_loop(fn: Callable[[], Any], seconds: float, min_iters: int, max_iters: int,
                cancel: CancelToken = NEVER, until: Callable[[], bool] | None = None) -> list[float]:
    """Calls ``fn`` for ``seconds`` (within ``min_iters``..``max_iters``), then on until ``until()``
    says enough (the power sampler's minimum readings), for at most ``UNTIL_MAX_S`` more."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    hard_end = end + UNTIL_MAX_S
    while (len(times) < min_iters or (time.perf_counter() < end and len(times) < max_iters)
           or (until is not None and not until() and time.perf_counter() < hard_end)):
        cancel.check("bench")
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
                cancel: CancelToken = NEVER, meter: EnergyMeter | None = None) -> dict[str, Any]:
    """One batch size: whole pipeline, raw backend call, infer stage alone. ``cancel`` is polled
    before every timed call (raises ``CancelledError``). ``meter``: the power sampler runs
    during the whole-pipeline loop (which then lasts for its minimum readings); the row gets
    ``energy_mj_per_image`` and ``images_per_joule`` (None without a power source)."""
    cancel.check("bench")
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
        cancel.check("bench")
        one()
    for xs in (pre_ms, inf_ms, post_ms):
        xs.clear()
    sampler = meter.sampler() if meter is not None else None
    if sampler is not None:
        sampler.start()
    try:
        total = _timed_loop(one, seconds, min_iters, max_iters, cancel,
                            until=sampler.enough if sampler is not None else None)
    finally:
        if sampler is not None:
            sampler.stop()
    raw = raw_call(clf)
    for _ in range(warmup):
        cancel.check("bench")
        raw(prepared)
    raw_ms = _timed_loop(lambda: raw(prepared), seconds / 2, min_iters, max_iters, cancel)
    # the infer stage alone, measured the same way as the raw baseline (interleaving-free);
    # TensorRT backends also time the GPU compute of each call with CUDA events (last_gpu_ms)
    gpu_ms: list[float] = []
    has_gpu_timer = hasattr(be, "last_gpu_ms")

    def infer_only() -> None:
        be.infer(prepared)
        if has_gpu_timer:
            gpu_ms.append(float(be.last_gpu_ms))  # type: ignore[attr-defined]

    ours_ms = _timed_loop(infer_only, seconds / 2, min_iters, max_iters, cancel)
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
    # energy over the whole-pipeline loop: average power / images per second
    energy: dict[str, Any] = (meter.row(sampler, result["images_per_s"]) if meter is not None else
                              {"energy_mj_per_image": None, "images_per_joule": None})
    result.update(energy)
    result["preprocess_ms_per_image"] = round(result["preprocess_ms"] / batch, 3)
    if gpu_ms:
        # GPU compute (CUDA events around execute) vs host time of the same calls (copies, launch, sync)
        result["gpu_compute_ms"] = round(percentile(gpu_ms, 50), 3)
        result["gpu_compute_p99_ms"] = round(percentile(gpu_ms, 99), 3)
        result["host_infer_ms"] = result["infer_only_ms"]
        result["gpu_share"] = round(result["gpu_compute_ms"] / max(result["host_infer_ms"], 1e-9), 3)
    return result


def run_bench(settings: Settings, selection: Selection, *, batches: Sequence[int] = (1, 4, 8),
              images: Sequence[str] | None = None, seconds: float = 2.0,
              progress: Progress = no_progress, cancel: CancelToken = NEVER, layers: bool = False) -> dict[str, Any]:
    """Measure the artefact ``selection`` chooses at each batch size. ``cancel`` is polled between
    batch sizes and inside the timed loops (raises ``CancelledError``). ``layers``: then a profiled
    run at the smallest batch size, per-layer times slowest first (``layer_profile``)."""
    cancel.check("bench")
    clf = Classifier(settings, target=select(settings, selection))
    meter: EnergyMeter | None = None
    try:
        paths = find_images(settings, images)
        info = clf.load().info
        meter = EnergyMeter(backend_device(info.name, info.device))  # power of the device doing the work
        results = []
        for i, b in enumerate(batches):
            cancel.check("bench")
            if b > info.max_batch:
                progress(i, len(batches), f"batch {b} skipped: the model's max batch is {info.max_batch}")
                continue
            progress(i, len(batches), f"batch {b}: measuring for ~{seconds * 2:.0f} s")
            results.append(bench_batch(clf, paths, b, seconds=seconds, cancel=cancel, meter=meter))
        energy = meter.report()  # top-level "power", "conditions", "warnings"
        profiled: dict[str, Any] = {}
        if layers:
            progress(len(batches), len(batches), "per-layer profile")
            prof = layer_profile(clf, paths, batch=min(batches), cancel=cancel)
            profiled = {"layers": prof["layers"], "layers_source": prof["source"]}
    finally:
        clf.close()
        if meter is not None:
            meter.close()
    return {"model": clf.entry.name, "backend": info.name, "precision": info.precision,
            "id": clf.target.id, "calibrator": clf.target.artefact.calibrator if clf.target.artefact else None,
            "version": info.version, "device": info.device, "images": len(paths),
            "threads": os.environ.get("OMP_NUM_THREADS") or "auto", "cpu_count": os.cpu_count(),
            "notes": info.notes, "artefact": info.model_path, "results": results, **energy, **profiled}


def summary_line(r: dict[str, Any]) -> str:
    """One line of a ``run_bench`` report (the TUI's notification and log line)."""
    parts = []
    for x in r["results"]:
        mj = x.get("energy_mj_per_image")
        parts.append(f"b{x['batch']}: p50 {x['p50_ms']:.1f} ms, {x['images_per_s']:.0f} img/s"
                     + (f", {mj:.1f} mJ/img" if mj is not None else ""))
    who = " ".join(x for x in (r["model"], r["backend"], r["precision"], r.get("calibrator") or "",
                               f"({r['id']})" if r.get("id") else "") if x)
    return f"bench {who}: " + "; ".join(parts)


def format_bench(r: dict[str, Any]) -> str:
    lines = [f"{r['model']} on {r['backend']} {r.get('version', '')} {r['precision']} ({r['images']} images)",
             (f"{'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>8} {'pre ms':>8} "
              f"{'infer ms':>9} {'post ms':>8} {'ours ms':>8} {'raw ms':>8} {'ours/raw':>8} {'mJ/img':>9} "
              f"{'img/J':>8}")]
    for x in r["results"]:
        mj, ipj = x.get("energy_mj_per_image"), x.get("images_per_joule")
        lines.append(f"{x['batch']:>5} {x['p50_ms']:>9.2f} {x['p90_ms']:>9.2f} {x['p99_ms']:>9.2f} "
                     f"{x['images_per_s']:>8.1f} {x['preprocess_ms']:>8.2f} {x['infer_ms']:>9.2f} "
                     f"{x['postprocess_ms']:>8.3f} {x['infer_only_ms']:>8.2f} {x['raw_infer_ms']:>8.2f} "
                     f"{x['infer_vs_raw']:>8.3f} "
                     f"{'-' if mj is None else f'{mj:.2f}':>9} {'-' if ipj is None else f'{ipj:.2f}':>8}")
    lines.append("(infer ms: the infer stage inside the whole pipeline; ours ms / raw ms: our infer call vs "
                 "the backend's raw call on the same prepared batch, timed alone; ours/raw = their ratio)")
    lines.append(format_power(r.get("power")))
    if r.get("conditions"):
        lines.append(format_conditions(r["conditions"]))
    lines.extend(f"note: {n}" for n in r.get("notes", []))
    if "layers" in r:
        lines.append(format_layers(r["layers"], r.get("layers_source", "")))
    return "\n".join(lines)


def format_power(p: dict[str, Any] | None) -> str:
    if not p:
        return "power: no readable source here (energy per image unknown)"
    rails = ", ".join(f"{k} {v:.2f}" for k, v in (p.get("rails") or {}).items() if v is not None)
    return (f"power: {p['avg_w']:.2f} W average ({p['source']}, {p.get('total', '')}"
            f"{'; rails ' + rails + ' W' if rails and len(p.get('rails') or {}) > 1 else ''}); "
            f"sampled at {p.get('hz', 0):g} Hz, {p.get('samples', 0)} readings, "
            f"sampler {p.get('sampler_cost_pct', 0):.2f}% of the measured time")


def format_conditions(c: dict[str, Any]) -> str:
    from ncanvas_tui.board import describe_conditions

    return "conditions: " + describe_conditions(c)


# ---- bench --all: accuracy vs latency of every model/precision here, Pareto front, budget ----------

def candidates(settings: Settings) -> list[dict[str, Any]]:
    """Everything this machine can run now, for models with a published top-1: the ONNX itself on
    ONNX Runtime (fp32) for each model present, and every artefact of the library with no problem."""
    from ncanvas_tui.engines.artefacts import list_artefacts
    from ncanvas_tui.vision import catalog

    out: list[dict[str, Any]] = []
    artefacts = [a for a in list_artefacts(settings) if not a.problem]
    for entry in catalog.all_models(settings):
        if entry.top1 is None or entry.locate(settings) is None:
            continue
        out.append({"model": entry.name, "backend": "onnxruntime", "precision": "fp32", "top1": entry.top1,
                    "id": None, "selection": Selection(model=entry.name, backend="onnxruntime", precision="fp32")})
        for a in artefacts:
            if a.model == entry.name:
                out.append({"model": entry.name, "backend": a.backend, "precision": a.precision,
                            "calibrator": a.calibrator, "top1": entry.top1, "id": a.id, "engine": a.path.name,
                            "dla_core": a.dla_core, "selection": Selection(artefact=a.id)})
    return out


def _energy_known(rows: list[dict[str, Any]]) -> bool:
    """Energy is a Pareto axis only when every measured row has it (a mix would compare unknowns)."""
    ok = [r for r in rows if r.get("latency_ms") is not None]
    return bool(ok) and all(r.get("energy_mj_per_image") is not None for r in ok)


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on top-1 (higher), latency (lower) and, where every measured row has a
    figure, energy per image (lower): beaten = another row at least as good on every axis and better
    on one. Marks ``pareto``; returns the front, fastest first."""
    ok = sorted((r for r in rows if r.get("latency_ms") is not None), key=lambda r: (r["latency_ms"], -r["top1"]))
    energy = _energy_known(ok)

    def key(r: dict[str, Any]) -> tuple[float, ...]:
        k = (-float(r["top1"]), float(r["latency_ms"]))
        return (*k, float(r["energy_mj_per_image"])) if energy else k

    keys = [key(r) for r in ok]
    front = []
    for i, r in enumerate(ok):
        r["pareto"] = not any(all(a <= b for a, b in zip(other, keys[i])) and other != keys[i]
                              for j, other in enumerate(keys) if j != i)
        if r["pareto"]:
            front.append(r)
    return front


def pick_for_budget(rows: list[dict[str, Any]], budget_ms: float | None = None,
                    budget_mj: float | None = None) -> dict[str, Any] | None:
    """The most accurate row within ``budget_ms`` latency and ``budget_mj`` energy per image (either
    may be None: no limit); ties: the lower energy, then the faster. A row without an energy figure
    never fits an energy budget."""
    fits = [r for r in rows if r.get("latency_ms") is not None
            and (budget_ms is None or r["latency_ms"] <= budget_ms)
            and (budget_mj is None or (r.get("energy_mj_per_image") is not None
                                       and r["energy_mj_per_image"] <= budget_mj))]
    if not fits:
        return None
    return max(fits, key=lambda r: (r["top1"], -(r.get("energy_mj_per_image") or 0.0), -r["latency_ms"]))


def run_bench_all(settings: Settings, *, budget_ms: float | None = None, images: Sequence[str] | None = None,
                  seconds: float = 1.0, batch: int = 1, progress: Progress = no_progress,
                  cancel: CancelToken = NEVER, budget_mj: float | None = None) -> dict[str, Any]:
    """Measure every candidate at ``batch`` (latency = p50 of the backend call; energy per image
    over the whole pipeline), then the Pareto front of published top-1 vs latency vs energy, and
    the pick for ``budget_ms`` / ``budget_mj``. ``cancel`` is polled between candidates and
    inside each measurement (raises ``CancelledError``)."""
    from ncanvas_tui.engines.verify import load_verify
    from ncanvas_tui.errors import NcanvasError

    rows = candidates(settings)
    conditions: dict[str, Any] | None = None
    warned: set[str] = set()
    for i, row in enumerate(rows, 1):
        cancel.check("bench --all")
        progress(i, len(rows), f"{row['model']} {row['backend']} {row['precision']}")
        try:
            r = run_bench(settings, row.pop("selection"), batches=[batch], images=images, seconds=seconds,
                          cancel=cancel)
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
        for k in ("energy_mj_per_image", "images_per_joule", "power_w"):
            row[k] = res.get(k)
        conditions, warned = r.get("conditions"), warned | set(r.get("warnings") or [])
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
        "energy": "mJ per image over the whole pipeline at that batch (average power / images per s)",
        "energy_axis": _energy_known(rows), "budget_mj": budget_mj,
        "conditions": conditions, "warnings": sorted(warned),
    }
    if budget_ms is not None or budget_mj is not None:
        out["pick"] = pick_for_budget(rows, budget_ms, budget_mj)
    return out


def format_bench_all(r: dict[str, Any]) -> str:
    energy = r.get("energy_axis")
    lines = [(f"accuracy vs latency{' vs energy' if energy else ''} at batch {r['batch']} (latency: p50 of the "
              "backend call; top-1: published ImageNet accuracy; mJ: energy per image, whole pipeline; "
              "* = Pareto front)"),
             f"  {'model':<24} {'backend':<13} {'prec':<5} {'top-1 %':>7} {'ms':>9} {'img/s':>8} {'mJ/img':>9}  note"]
    for x in r["rows"]:
        if x.get("latency_ms") is None:
            lines.append(f"  {x['model']:<24} {x['backend']:<13} {x['precision']:<5} {x['top1']:>7.1f} "
                         f"{'-':>9} {'-':>8} {'-':>9}  error: {x.get('error', '?')}")
            continue
        note = []
        if x.get("dla_core") is not None:
            note.append(f"DLA core {x['dla_core']}")
        elif x.get("calibrator"):
            note.append(x["calibrator"])
        if x.get("gpu_compute_ms") is not None:
            note.append(f"GPU {x['gpu_compute_ms']:.3f} ms")
        if x.get("verify_top1_agreement") is not None:
            note.append(f"verify top-1 agreement {x['verify_top1_agreement'] * 100:.0f}%")
        elif x["precision"] != "fp32":
            note.append(f"top-1 is the fp32 figure; check with `ncanvas verify {x['model']} --precision "
                        f"{x['precision']} --backend {x['backend']}`")
        if x.get("ran_precision") and x["ran_precision"] != x["precision"]:
            note.append(f"runs as {x['ran_precision']}")
        mj = x.get("energy_mj_per_image")
        lines.append(f"{'*' if x['pareto'] else ' '} {x['model']:<24} {x['backend']:<13} {x['precision']:<5} "
                     f"{x['top1']:>7.1f} {x['latency_ms']:>9.3f} {x.get('images_per_s') or 0:>8.1f} "
                     f"{'-' if mj is None else f'{mj:.2f}':>9}  {'; '.join(note)}")
    if not r["rows"]:
        lines.append("  (nothing to measure: no catalog model with a published top-1 is present here)")
    elif not energy:
        lines.append("  (no energy figure for every row: no readable power source here; ranked on accuracy "
                     "and latency)")
    budget = " and ".join(b for b in (f"{r['budget_ms']:g} ms" if r.get("budget_ms") is not None else "",
                                      f"{r['budget_mj']:g} mJ/image" if r.get("budget_mj") is not None else "")
                          if b)
    if budget:
        p = r.get("pick")
        if p:
            mj = p.get("energy_mj_per_image")
            lines.append(f"budget {budget}: {p['model']} on {p['backend']} {p['precision']} "
                         f"(top-1 {p['top1']:.1f}%, {p['latency_ms']:.3f} ms"
                         f"{'' if mj is None else f', {mj:.2f} mJ/image'})")
        else:
            measured = [x for x in r["rows"] if x.get("latency_ms") is not None]
            extra = ""
            if r.get("budget_mj") is not None and not any(x.get("energy_mj_per_image") is not None
                                                          for x in measured):
                extra = "; energy per image is unknown here (no readable power source)"
            elif r.get("budget_ms") is not None and measured:
                fastest = min(measured, key=lambda x: x["latency_ms"])
                extra = (f"; the fastest is {fastest['model']} {fastest['backend']} {fastest['precision']} at "
                         f"{fastest['latency_ms']:.3f} ms")
            elif measured:
                frugal = min((x for x in measured if x.get("energy_mj_per_image") is not None),
                             key=lambda x: x["energy_mj_per_image"])
                extra = (f"; the most frugal is {frugal['model']} {frugal['backend']} {frugal['precision']} at "
                         f"{frugal['energy_mj_per_image']:.2f} mJ/image")
            lines.append(f"budget {budget}: nothing fits{extra}")
    if r.get("conditions"):
        lines.append(format_conditions(r["conditions"]))
    return "\n".join(lines)


# ---- bench --layers: where the time goes, per layer named after the model's nodes ---------------

def layer_profile(clf: Classifier, images: Sequence[str], *, batch: int = 1, runs: int = 20,
                  cancel: CancelToken = NEVER) -> dict[str, Any]:
    """Per-layer times of ``runs`` calls at ``batch``, slowest first: ``{"layers": [{"name", "op",
    "ms"}], "source": ...}``. ONNX Runtime: its profiler (node names of the ONNX graph as ORT ran it,
    fused nodes under the name ORT gives them). TensorRT: an ``IProfiler`` during the calls, with the
    engine inspector's layer information for the ONNX nodes a fused layer came from."""
    be = clf.load()
    loaded = clf.load_images([images[i % len(images)] for i in range(batch)])
    bad = [x for x in loaded if not isinstance(x, LoadedImage)]
    if bad:
        raise bad[0]
    x = clf.normalize([g.rgb for g in loaded if isinstance(g, LoadedImage)])
    if getattr(be, "session", None) is not None:
        return _ort_layers(be.info.model_path, x, runs, cancel)
    runner = getattr(be, "runner", None)
    if runner is not None:
        w = runner.worker
        from ncanvas_tui.worker import current_worker

        if w is None or current_worker() is w:
            return trt_layers(runner, x, runs, cancel)
        return w.run(trt_layers, runner, x, runs, cancel)  # type: ignore[no-any-return]
    return {"layers": [], "source": f"{be.info.name}: no per-layer profiler"}


def _ort_layers(model_path: str, x: np.ndarray, runs: int, cancel: CancelToken) -> dict[str, Any]:
    import json
    import shutil
    import tempfile

    import onnxruntime as ort

    folder = tempfile.mkdtemp(prefix="ncanvas-profile-")
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(folder) / "ort")
        sess = ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        sess.run(None, feed)  # warm-up (its events are dropped below: first run id)
        for _ in range(runs):
            cancel.check("bench --layers")
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    first_run: dict[str, int] = {}
    total: dict[str, float] = {}
    ops: dict[str, str] = {}
    for e in events if isinstance(events, list) else []:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(e["name"]).removesuffix("_kernel_time")
        if name not in first_run:   # the warm-up's event of each node is its first
            first_run[name] = 1
            continue
        total[name] = total.get(name, 0.0) + float(e.get("dur", 0)) / 1e3
        ops[name] = str((e.get("args") or {}).get("op_name", ""))
    name_of = _OnnxNames(model_path)
    merged: dict[str, dict[str, Any]] = {}
    for n, t in total.items():
        key = name_of(n, ops[n])
        row = merged.setdefault(key, {"name": key, "op": ops[n], "ms": 0.0})
        row["ms"] += t / runs
    layers = [{**r, "ms": round(r["ms"], 4)} for r in merged.values()]
    layers.sort(key=lambda r: -r["ms"])
    return {"layers": layers, "source": f"ONNX Runtime profiler, mean of {runs} runs; ORT's fused and "
            "layout nodes named after the ONNX nodes they came from"}


class _OnnxNames:
    """ONNX Runtime's optimized graph renames what it fuses or re-lays out ('c2_nchwc', 'conv_token_4',
    '<Clip output>_nchwc' for a Conv+Clip): back to the ONNX node names (a fused chain 'conv + clip');
    nodes ORT added itself (ReorderOutput, Transpose) keep their name."""

    _SUFFIX = re.compile(r"(_nchwc|_token_\d+|_fused\w*)+$")

    def __init__(self, model_path: str) -> None:
        import onnx

        graph = onnx.load(model_path, load_external_data=False).graph
        self.nodes = {n.name: n for n in graph.node if n.name}
        self.producer = {o: n for n in graph.node for o in n.output}

    def __call__(self, name: str, op: str) -> str:
        if name in self.nodes:
            return name
        base = self._SUFFIX.sub("", name)
        if base in self.nodes:
            return base
        node = self.producer.get(base)
        if node is None:
            return name
        want = re.sub(r"^(QLinear|NhwcFused|Fused|Nhwc)", "", op)
        chain = [node]
        while node.op_type != want and len(chain) < 4 and node.input and node.input[0] in self.producer:
            node = self.producer[node.input[0]]
            chain.insert(0, node)
        if node.op_type != want:
            chain = chain[-1:]
        return " + ".join(n.name or n.op_type for n in chain)


def trt_layers(runner: Any, x: np.ndarray, runs: int, cancel: CancelToken = NEVER) -> dict[str, Any]:
    """TensorRT per-layer times (``IProfiler.report_layer_time`` during ``runs`` calls) named after the
    ONNX nodes each engine layer came from (``IEngineInspector`` JSON: a fused layer's 'Metadata' lists
    '[ONNX Layer: NAME]' for each node; without it, with a build of default profiling verbosity, the
    engine layer's own name, which TensorRT makes from the node names). Runs in the GPU worker."""
    import json
    import re

    trt = runner.trt
    ctx = runner.context
    if ctx is None or not hasattr(trt, "IProfiler"):
        return {"layers": [], "source": "this TensorRT has no IProfiler"}

    class Profiler(trt.IProfiler):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.ms: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.ms[layer_name] = self.ms.get(layer_name, 0.0) + float(ms)

    runner.infer(x)  # warm-up without the profiler
    prof = Profiler()
    old = getattr(ctx, "profiler", None)
    ctx.profiler = prof
    try:
        for _ in range(runs):
            cancel.check("bench --layers")
            runner.infer(x)
    finally:
        ctx.profiler = old
    info: dict[str, dict[str, Any]] = {}
    inspector_fn = getattr(runner.engine, "create_engine_inspector", None)
    fmt = getattr(getattr(trt, "LayerInformationFormat", None), "JSON", None)
    if inspector_fn is not None and fmt is not None:
        try:
            inspector = inspector_fn()
            inspector.execution_context = ctx
            doc = json.loads(inspector.get_engine_information(fmt))
            for layer in doc.get("Layers", []) if isinstance(doc, dict) else []:
                if isinstance(layer, dict) and "Name" in layer:
                    info[str(layer["Name"])] = layer
        except Exception:  # noqa: BLE001 - layer information is an extra: times are reported without it
            info = {}
    layers: list[dict[str, Any]] = []
    for name, total in prof.ms.items():
        meta = info.get(name, {})
        onnx_nodes = re.findall(r"\[ONNX Layer: ([^\]]+)\]", str(meta.get("Metadata", "")))
        layers.append({"name": " + ".join(dict.fromkeys(onnx_nodes)) if onnx_nodes else name,
                       "op": str(meta.get("LayerType", "")), "ms": round(total / runs, 4)})
    layers.sort(key=lambda r: -r["ms"])
    return {"layers": layers, "source": f"TensorRT IProfiler, mean of {runs} runs"
            + ("; ONNX nodes from the engine inspector" if info else "")}


def format_layers(layers: list[dict[str, Any]], source: str, *, value: str = "ms", limit: int = 25) -> str:
    """The slowest (or most sensitive) layers as a text table."""
    if not layers:
        return f"layers: none reported ({source})"
    total = sum(float(x[value]) for x in layers) or 1.0
    width = min(48, max(len(x["name"]) for x in layers[:limit]))
    lines = [f"layers ({source}; {len(layers)} in all, top {min(limit, len(layers))}):",
             f"  {'layer':<{width}}  {'op':<18} {value:>11}  share"]
    for x in layers[:limit]:
        v = float(x[value])
        lines.append(f"  {x['name'][:width]:<{width}}  {x['op'][:18]:<18} {v:>11.4f}  {v / total:6.1%}")
    return "\n".join(lines)
