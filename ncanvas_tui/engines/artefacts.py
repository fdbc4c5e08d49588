"""Which artefact runs: list the library with what is wrong with each, and choose one.

``list_artefacts(settings)`` is every built artefact with ``problem`` set where it cannot run
here (stale: the ONNX changed; foreign: another TensorRT version or GPU; corrupt or incomplete).
``select(settings, Selection)`` turns what the user asked for (``--artefact ID``, or model +
backend + precision + calibrator + float-kept layers) into the ``Target`` a backend loads: an
artefact, or the source ONNX itself for ONNX Runtime fp32. Several usable matches is an error
listing their ids; so is none, with the command that builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ncanvas_tui.engines.store import NO_GPU, Artefact, EngineStore
from ncanvas_tui.errors import BackendError, EngineError, ModelError

if TYPE_CHECKING:
    from ncanvas_tui.settings import Settings
    from ncanvas_tui.vision.catalog import ModelEntry


@dataclass(frozen=True)
class Selection:
    """What the user chose; None: the settings' value (model, backend, precision) or "any"."""

    model: str | None = None
    backend: str | None = None
    precision: str | None = None
    calibrator: str | None = None
    keep_float: tuple[str, ...] | None = None
    artefact: str | None = None       # an id (or a unique prefix): overrides everything else


@dataclass(frozen=True)
class Target:
    """What a backend loads: ``path`` (an engine, a Q/DQ ONNX, or the source ONNX) for ``entry``."""

    entry: ModelEntry
    backend: str                      # tensorrt | tensorrt-rtx | onnxruntime
    precision: str                    # the precision that runs
    path: Path
    artefact: Artefact | None = None  # None: the source ONNX itself
    max_batch: int = 8
    notes: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str | None:
        return self.artefact.id if self.artefact is not None else None

    @property
    def label(self) -> str:
        if self.artefact is not None:
            return self.artefact.label
        return f"{self.entry.name} {self.backend} {self.precision} (the ONNX itself)"


