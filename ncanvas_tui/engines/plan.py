"""Plan a build once: validate the request, read and hash the ONNX once, decide what is built.

``plan_build(settings, BuildRequest) -> BuildPlan`` is the only place that checks a build request,
loads the source ONNX (``SourceModel``: path, sha256, input name and dims, QAT or not) and decides
the artefact: backend, precision mode, calibration images, batch profile, and so its ``ArtefactKey``
and ``id``. Every build step after it takes the plan and never re-validates or re-hashes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncanvas_tui.engines.store import NO_GPU, ArtefactKey, EngineStore
from ncanvas_tui.errors import EngineError
from ncanvas_tui.profile import batch_profile

if TYPE_CHECKING:
    from ncanvas_tui.engines.compat import Features, GpuInfo
    from ncanvas_tui.settings import Settings
    from ncanvas_tui.vision.catalog import ModelEntry

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATORS = ("entropy2", "minmax")
BUILD_BACKENDS = ("onnxruntime", "tensorrt", "tensorrt-rtx")
#: the batch "profile" of an ONNX Runtime artefact: whatever the ONNX itself allows
DYNAMIC = (0, 0, 0)


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked for; None: the settings' value."""

    model: str | None
    precision: str
    backend: str | None = None
    calibrator: str | None = None
    batch: tuple[int, ...] | None = None
    opt_level: int | None = None
    sparse: bool | None = None
    strict_int8: bool | None = None
    tf32: bool | None = None
    dla_core: int | None = None       # None: [build].dla_core (-1 there: the GPU)
    keep_float: tuple[str, ...] = ()  # int8: these ONNX nodes stay float (no Q/DQ, fp32 precision constraint)
    force: bool = False


@dataclass(frozen=True)
class SourceModel:
    """The source ONNX of a catalog entry, read, checked and hashed once."""

    entry: ModelEntry
    path: Path
    sha256: str
    input_name: str
    dims: tuple[Any, ...]          # [N, 3, H, W]: ints or symbolic names
    qat: bool                      # already has Q/DQ nodes (quantization-aware training)
    static_batch: int | None

    @property
    def chw(self) -> tuple[int, int, int]:
        size = self.entry.preprocess.input_size
        hw = [d if isinstance(d, int) and d > 0 else size for d in self.dims[2:]]
        return 3, hw[0], hw[1]


@dataclass(frozen=True)
class CalibrationImages:
    """The calibration images a build uses, and the key of that set (names, sizes, mtimes)."""

    folder: Path
    files: tuple[Path, ...]
    key: str


@dataclass(frozen=True)
class BuildPlan:
    settings: Settings
    source: SourceModel
    backend: str
    precision: str
    batch: tuple[int, int, int]
    calibrator: str | None          # int8 calibrated here (not QAT): entropy2 | minmax
    calibration: CalibrationImages | None
    opt_level: int
    sparse: bool
    strict_int8: bool              # int8: no fp16 fallback for layers without an int8 kernel
    tf32: bool                     # fp32 layers may use TF32 (TensorRT)
    dla_core: int | None           # a DLA core (Jetson Xavier / Orin), GPU fallback; None: the GPU
    force: bool
    keep_float: tuple[str, ...]    # int8: ONNX nodes kept float (sorted, part of the key)
    key: ArtefactKey
    path: Path
    features: Features | None       # TensorRT builds
    gpu: GpuInfo | None             # TensorRT builds
    notes: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.key.id

    @property
    def mode(self) -> str:
        """'flags' (builder flags, TensorRT <= 10) or 'typed' (precision from the ONNX); '' on ORT."""
        return self.features.precision_mode(self.precision) if self.features is not None else ""

    @property
    def quantization(self) -> str | None:
        """'implicit' (TensorRT calibrator), 'explicit' (Q/DQ ONNX) or None (not int8)."""
        if self.precision != "int8":
            return None
        if self.source.qat or self.backend == "onnxruntime":
            return "explicit"
        feats = self.features
        if feats is not None and self.mode == "flags" and feats.implicit_int8_calibrators:
            return "implicit"
        return "explicit"


