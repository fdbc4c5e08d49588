"""``ncanvas models prep``: Polygraphy sanitize (fold constants, cleanup, toposort).

The same as ``polygraphy surgeon sanitize --fold-constants``, through Polygraphy's
Python API (``FoldConstants``) and ONNX-GraphSurgeon (``cleanup().toposort()``).
The result goes to ``NAME.prep.onnx`` beside the source, or in ``[paths].models``
when the source folder is read-only or the bundled one; it records the source's
sha256 in its metadata so builds reuse it only while the source is unchanged.
Proof that nothing changed: ONNX Runtime runs both on real images and the largest
absolute difference of the outputs is reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ncanvas_tui.engines.store import atomic_path
from ncanvas_tui.errors import EngineError, ModelError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress

if TYPE_CHECKING:
    import onnx

    from ncanvas_tui.engines.plan import SourceModel
    from ncanvas_tui.settings import Settings
    from ncanvas_tui.vision.catalog import ModelEntry

ProgressFn = Callable[[int, int, str], None]
SOURCE_KEY = "ncanvas.source_sha256"
KIND_KEY = "ncanvas.derived"


@dataclass
class PrepResult:
    model: str
    source: Path
    output: Path
    nodes_before: int
    nodes_after: int
    max_abs_diff: float
    compared_on: str
    seconds: float
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"], d["output"] = str(self.source), str(self.output)
        return d

    @property
    def summary(self) -> str:
        return (f"prep {self.model}: nodes {self.nodes_before} -> {self.nodes_after}, "
                f"max abs diff {self.max_abs_diff:.2e}")


def load_onnx(path: Path, *, external: bool = True) -> onnx.ModelProto:
    """onnx.load with a one-line ModelError naming the file when it is not ONNX."""
    import onnx
    from google.protobuf.message import DecodeError

    if not Path(path).is_file():
        raise ModelError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=external)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{path}: not a valid ONNX file ({' '.join(str(e).split())[:200] or type(e).__name__})"
                         ) from None
    if not model.graph.node:
        raise ModelError(f"{path}: not a valid ONNX file (the graph has no nodes)")
    return model


def graph_input(path: Path, model: onnx.ModelProto) -> tuple[str, list[Any], str]:
    """(name, shape with int / str dims, elem type name) of the one real input."""
    import onnx

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"{path}: has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                         f"an image classifier has one")
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims: list[Any] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    elem = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "undefined"
    return inp.name, dims, f"tensor({elem})"


def check_classifier_input(path: Path, model: onnx.ModelProto, input_size: int | None) -> tuple[str, list[Any]]:
    """Validate [N, 3, H, W] float input (the same rules as the ONNX Runtime backend)."""
    from ncanvas_tui.backends.onnxruntime import check_input

    name, dims, elem = graph_input(path, model)
    check_input(path, name, dims, elem, input_size)
    return name, dims


def sanitize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants, remove dead nodes, sort topologically (polygraphy surgeon sanitize)."""
    try:
        import onnx_graphsurgeon as gs
        import polygraphy  # noqa: F401
    except ImportError as e:
        raise EngineError(f"sanitize needs the {e.name} package: pip install -e '.[engines]' "
                          "(or set [build].sanitize = false in settings.toml)") from None

    from ncanvas_tui.engines.compat import route_polygraphy_logging

    route_polygraphy_logging()
    from polygraphy.backend.onnx import FoldConstants

    try:
        folded = FoldConstants(model, num_passes=None, error_ok=True,
                               allow_onnxruntime_shape_inference=False)()
    except Exception as e:  # noqa: BLE001 - Polygraphy raises PolygraphyException and others
        raise ModelError(f"constant folding failed: {' '.join(str(e).split())[:200]}") from None
    graph = gs.import_onnx(folded)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    result: onnx.ModelProto = out
    return result


def set_meta(model: onnx.ModelProto, **values: str) -> None:
    keep = [p for p in model.metadata_props if p.key not in {f"ncanvas.{k}" for k in values}]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in values.items():
        p = model.metadata_props.add()
        p.key, p.value = f"ncanvas.{k}", v


def get_meta(path: Path) -> dict[str, str]:
    """The ncanvas.* metadata of an ONNX file ({} when unreadable)."""
    try:
        m = load_onnx(path, external=False)
    except ModelError:
        return {}
    return {p.key[len("ncanvas."):]: p.value for p in m.metadata_props if p.key.startswith("ncanvas.")}