class _Here:
    """What this machine runs now, probed once per listing/selection (model hashes, TensorRT, GPU)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sha: dict[str, str | None] = {}
        self._trt: dict[str, str | None] = {}

    def model_sha(self, model: str) -> str | None:
        if model not in self._sha:
            from ncanvas_tui.vision import catalog

            try:
                self._sha[model] = catalog.sha256_file(catalog.find(self.settings, model).require(self.settings))
            except (ModelError, OSError):
                self._sha[model] = None
        return self._sha[model]

    def trt_version(self, backend: str) -> str | None:
        if backend not in self._trt:
            from ncanvas_tui.backends.trtlib import import_trt

            try:
                self._trt[backend] = str(getattr(import_trt(backend), "__version__", "?"))
            except BackendError:
                self._trt[backend] = None
        return self._trt[backend]

    def problem(self, store: EngineStore, a: Artefact, *, verify_hash: bool = False) -> str | None:
        """Why ``a`` cannot run here (None: it can). Cheap unless ``verify_hash``."""
        if a.problem:
            return a.problem
        sha = self.model_sha(a.model)
        if sha is None:
            return f"the ONNX of model {a.model!r} is not here"
        trt_version: str | None = None
        gpu_name: str | None = None
        cc: str | None = None
        if a.backend != "onnxruntime":
            trt_version = self.trt_version(a.backend)
            if trt_version is None:
                return f"{a.backend} is not installed here"
            from ncanvas_tui.engines.compat import gpu_info

            if a.gpu_name != NO_GPU:
                gpu = gpu_info()
                gpu_name, cc = gpu.name, gpu.compute_capability or None
        try:
            store.check(a, trt_version=trt_version, gpu_name=gpu_name, compute_capability=cc,
                        model_sha256=sha, verify_hash=verify_hash)
        except EngineError as e:
            return str(e).removeprefix(f"{a.path}: ")
        return None


def list_artefacts(settings: Settings) -> list[Artefact]:
    """Every artefact in ``[paths].engines``; ``problem`` says why one cannot run here."""
    store = EngineStore(settings)
    here = _Here(settings)
    out = store.list()
    for a in out:
        a.problem = here.problem(store, a)
    return out


def _build_hint(model: str, backend: str, precision: str, calibrator: str | None) -> str:
    cal = f" --calibrator {calibrator}" if calibrator else ""
    return f"`ncanvas build {model} --precision {precision} --backend {backend}{cal}`"


def select(settings: Settings, sel: Selection) -> Target:
    """The ``Target`` for ``sel`` (see the module doc). EngineError (exit 2) when none or several."""
    from ncanvas_tui.backends import resolve_backend
    from ncanvas_tui.vision import catalog

    store = EngineStore(settings)
    here = _Here(settings)
    if sel.artefact:
        a = store.get(sel.artefact)
        if a is None:
            raise EngineError(f"no artefact {sel.artefact!r} in {store.root} (`ncanvas engines list` shows "
                              f"their ids)")
        return _target(settings, store, here, catalog.find(settings, a.model), a)
    entry = catalog.find(settings, sel.model)
    backend = resolve_backend(sel.backend or settings.inference.backend)
    precision = sel.precision or settings.inference.precision
    if precision == "auto":  # the one place "auto" is resolved: what the backend runs best, no note
        precision = "fp32" if backend == "onnxruntime" else "fp16"
    if backend == "onnxruntime" and precision in ("fp32", "fp16"):
        notes = () if precision == "fp32" else (
            "fp16 requested: ONNX Runtime on the CPU runs fp32 (fp16 is for the GPU)",)
        return Target(entry=entry, backend=backend, precision="fp32", path=entry.require(settings),
                      max_batch=settings.build.batch[2], notes=notes)
    matches = [a for a in store.list()
               if a.model == entry.name and a.backend == backend and a.precision == precision
               and (sel.calibrator is None or a.calibrator == sel.calibrator)
               and (sel.keep_float is None or tuple(a.keep_float) == tuple(sel.keep_float))]
    usable = [a for a in matches if here.problem(store, a) is None]
    if len(usable) > 1 and sel.keep_float is None and any(not a.keep_float for a in usable):
        usable = [a for a in usable if not a.keep_float]  # "any": plain int8 before a kept-float variant
    if len(usable) > 1:
        ids = "; ".join(f"{a.id} ({_differs(a)})" for a in usable)
        raise EngineError(f"{len(usable)} {backend} {precision} artefacts of {entry.name} match: {ids}; "
                          f"choose one with --artefact ID (or narrow with --calibrator / --keep-float)")
    if usable:
        return _target(settings, store, here, entry, usable[0])
    if matches:
        a = matches[0]
        problem = here.problem(store, a) or "unusable"
        hint = "" if "rebuild with" in problem else (
            f"; rebuild with {_build_hint(entry.name, backend, precision, a.calibrator)} --force")
        raise EngineError(f"{a.path}: {problem}{hint}")
    if backend == "onnxruntime" and precision == "int8":
        from ncanvas_tui.engines.plan import load_source

        if load_source(settings, entry).qat:  # a QAT model runs as it is
            return Target(entry=entry, backend=backend, precision="int8", path=entry.require(settings),
                          max_batch=settings.build.batch[2],
                          notes=("the model already has Q/DQ nodes (QAT): run as it is",))
    raise EngineError(f"{store.root}: no {backend} {precision} artefact of {entry.name}"
                      + (f" calibrated with {sel.calibrator}" if sel.calibrator else "")
                      + f"; build it with {_build_hint(entry.name, backend, precision, sel.calibrator)}")


def _differs(a: Artefact) -> str:
    """What tells ``a`` apart from its siblings, for the 'several match' message."""
    parts = [a.calibrator or "", f"keep-float {','.join(a.keep_float)}" if a.keep_float else "",
             f"DLA core {a.dla_core}" if a.dla_core is not None else "",
             f"batch {'-'.join(map(str, a.batch))}" if any(a.batch) else "", a.created]
    return ", ".join(p for p in parts if p)


def _target(settings: Settings, store: EngineStore, here: _Here, entry: ModelEntry, a: Artefact) -> Target:
    problem = here.problem(store, a, verify_hash=True)
    if problem:
        raise EngineError(f"{a.path}: {problem}")
    max_batch = a.batch[2] if a.batch[2] else settings.build.batch[2]
    return Target(entry=entry, backend=a.backend, precision=a.precision, path=a.path, artefact=a,
                  max_batch=max_batch)
