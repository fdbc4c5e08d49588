"""Is the engine (or quantized model) still the model? Compare it with fp32 ONNX Runtime.

Both sides are ``Classifier``s of the same catalog entry, fed the very same
preprocessed batches: the reference is the fp32 ONNX on ONNX Runtime (CPU), the
candidate is what ``--backend``/``--precision`` run (a TensorRT engine, a Q/DQ
int8 ONNX, ...). Per image and in total: top-1 agreement, top-5 overlap
(|top5_ref & top5_candidate| / 5), max and mean absolute difference of the logits.

The result is stored beside the artefact the candidate ran, as
``<artefact>.verify.json`` (written atomically), keyed by the artefact's sha256 so a
rebuilt engine never shows an old verdict (``load_verify``). Only artefacts in
``[paths].engines`` get one; the reference model itself is never written beside.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ncanvas_tui.errors import ImageError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress

if TYPE_CHECKING:
    from ncanvas_tui.engines.artefacts import Selection
    from ncanvas_tui.settings import Settings

VERIFY_SUFFIX = ".verify.json"
TOP5 = 5


@dataclass
class VerifyResult:
    model: str
    backend: str
    precision: str
    id: str | None = None             # the artefact compared (None: the source ONNX itself)
    calibrator: str | None = None
    images: int = 0
    top1_agreement: float = 0.0
    top5_overlap: float = 0.0
    max_abs_diff: float = 0.0
    mean_abs_diff: float = 0.0
    per_image: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    reference: dict[str, str] = field(default_factory=dict)
    artefact: str = ""
    artefact_sha256: str = ""
    stored: str | None = None
    seconds: float = 0.0
    created: str = ""
    notes: list[str] = field(default_factory=list)
    #: ``verify --layers``: the quantizable layers, most sensitive first ({"name", "op", "sensitivity"})
    layers: list[dict[str, Any]] | None = None
    layers_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        who = " ".join(x for x in (self.model, self.backend, self.precision, self.calibrator or "",
                                   f"({self.id})" if self.id else "") if x)
        return (f"verify {who}: top-1 agreement {self.top1_agreement:.0%}, top-5 overlap "
                f"{self.top5_overlap:.0%}, max abs diff {self.max_abs_diff:.3g} on {self.images} images")


def verify_path(artefact: Path) -> Path:
    """Where the verify result of an engine / quantized model lives."""
    return artefact.with_name(artefact.name + VERIFY_SUFFIX)


def load_verify(artefact: Path) -> dict[str, Any] | None:
    """The stored verify result of ``artefact``, or None (none, unreadable, or for an older build)."""
    import json

    from ncanvas_tui.vision.catalog import sha256_file

    p = verify_path(Path(artefact))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("artefact_sha256") != sha256_file(Path(artefact)):
            return None
    except (OSError, ValueError):
        return None
    return data


def image_list(settings: Settings, images: Sequence[str] | None) -> tuple[list[str], list[dict[str, str]]]:
    """The images to compare on: the given files/folders, else the calibration folder."""
    from ncanvas_tui.vision.preprocess import expand_paths

    if not images:
        from ncanvas_tui.engines.calibrate import calibration_images

        return [str(p) for p in calibration_images(Path(settings.paths.calibration))], []
    return expand_paths(list(images))


def compare(ref: np.ndarray, cand: np.ndarray, k: int = TOP5) -> dict[str, Any]:
    """Per-row comparison of two [N, classes] logit arrays."""
    if ref.shape != cand.shape:
        raise ValueError(f"reference {ref.shape} vs candidate {cand.shape}")
    k = min(k, ref.shape[1])
    ref_top = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    cand_top = np.argsort(-cand, axis=1, kind="stable")[:, :k]
    diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
    return {
        "top1_agree": ref_top[:, 0] == cand_top[:, 0],
        "top5_overlap": np.array([len(set(a) & set(b)) / k for a, b in zip(ref_top, cand_top)]),
        "max_abs_diff": diff.max(axis=1),
        "mean_abs_diff": diff.mean(axis=1),
        "ref_top1": ref_top[:, 0],
        "cand_top1": cand_top[:, 0],
    }


def verify(settings: Settings, selection: Selection, images: Sequence[str] | None = None, *,
           progress: Progress = no_progress, cancel: CancelToken = NEVER, store: bool = True,
           layers: bool = False) -> VerifyResult:
    """Compare the artefact ``selection`` chooses with fp32 ONNX Runtime (run it in the GPU worker:
    TensorRT needs its CUDA context). See the module doc. ``layers``: then rank the quantizable
    layers by sensitivity (``engines.sensitivity``, on ONNX Runtime whatever the backend)."""
    from ncanvas_tui.engines.artefacts import select
    from ncanvas_tui.vision.catalog import sha256_file
    from ncanvas_tui.vision.classify import Classifier
    from ncanvas_tui.vision.labels import label
    from ncanvas_tui.vision.preprocess import LoadedImage

    t_start = time.perf_counter()
    cand = Classifier(settings, target=select(settings, selection))
    ref = Classifier(settings, cand.entry.name, backend="onnxruntime", precision="fp32")
    paths, errors = image_list(settings, images)
    ref_be = ref.load()
    cand_be = cand.load()
    res = VerifyResult(model=ref.entry.name, backend=cand_be.info.name, precision=cand_be.info.precision,
                       errors=errors, notes=list(cand_be.info.notes), id=cand.target.id,
                       calibrator=cand.target.artefact.calibrator if cand.target.artefact else None,
                       reference={"backend": "onnxruntime", "precision": "fp32", "model": ref_be.info.model_path},
                       artefact=cand_be.info.model_path)
    if Path(cand_be.info.model_path).resolve() == Path(ref_be.info.model_path).resolve() \
            and cand_be.info.name == "onnxruntime":
        res.notes.append("the candidate runs the reference model itself: agreement is 1.0 by construction")
    step = max(1, min(ref_be.info.max_batch, cand_be.info.max_batch))
    done = 0
    diffs_max: list[float] = []
    for i in range(0, len(paths), step):
        cancel.check("verify")
        chunk = paths[i:i + step]
        loaded = ref.load_images(chunk)
        good = [x for x in loaded if isinstance(x, LoadedImage)]
        for path, x in zip(chunk, loaded):
            if isinstance(x, ImageError):
                res.errors.append({"image": path, "error": str(x)})
        if good:
            batch = ref.normalize([g.rgb for g in good])
            r = ref_be.infer(batch)
            c = cand_be.infer(batch)
            cmp = compare(r, c)
            n_classes = r.shape[1]
            for j, g in enumerate(good):
                ri, ci = int(cmp["ref_top1"][j]), int(cmp["cand_top1"][j])
                res.per_image.append({
                    "image": g.path,
                    "top1": {"index": ci, "label": label(ci, n_classes)},
                    "reference_top1": {"index": ri, "label": label(ri, n_classes)},
                    "top1_agree": bool(cmp["top1_agree"][j]),
                    "top5_overlap": round(float(cmp["top5_overlap"][j]), 4),
                    "max_abs_diff": round(float(cmp["max_abs_diff"][j]), 6),
                    "mean_abs_diff": round(float(cmp["mean_abs_diff"][j]), 6),
                })
                diffs_max.append(float(cmp["max_abs_diff"][j]))
        done += len(chunk)
        progress(done, len(paths), f"{len(res.per_image)} compared")
    if not res.per_image:
        first = res.errors[0]["error"] if res.errors else "no images given"
        raise ImageError(f"verify: no image could be compared ({first})")
    per = res.per_image
    res.images = len(per)
    res.top1_agreement = round(sum(p["top1_agree"] for p in per) / len(per), 4)
    res.top5_overlap = round(sum(p["top5_overlap"] for p in per) / len(per), 4)
    res.max_abs_diff = round(max(diffs_max), 6)
    res.mean_abs_diff = round(sum(p["mean_abs_diff"] for p in per) / len(per), 6)
    res.seconds = round(time.perf_counter() - t_start, 3)
    res.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    artefact = Path(cand_be.info.model_path)
    if artefact.is_file():
        res.artefact_sha256 = sha256_file(artefact)
    if store and artefact.is_file() and _inside(artefact, Path(settings.paths.engines)):
        from ncanvas_tui.engines.store import atomic_write_json

        target = verify_path(artefact)
        atomic_write_json(target, {**res.as_dict(), "stored": str(target)})
        res.stored = str(target)
    ref.close()
    cand.close()
    if layers:
        from ncanvas_tui.engines.sensitivity import rank_layers

        ranked = rank_layers(settings, res.model, backend=res.backend,
                             calibrator=res.calibrator or selection.calibrator, progress=progress, cancel=cancel)
        res.layers, res.layers_note = ranked["layers"], (f"{ranked['note']}; {ranked['metric']} "
                                                         f"({ranked['images']} images, {ranked['seconds']:.1f} s)")
    return res


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def format_text(res: dict[str, Any]) -> str:
    """The human-readable verify report (one line per image, then the totals)."""
    ident = f" {res['calibrator']}" if res.get("calibrator") else ""
    ident += f" (artefact {res['id']})" if res.get("id") else ""
    lines = [(f"{res['model']}: {res['backend']} {res['precision']}{ident} vs ONNX Runtime fp32 "
             f"on {res['images']} image(s)")]
    width = max((len(os.path.basename(p["image"])) for p in res["per_image"]), default=5)
    lines.append(f"  {'image':<{width}}  top1  top5   max|d|   mean|d|  candidate / reference")
    for p in res["per_image"]:
        mark = "ok " if p["top1_agree"] else "DIFF"
        who = p["top1"]["label"] if p["top1_agree"] else f"{p['top1']['label']} / {p['reference_top1']['label']}"
        lines.append(f"  {os.path.basename(p['image']):<{width}}  {mark:<4}  {p['top5_overlap']:.2f}  "
                     f"{p['max_abs_diff']:8.4f}  {p['mean_abs_diff']:8.4f}  {who}")
    lines.append(f"top-1 agreement {res['top1_agreement'] * 100:.1f}%, top-5 overlap "
                 f"{res['top5_overlap'] * 100:.1f}%, max |diff| {res['max_abs_diff']:.4f}, "
                 f"mean |diff| {res['mean_abs_diff']:.5f} ({res['seconds']:.1f} s)")
    for e in res["errors"]:
        lines.append(f"ERROR {e['error']}")
    lines.extend(f"note: {n}" for n in res.get("notes", []))
    if res.get("stored"):
        lines.append(f"saved: {res['stored']}")
    if res.get("layers") is not None:
        from ncanvas_tui.bench import format_layers

        lines.append(format_layers(res["layers"], res.get("layers_note", ""), value="sensitivity"))
    return "\n".join(lines)