def image_set_key(files: tuple[Path, ...] | list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:10]


def load_source(settings: Settings, entry: ModelEntry) -> SourceModel:
    """Read, check ([N, 3, H, W] float input) and hash ``entry``'s ONNX."""
    from ncanvas_tui.engines.prep import check_classifier_input, load_onnx
    from ncanvas_tui.engines.quantize import has_qdq
    from ncanvas_tui.vision.catalog import sha256_file

    path = entry.require(settings)
    model = load_onnx(path, external=False)
    name, dims = check_classifier_input(path, model, entry.preprocess.input_size)
    static = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    return SourceModel(entry=entry, path=path, sha256=sha256_file(path), input_name=name, dims=tuple(dims),
                       qat=has_qdq(model), static_batch=static)


def resolve_build_backend(backend: str | None, settings: Settings) -> str:
    """``auto`` -> tensorrt when the real TensorRT imports and a GPU is present, else onnxruntime."""
    from ncanvas_tui.backends.base import resolve_backend

    return resolve_backend(backend or settings.inference.backend)


def _dla_checks(req: BuildRequest, backend: str, core: int) -> tuple[int, int, int]:
    """A DLA build's own rules (before anything is read): TensorRT only, fp16/int8, one batch size."""
    if backend != "tensorrt":
        raise EngineError(f"--dla-core {core}: DLA engines are built by TensorRT on a Jetson (Xavier, Orin); "
                          f"backend {backend} has no DLA")
    if req.precision == "fp32":
        raise EngineError(f"--dla-core {core}: DLA runs fp16 or int8, not fp32 (use --precision fp16 or int8)")
    if req.batch is None:
        return (1, 1, 1)
    sizes = set(req.batch)
    if len(sizes) != 1:
        raise EngineError(f"--dla-core {core}: DLA has no dynamic shapes; give --batch as one number "
                          f"(got {','.join(map(str, req.batch))})")
    n = sizes.pop()
    return (n, n, n)