def output_path(settings: Settings, entry: ModelEntry, source: Path) -> Path:
    from ncanvas_tui.vision.catalog import BUNDLED_DIR

    name = f"{entry.name}.prep.onnx"
    folder = source.parent
    if (entry.bundled and folder.resolve() == BUNDLED_DIR.resolve()
            and Path(settings.paths.models).resolve() != BUNDLED_DIR.resolve()) or not os.access(folder, os.W_OK):
        folder = Path(settings.paths.models)
    return folder / name


def save_onnx(model: onnx.ModelProto, target: Path) -> None:
    import onnx

    from ncanvas_tui.engines.subproc import claim

    try:
        with atomic_path(target) as tmp:
            claim(tmp)
            onnx.save(model, str(tmp))
    except OSError as e:
        raise EngineError(f"{target}: cannot write ({e.strerror or e}); nothing was left behind") from None


def run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    """Outputs of ``path`` on ``x`` (the first output), one sample at a time when the batch is static."""
    from ncanvas_tui.backends.onnxruntime import OnnxRuntimeBackend

    be = OnnxRuntimeBackend(path, max_batch=x.shape[0])
    be.load()
    try:
        if be.fixed_batch is not None and be.fixed_batch != x.shape[0]:
            return np.concatenate([be.infer(x[i:i + 1]) for i in range(x.shape[0])])
        return be.infer(x)
    finally:
        be.close()


def prep_model(settings: Settings, entry: ModelEntry, *, progress: Progress = no_progress,
               cancel: CancelToken = NEVER) -> PrepResult:
    """Sanitize ``entry``'s ONNX into ``NAME.prep.onnx`` and prove ONNX Runtime outputs are unchanged."""
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.engines.calibrate import sample_inputs
    from ncanvas_tui.engines.store import EngineStore
    from ncanvas_tui.vision.catalog import sha256_file

    t0 = time.perf_counter()
    source = entry.require(settings)
    out = output_path(settings, entry, source)
    progress(1, 4, "loading ONNX")
    # loading, folding and saving hold the GIL for long stretches: a child process does them
    with EngineStore(settings).lock(out.name):
        before, after = subproc.call(_sanitize_file, source, out, sha256_file(source), what="sanitize",
                                     progress=progress, cancelled=cancel, check=True,
                                     input_size=entry.preprocess.input_size)
    progress(3, 4, "comparing outputs with ONNX Runtime")
    x, where = sample_inputs(settings, entry)
    try:
        cancel.check("prep")
        diff = float(np.max(np.abs(run_onnxruntime(source, x) - run_onnxruntime(out, x))))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    progress(4, 4, "done")
    return PrepResult(model=entry.name, source=source, output=out, nodes_before=before,
                      nodes_after=after, max_abs_diff=diff, compared_on=where,
                      seconds=round(time.perf_counter() - t0, 3))


def sanitized_model_for(settings: Settings, source: SourceModel, *, progress: Progress = no_progress,
                        cancel: CancelToken = NEVER) -> Path:
    """The source ONNX, sanitized when ``[build].sanitize`` (reusing ``NAME.prep.onnx`` while its
    recorded source sha256 matches; otherwise sanitizing again under a lock, without the ORT
    comparison)."""
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.engines.store import EngineStore

    if not settings.build.sanitize:
        return source.path
    out = output_path(settings, source.entry, source.path)
    with EngineStore(settings).lock(out.name):
        if out.is_file() and get_meta(out).get("source_sha256") == source.sha256:
            return out
        progress(0, 0, "sanitizing ONNX (fold constants, cleanup, toposort)")
        subproc.call(_sanitize_file, source.path, out, source.sha256, what="sanitize", cancelled=cancel)
    return out


def _sanitize_file(source: Path, out: Path, sha: str, *, check: bool = False, input_size: int | None = None,
                   progress: ProgressFn | None = None, cancelled: Callable[[], bool] | None = None
                   ) -> tuple[int, int]:
    """Load ``source``, sanitize it, record ``sha`` and save it atomically to ``out``; (nodes before,
    after). ``check`` (prep_model): check the classifier input first and report step 2/4.
    Runs in the child process of ``subproc.call`` (or inline when none could start)."""
    model = load_onnx(source)
    if check:
        check_classifier_input(source, model, input_size)
        if progress:
            progress(2, 4, "folding constants, cleanup, toposort")
    clean = sanitize(model)
    set_meta(clean, source_sha256=sha, derived="prep")
    save_onnx(clean, out)
    return len(model.graph.node), len(clean.graph.node)

