"""The artefact library in ``[paths].engines``: built artefacts + JSON sidecars, atomic writes.

Every built thing is an ``Artefact`` with an ``id``: a short hash of its ``ArtefactKey`` (model
sha256, backend + version, precision, calibrator, calibration image set, batch profile, float-kept
layers, DLA core, engine-changing options, GPU). File name: ``<model>.<backend>.<precision>.<id>``
+ ``.plan`` (TensorRT / TensorRT-RTX) or ``.onnx`` (an ONNX Runtime Q/DQ model), and its sidecar
``<file>.json`` with what it was built from and for ("none (build-only)" as the GPU of a
TensorRT-RTX engine built on a machine without a GPU). Intermediates (sanitized, fp16 and
TensorRT Q/DQ ONNX files) have no sidecar and are not artefacts.

``EngineStore.check`` refuses a stale or foreign engine (other GPU, other TensorRT
version, changed ONNX, corrupt or truncated file, missing or corrupt sidecar)
BEFORE anything deserializes it, with the command that fixes it.

Every write goes to a temp file in the same folder, is fsynced, then renamed
over the target (``atomic_write_bytes``); a failure (disk full, Ctrl-C) removes
the temp file, so a half-written engine never exists under its real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncanvas_tui.errors import EngineError
from ncanvas_tui.files import FILE_MODE, TEMP_PREFIX, atomic_path, atomic_write_bytes, atomic_write_json

__all__ = ["FILE_MODE", "NO_GPU", "TEMP_PREFIX", "Artefact", "ArtefactKey", "EngineStore", "atomic_path",
           "atomic_write_bytes", "atomic_write_json"]

if TYPE_CHECKING:
    from ncanvas_tui.settings import Settings

ENGINE_SUFFIX = ".plan"
ONNX_SUFFIX = ".onnx"
SIDECAR_SUFFIX = ".json"
SIDECAR_VERSION = 2
#: characters of the artefact id (a sha256 prefix of its key)
ID_LENGTH = 10
#: build locks live here (one file per artefact id / intermediate)
LOCK_DIR = ".locks"
NO_GPU = "none (build-only)"

def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def artefact_file_name(key: ArtefactKey) -> str:
    """``<model>.<backend>.<precision>.<id>.plan`` (TensorRT) or ``.onnx`` (ONNX Runtime)."""
    suffix = ONNX_SUFFIX if key.backend == "onnxruntime" else ENGINE_SUFFIX
    return f"{key.model}.{key.backend}.{key.precision}.{key.id}{suffix}"


def rebuild_hint(model: str, precision: str, backend: str) -> str:
    return f"rebuild with `ncanvas build {model} --precision {precision} --backend {backend} --force`"


@dataclass(frozen=True)
class ArtefactKey:
    """What makes one built artefact different from another: its ``id`` is a short hash of all of it.

    ``options`` holds the build options that change what is built (``sparse``, later ``strict_int8``,
    ``tf32``); tuning that does not (opt level, workspace) is recorded in the sidecar, not keyed."""

    model: str
    model_sha256: str
    backend: str                      # tensorrt | tensorrt-rtx | onnxruntime
    backend_version: str              # TensorRT version; "" for ONNX Runtime (a Q/DQ ONNX is portable)
    precision: str                    # fp32 | fp16 | int8
    batch: tuple[int, int, int]
    gpu: str                          # "<name> (sm X.Y)", NO_GPU for an RTX build-only engine, "cpu"
    calibrator: str | None = None     # int8 calibrated: entropy2 | minmax
    calibration_set: str | None = None  # hash of the calibration images (names, sizes, mtimes)
    keep_float: tuple[str, ...] = ()  # layers kept in float in an int8 build
    dla_core: int | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:ID_LENGTH]


_Batch = list  # ``EngineStore.list`` shadows the builtin inside the class body


@dataclass
class Artefact:
    """One built artefact (a TensorRT / TensorRT-RTX plan, or an ONNX Runtime Q/DQ model), as its
    sidecar describes it. Intermediates (sanitized / fp16 / TensorRT Q/DQ ONNX) have no sidecar and
    are never artefacts."""

    path: Path
    model: str
    backend: str                 # tensorrt | tensorrt-rtx | onnxruntime
    precision: str               # fp32 | fp16 | int8
    batch: list[int]             # [min, opt, max]
    id: str = ""
    backend_version: str = ""
    model_sha256: str = ""
    engine_sha256: str = ""      # sha256 of the artefact file itself
    source_onnx: str = ""        # the ONNX actually parsed / quantized (prep / fp16 / Q/DQ copy)
    gpu_name: str = NO_GPU
    compute_capability: str = ""
    calibrator: str | None = None   # entropy2 | minmax (int8 only)
    calibration_set: str | None = None
    calibration_images: int = 0
    quantization: str | None = None  # implicit (calibrated) | explicit (Q/DQ)
    keep_float: list[str] = field(default_factory=list)
    dla_core: int | None = None
    gpu_fallback_layers: int | None = None   # DLA: layers that run on the GPU instead
    options: dict[str, str] = field(default_factory=dict)
    opt_level: int | None = None
    sparse: bool = False
    workspace_mib: int | None = None
    build_seconds: float = 0.0
    size: int = 0
    created: str = ""
    notes: list[str] = field(default_factory=list)
    #: the board's run conditions while it was built (power mode, clocks, temperatures; unknown: None)
    conditions: dict[str, Any] = field(default_factory=dict)
    #: why this artefact cannot be used (sidecar missing/corrupt, file gone, stale); None when fine
    problem: str | None = None

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + SIDECAR_SUFFIX)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        """``model backend precision [calibrator] id`` for messages and lists."""
        cal = f" {self.calibrator}" if self.calibrator else ""
        kf = f" keep-float {','.join(self.keep_float)}" if self.keep_float else ""
        return f"{self.id or '?'} {self.model} {self.backend} {self.precision}{cal}{kf}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["file"] = self.path.name
        return d

    def sidecar_dict(self) -> dict[str, Any]:
        d = self.as_dict()
        for k in ("path", "problem"):
            d.pop(k, None)
        d["sidecar_version"] = SIDECAR_VERSION
        return d

    @classmethod
    def from_sidecar(cls, path: Path, data: dict[str, Any]) -> Artefact:
        known = {f for f in cls.__dataclass_fields__ if f not in ("path", "problem")}
        kwargs = {k: v for k, v in data.items() if k in known}
        for req in ("model", "backend", "precision", "batch"):
            if req not in kwargs:
                raise ValueError(f"no {req!r}")
        batch = kwargs["batch"]
        if not (isinstance(batch, list) and len(batch) == 3 and all(isinstance(b, int) for b in batch)):
            raise ValueError(f"bad batch {batch!r}")
        rec = cls(path=path, **kwargs)
        if not rec.id:
            rec.problem = f"{path.name}: built by an older ncanvas (no artefact id)"
        return rec


class EngineStore:
    """The engines folder of one settings file: artefacts, their sidecars, caches and build locks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.paths.engines)

    # -- naming -------------------------------------------------------------------------------
    def path_for(self, key: ArtefactKey) -> Path:
        return self.root / artefact_file_name(key)

    def timing_cache_path(self, backend: str, backend_version: str, gpu_name: str) -> Path:
        gpu = "".join(c if c.isalnum() else "_" for c in gpu_name).strip("_") or "nogpu"
        return self.root / f"{backend}-{backend_version}.{gpu}.timing.cache"

    def calibration_cache_path(self, model: str, model_sha256: str, calibrator: str, batch: int,
                               backend_version: str, image_set: str) -> Path:
        """TensorRT's INT8 calibration cache: per model, calibrator, OPT batch, TensorRT version and
        calibration image set (TensorRT ignores a cache of another version and asks for data again)."""
        return self.root / (f"{model}.{model_sha256[:12]}.{calibrator}.b{batch}.trt{backend_version}."
                            f"{image_set}.calib.cache")

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between processes (``flock`` on ``.locks/<name>.lock``): two builds of
        the same thing wait for each other instead of writing over each other."""
        folder = self.root / LOCK_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- reading ------------------------------------------------------------------------------
    def _load(self, artefact: Path) -> Artefact:
        sidecar = artefact.with_name(artefact.name + SIDECAR_SUFFIX)
        guess = _guess_from_name(artefact)
        if not sidecar.is_file():
            return Artefact(path=artefact, **guess, problem=f"{sidecar.name}: sidecar missing")
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            rec = Artefact.from_sidecar(artefact, data)
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
            return Artefact(path=artefact, **guess, problem=f"{sidecar.name}: corrupt sidecar ({e})")
        try:
            size = artefact.stat().st_size
        except OSError:
            size = -1
        if size < 0:
            rec.problem = f"{artefact.name}: file missing (sidecar only)"
        elif rec.size and size != rec.size:
            rec.problem = f"{artefact.name}: size {size} bytes, sidecar says {rec.size} (truncated or replaced)"
        return rec

    def list(self) -> list[Artefact]:
        """Every artefact in the folder (sorted by name), with ``problem`` set where unusable.

        TensorRT plans are listed with or without a sidecar (a plan without one is unusable); an ONNX
        file is an artefact only with its sidecar (others are intermediates); a sidecar whose file is
        gone is listed with that problem."""
        if not self.root.is_dir():
            return []
        out: dict[str, Artefact] = {}
        for p in sorted(self.root.glob(f"*{ENGINE_SUFFIX}")):
            if not p.name.startswith(TEMP_PREFIX):
                out[p.name] = self._load(p)
        for suffix in (ENGINE_SUFFIX, ONNX_SUFFIX):
            for sc in sorted(self.root.glob(f"*{suffix}{SIDECAR_SUFFIX}")):
                target = sc.with_name(sc.name[: -len(SIDECAR_SUFFIX)])
                if target.name not in out and not sc.name.startswith(TEMP_PREFIX):
                    out[target.name] = self._load(target)
        return [out[k] for k in sorted(out)]

    def get(self, artefact_id: str) -> Artefact | None:
        """The artefact whose id is (or starts with) ``artefact_id``; None when there is none.
        EngineError when a prefix matches several."""
        hits = [a for a in self.list() if a.id and a.id.startswith(artefact_id)]
        if len(hits) > 1:
            raise EngineError(f"artefact id {artefact_id!r} matches {len(hits)}: "
                              f"{', '.join(a.id for a in hits)}; give more characters")
        return hits[0] if hits else None

    def check(self, record: Artefact, *, trt_version: str | None, gpu_name: str | None,
              compute_capability: str | None, model_sha256: str | None, verify_hash: bool = True) -> None:
        """Raise EngineError when ``record`` must not be loaded here. Pass None to skip a check.

        A TensorRT-RTX engine built without a GPU ("none (build-only)") is not tied to a GPU."""
        hint = rebuild_hint(record.model, record.precision, record.backend)
        where = str(record.path)
        if record.problem:
            raise EngineError(f"{where}: {record.problem}; {hint}")
        if not record.path.is_file():
            raise EngineError(f"{where}: file missing; {hint}")
        if model_sha256 is not None and record.model_sha256 != model_sha256:
            raise EngineError(f"{where}: built for a changed ONNX (sha256 {record.model_sha256[:12]} "
                              f"!= {model_sha256[:12]} now); {hint}")
        if trt_version is not None and record.backend_version != trt_version:
            raise EngineError(f"{where}: engine built for TensorRT {record.backend_version or '?'}, this is "
                              f"{trt_version}; {hint}")
        if gpu_name is not None and record.gpu_name != NO_GPU and (
                record.gpu_name != gpu_name or (compute_capability is not None
                                                and record.compute_capability != compute_capability)):
            raise EngineError(f"{where}: engine built for GPU {record.gpu_name} "
                              f"(sm {record.compute_capability or '?'}), this is {gpu_name} "
                              f"(sm {compute_capability or '?'}); {hint}")
        if verify_hash and record.engine_sha256:
            h = hashlib.sha256()
            with record.path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != record.engine_sha256:
                raise EngineError(f"{where}: file is corrupt (sha256 differs from its sidecar); {hint}")

    # -- writing ------------------------------------------------------------------------------
    def save(self, record: Artefact, data: bytes | memoryview | None = None) -> Artefact:
        """Write the artefact (``data``; None: ``record.path`` is already in place) then its sidecar,
        both atomically; the sidecar is written last, so an artefact whose sidecar write failed is
        removed again (never a file that looks like an artefact without its metadata)."""
        if data is not None:
            record.size = len(memoryview(data).cast("B"))
            record.engine_sha256 = sha256_bytes(data)
            atomic_write_bytes(record.path, data)
        else:
            record.size = record.path.stat().st_size
            record.engine_sha256 = _sha256_path(record.path)
        record.created = record.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record.problem = None
        try:
            atomic_write_json(record.sidecar, record.sidecar_dict())
        except BaseException:
            with contextlib.suppress(OSError):
                record.path.unlink()
            raise
        return record

    def delete(self, record: Artefact) -> None:
        for p in (record.path, record.sidecar, record.path.with_name(record.path.name + ".verify.json")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def clean_temp_files(self, older_than_s: float = 3600.0) -> int:
        """Remove temp files left by a process killed mid-write (SIGKILL, power loss); only old
        ones, so a build running in another process keeps its temp file."""
        n = 0
        if self.root.is_dir():
            cutoff = time.time() - older_than_s
            for p in self.root.glob(f"{TEMP_PREFIX}*"):
                with contextlib.suppress(OSError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()
                        n += 1
        return n


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _guess_from_name(path: Path) -> dict[str, Any]:
    """model/backend/precision from ``model.backend.precision.<id>.plan`` (best effort)."""
    stem = path.name.removesuffix(ENGINE_SUFFIX).removesuffix(ONNX_SUFFIX)
    parts = stem.split(".")
    if len(parts) >= 4:
        return {"model": ".".join(parts[:-3]), "backend": parts[-3], "precision": parts[-2],
                "batch": [0, 0, 0], "id": parts[-1]}
    return {"model": stem, "backend": "?", "precision": "?", "batch": [0, 0, 0]}
