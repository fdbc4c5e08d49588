"""The typed core API that both faces (the CLI and the TUI) call: nothing else reaches the engine core.

Every call takes the ``Settings`` and a typed request, and the long ones take ``progress`` (one
protocol: ``progress(done, total, message)``) and ``cancel`` (a ``CancelToken``) explicitly::

    plan = api.plan_build(settings, api.BuildRequest("efficientnet_lite0", "int8", calibrator="minmax"))
    result = api.build(plan, progress=bar, cancel=token)            # -> BuildResult (.artefact.id)
    report = api.verify(settings, api.Selection(artefact=result.artefact.id), progress=bar, cancel=token)
    api.bench(settings, api.Selection(precision="int8", calibrator="minmax"), batches=(1, 8))
    api.list_artefacts(settings)                                     # -> [Artefact] (problem set)

Run them in the GPU worker (``worker.get_worker().submit(api.build, plan, progress=..., cancel=token)``):
TensorRT needs the worker's CUDA context, and the UI never blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ncanvas_tui.engines.artefacts import Selection, Target, list_artefacts, select
from ncanvas_tui.engines.build import BuildResult, build
from ncanvas_tui.engines.plan import BuildPlan, BuildRequest, plan_build
from ncanvas_tui.engines.prep import PrepResult
from ncanvas_tui.engines.store import Artefact, EngineStore
from ncanvas_tui.engines.verify import VerifyResult
from ncanvas_tui.errors import EngineError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress
from ncanvas_tui.settings import Settings

__all__ = ["Artefact", "BuildPlan", "BuildRequest", "BuildResult", "CancelToken", "PrepResult", "Progress",
           "Selection", "Target", "VerifyResult", "bench", "bench_all", "build", "delete_artefact",
           "layer_sensitivity", "list_artefacts", "plan_and_build", "plan_build", "prep", "recover", "select",
           "verify"]


def plan_and_build(settings: Settings, request: BuildRequest, *, progress: Progress = no_progress,
                   cancel: CancelToken = NEVER) -> BuildResult:
    """``build(plan_build(settings, request))``: one job for a face that has a request in hand."""
    return build(plan_build(settings, request), progress=progress, cancel=cancel)


def prep(settings: Settings, model: str | None, *, progress: Progress = no_progress,
         cancel: CancelToken = NEVER) -> PrepResult:
    """Polygraphy sanitize of ``model`` into ``NAME.prep.onnx``, outputs checked with ONNX Runtime."""
    from ncanvas_tui.engines.prep import prep_model
    from ncanvas_tui.vision import catalog

    return prep_model(settings, catalog.find(settings, model), progress=progress, cancel=cancel)


def verify(settings: Settings, selection: Selection, images: Sequence[str] | None = None, *,
           progress: Progress = no_progress, cancel: CancelToken = NEVER, store: bool = True,
           layers: bool = False) -> VerifyResult:
    """The chosen artefact vs fp32 ONNX Runtime on the same images (stored beside the artefact);
    ``layers``: also the layer sensitivity ranking (``VerifyResult.layers``)."""
    from ncanvas_tui.engines.verify import verify as run

    return run(settings, selection, images, progress=progress, cancel=cancel, store=store, layers=layers)


def bench(settings: Settings, selection: Selection, *, batches: Sequence[int] = (1, 4, 8),
          images: Sequence[str] | None = None, seconds: float = 2.0, progress: Progress = no_progress,
          cancel: CancelToken = NEVER, layers: bool = False) -> dict[str, Any]:
    """Latency percentiles and images/s of the chosen artefact per batch size (``bench --json``'s shape);
    ``layers``: also per-layer times, slowest first (``"layers": [{"name", "op", "ms"}]``)."""
    from ncanvas_tui.bench import run_bench

    return run_bench(settings, selection, batches=batches, images=images, seconds=seconds, progress=progress,
                     cancel=cancel, layers=layers)


def layer_sensitivity(settings: Settings, model: str | None, *, backend: str | None = None,
                      calibrator: str | None = None, progress: Progress = no_progress,
                      cancel: CancelToken = NEVER) -> dict[str, Any]:
    """The quantizable layers ranked by how much quantizing each alone moves the logits (ONNX Runtime,
    calibration images, cached ranges): ``{"layers": [{"name", "op", "sensitivity"}], ...}``."""
    from ncanvas_tui.engines.sensitivity import rank_layers

    return rank_layers(settings, model, backend=backend, calibrator=calibrator, progress=progress, cancel=cancel)


def recover(settings: Settings, request: BuildRequest, target: float, *, progress: Progress = no_progress,
            cancel: CancelToken = NEVER) -> dict[str, Any]:
    """Build the int8 artefact with the fewest layers kept float that reaches ``target`` top-1 agreement
    with fp32 on the calibration images; its layers, agreement and speed cost against plain int8."""
    from ncanvas_tui.engines.recover import recover as run

    return run(settings, request, target, progress=progress, cancel=cancel)


def bench_all(settings: Settings, *, budget_ms: float | None = None, budget_mj: float | None = None,
              images: Sequence[str] | None = None, seconds: float = 1.0, batch: int = 1,
              progress: Progress = no_progress, cancel: CancelToken = NEVER) -> dict[str, Any]:
    """Every runnable artefact: accuracy vs latency vs energy, the Pareto front, the pick for a budget."""
    from ncanvas_tui.bench import run_bench_all

    return run_bench_all(settings, budget_ms=budget_ms, budget_mj=budget_mj, images=images, seconds=seconds,
                         batch=batch, progress=progress, cancel=cancel)


def delete_artefact(settings: Settings, artefact_id: str) -> Artefact:
    """Remove an artefact, its sidecar and its stored verify result; returns what was removed."""
    store = EngineStore(settings)
    a = store.get(artefact_id)
    if a is None:
        raise EngineError(f"no artefact {artefact_id!r} in {store.root}")
    store.delete(a)
    return a
