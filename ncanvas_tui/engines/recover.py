"""``build --recover TARGET``: the int8 artefact with the fewest layers kept float that reaches TARGET.

    rank the layers (sensitivity, ONNX Runtime) -> bisection over the ranking for the fewest kept
    float that reach TARGET top-1 agreement with fp32 on the calibration images (ONNX Runtime)
    -> build that artefact (any backend) and plain int8 -> verify the built artefact against fp32
    -> time both in the same run: the speed cost of the float layers against plain int8

Run it in the GPU worker (TensorRT builds go to a child process; verify and bench need the
worker's CUDA context).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ncanvas_tui.errors import EngineError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress

if TYPE_CHECKING:
    from ncanvas_tui.engines.plan import BuildRequest
    from ncanvas_tui.settings import Settings


def check_target(target: float) -> float:
    if not 0.0 < target <= 1.0:
        raise EngineError(f"--recover: the target is a top-1 agreement fraction in (0, 1], e.g. 0.99; got {target}")
    return target


def recover(settings: Settings, request: BuildRequest, target: float, *, bench_seconds: float = 1.0,
            progress: Progress = no_progress, cancel: CancelToken = NEVER) -> dict[str, Any]:
    """See the module doc. Returns ``build --recover --json``'s document."""
    from ncanvas_tui.bench import run_bench
    from ncanvas_tui.engines.artefacts import Selection
    from ncanvas_tui.engines.build import build
    from ncanvas_tui.engines.plan import plan_build
    from ncanvas_tui.engines.sensitivity import rank_layers, search_keep_float
    from ncanvas_tui.engines.verify import verify

    check_target(target)
    if request.precision != "int8":
        raise EngineError(f"--recover takes back int8 accuracy; precision is {request.precision}")
    t0 = time.perf_counter()
    progress(0, 0, "ranking the layers by sensitivity (ONNX Runtime)")
    ranked = rank_layers(settings, request.model, backend=request.backend, calibrator=request.calibrator,
                         progress=progress, cancel=cancel)
    names = [x["name"] for x in ranked["layers"]]
    progress(0, 0, f"searching the fewest float layers for {target:.1%} top-1 agreement")
    found = search_keep_float(settings, request.model, target, names, backend=request.backend,
                              calibrator=request.calibrator, progress=progress, cancel=cancel)
    if not found["reached"]:
        raise EngineError(f"--recover {target:g}: even with all {len(names)} ranked layers float, top-1 agreement "
                          f"with fp32 on the calibration images is {found['agreement']:.1%} (int8: "
                          f"{found['int8_agreement']:.1%}); lower the target or add calibration images")
    keep = tuple(sorted(found["keep_float"]))
    plain_plan = plan_build(settings, replace(request, keep_float=()))
    plan = plan_build(settings, replace(request, keep_float=keep)) if keep else plain_plan
    progress(0, 0, f"building int8 with {len(keep)} layer(s) float" if keep else "int8 already meets the target")
    built = build(plan, progress=progress, cancel=cancel)
    plain = build(plain_plan, progress=progress, cancel=cancel) if keep else built
    assert built.artefact is not None and plain.artefact is not None
    progress(0, 0, "verifying the recovered artefact against fp32")
    checked = verify(settings, Selection(artefact=built.artefact.id), progress=progress, cancel=cancel)
    progress(0, 0, "timing plain int8 and the recovered artefact (same run)")
    speed: dict[str, Any] = {"batch": 1, "latency": "p50 of the backend call (ms)"}
    rows = {}
    for tag, res in (("int8", plain), ("recovered", built)):
        assert res.artefact is not None
        r = run_bench(settings, Selection(artefact=res.artefact.id), batches=[1], seconds=bench_seconds,
                      cancel=cancel)
        rows[tag] = r["results"][0]["infer_only_ms"] if r["results"] else None
    speed["int8_ms"], speed["recovered_ms"] = rows["int8"], rows["recovered"]
    speed["cost"] = (round(rows["recovered"] / rows["int8"], 3) if rows["int8"] and rows["recovered"] else None)
    return {
        "model": plan.source.entry.name, "backend": plan.backend, "precision": "int8",
        "calibrator": plan.calibrator, "target": target, "id": built.artefact.id,
        "path": str(built.artefact.path), "int8_id": plain.artefact.id, "keep_float": list(keep),
        "agreement": checked.top1_agreement, "search_agreement": found["agreement"],
        "int8_agreement": found["int8_agreement"], "images": checked.images,
        "reached": checked.top1_agreement >= target, "evaluations": found["evaluations"],
        "layers": ranked["layers"], "ranked_on": ranked["note"], "speed": speed,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def format_recover(r: dict[str, Any]) -> str:
    kept = ", ".join(r["keep_float"]) if r["keep_float"] else "none (int8 already meets the target)"
    sp = r["speed"]
    cost = (f"{sp['recovered_ms']:.3f} ms vs {sp['int8_ms']:.3f} ms plain int8 ({sp['cost']:.2f}x, batch 1, "
            "same run)" if sp.get("cost") is not None else "not measured")
    lines = [(f"recovered {r['model']} {r['backend']} int8 {r['calibrator'] or ''} (artefact {r['id']}): "
              f"{len(r['keep_float'])} layer(s) float: {kept}"),
             (f"top-1 agreement with fp32 on {r['images']} calibration image(s): {r['agreement']:.1%} "
              f"(target {r['target']:.1%}; plain int8 {r['int8_agreement']:.1%})"),
             f"speed cost: {cost}",
             f"note: {r['ranked_on']}",
             f"use it: --keep-float {','.join(r['keep_float'])}" if r["keep_float"] else f"use it: --artefact {r['id']}",
             r["path"]]
    if not r["reached"]:
        lines.insert(2, f"WARNING: the built artefact reaches {r['agreement']:.1%} on its backend, below the target "
                        f"(the search ran on ONNX Runtime: {r['search_agreement']:.1%})")
    return "\n".join(lines)