def plan_build(settings: Settings, req: BuildRequest) -> BuildPlan:
    """Validate ``req`` and decide the artefact (see the module doc). Cheap apart from reading the ONNX."""
    from ncanvas_tui.engines import calibrate, compat
    from ncanvas_tui.vision import catalog

    if req.precision == "auto":  # as everywhere: fp16 on the GPU backends, fp32 on ONNX Runtime
        auto = resolve_build_backend(req.backend, settings)
        req = dataclasses.replace(req, precision="fp32" if auto == "onnxruntime" else "fp16")
    if req.precision not in PRECISIONS:
        raise EngineError(f"precision must be auto | fp32 | fp16 | int8, got {req.precision!r}")
    calibrator = req.calibrator or settings.build.calibrator
    if calibrator not in CALIBRATORS:
        raise EngineError(f"calibrator must be entropy2 | minmax, got {calibrator!r}")
    try:
        batch = batch_profile(req.batch if req.batch is not None else settings.build.batch)
    except ValueError as e:
        raise EngineError(f"--batch: {e}") from None
    opt_level = settings.build.opt_level if req.opt_level is None else req.opt_level
    if not 0 <= opt_level <= 5:
        raise EngineError(f"--opt-level must be 0..5, got {opt_level}")
    sparse = settings.build.sparse_weights if req.sparse is None else bool(req.sparse)
    strict = settings.build.strict_int8 if req.strict_int8 is None else bool(req.strict_int8)
    tf32 = settings.build.tf32 if req.tf32 is None else bool(req.tf32)
    backend = resolve_build_backend(req.backend, settings)
    if backend not in BUILD_BACKENDS:
        raise EngineError(f"backend must be one of {', '.join(BUILD_BACKENDS)}, got {backend!r}")

    dla = settings.build.dla_core if req.dla_core is None else req.dla_core
    dla_core = dla if dla is not None and dla >= 0 else None
    if dla_core is not None:
        batch = _dla_checks(req, backend, dla_core)

    source = load_source(settings, catalog.find(settings, req.model))
    notes: list[str] = []
    if source.static_batch is not None and batch != (source.static_batch,) * 3:
        notes.append(f"{source.path.name} has a static batch of {source.static_batch}: built for that batch only")
        batch = (source.static_batch,) * 3

    feats: Features | None = None
    gpu: GpuInfo | None = None
    if backend in compat.TRT_BACKENDS:
        trt = compat.import_trt(backend)
        feats = compat.features(trt)
        gpu = compat.gpu_info()
        if dla_core is not None:
            cores = compat.dla_cores(trt)
            if dla_core >= cores:
                raise EngineError(f"--dla-core {dla_core}: this machine has "
                                  f"{'no DLA' if not cores else f'{cores} DLA core(s) (0..{cores - 1})'} "
                                  f"(TensorRT {feats.version} on {gpu.name}); build for the GPU without --dla-core")
            notes.append(f"DLA core {dla_core}, GPU fallback for layers DLA cannot run")
        gpu_key = NO_GPU if gpu.name == NO_GPU else f"{gpu.name} (sm {gpu.compute_capability or '?'})"
        version = feats.version
    else:
        gpu_key, version = "cpu", ""
        sparse = tf32 = False   # TensorRT options
    calibrated = req.precision == "int8" and not source.qat
    cal: CalibrationImages | None = None
    if calibrated:
        folder = Path(settings.paths.calibration)
        files = calibrate.calibration_images(folder, need=batch[1])
        used = tuple(files[: settings.build.calibration_batches * batch[1]])
        cal = CalibrationImages(folder=folder, files=used, key=image_set_key(used))
    strict = strict and req.precision == "int8" and backend != "onnxruntime"
    keep_float = _keep_float(req.keep_float, source, req.precision)
    options = tuple((k, "1") for k, on in (("sparse", sparse), ("strict_int8", strict)) if on)
    if backend != "onnxruntime":
        options += (("tf32", "1" if tf32 else "0"),)
    key = ArtefactKey(model=source.entry.name, model_sha256=source.sha256, backend=backend,
                      backend_version=version, precision=req.precision,
                      batch=batch if backend != "onnxruntime" else DYNAMIC, gpu=gpu_key,
                      calibrator=calibrator if calibrated else None,
                      calibration_set=cal.key if cal is not None else None, dla_core=dla_core,
                      keep_float=keep_float, options=options)
    return BuildPlan(settings=settings, source=source, backend=backend, precision=req.precision, batch=batch,
                     calibrator=calibrator if calibrated else None, calibration=cal, opt_level=opt_level,
                     sparse=sparse, strict_int8=strict, tf32=tf32, dla_core=dla_core, force=req.force,
                     keep_float=keep_float, key=key, path=EngineStore(settings).path_for(key),
                     features=feats, gpu=gpu, notes=tuple(notes))



def parse_keep_float(text: str | None) -> tuple[str, ...]:
    """``--keep-float NAME,...`` -> the sorted, de-duplicated node names ('' or None: none)."""
    if not text:
        return ()
    return tuple(sorted({n.strip() for n in text.split(",") if n.strip()}))


def _keep_float(names: tuple[str, ...], source: SourceModel, precision: str) -> tuple[str, ...]:
    """The kept-float layers of a build, checked against the model's node names (sorted: one key per set)."""
    if not names:
        return ()
    keep = tuple(sorted(set(names)))
    if precision != "int8":
        raise EngineError(f"--keep-float is for int8 builds (layers kept float among int8 ones); "
                          f"precision {precision} is float everywhere")
    if source.qat:
        raise EngineError(f"--keep-float: {source.path} already has Q/DQ nodes (quantization-aware training); "
                          "its quantization is fixed in the ONNX")
    from ncanvas_tui.engines.prep import load_onnx

    known = {n.name for n in load_onnx(source.path, external=False).graph.node}
    unknown = [n for n in keep if n not in known]
    if unknown:
        raise EngineError(f"--keep-float: {source.path} has no node named {', '.join(map(repr, unknown[:5]))} "
                          f"(`ncanvas verify {source.entry.name} --layers` lists its quantizable layers)")
    return keep
