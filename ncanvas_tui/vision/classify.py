"""Classify images: load + preprocess, batch (split above the max batch), infer, top-k.

Pure core: no UI, no threads of its own except a small decode pool. The GPU worker
runs ``Classifier.load`` and ``Classifier.classify`` in its thread; the CLI may call
them directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncanvas_tui.backends import Backend, open_backend
from ncanvas_tui.engines.artefacts import Selection, Target, select
from ncanvas_tui.errors import ImageError
from ncanvas_tui.progress import NEVER, CancelToken, Progress, no_progress
from ncanvas_tui.settings import Settings
from ncanvas_tui.vision.labels import label
from ncanvas_tui.vision.preprocess import LoadedImage, Normalizer, load_image

_POOL: ThreadPoolExecutor | None = None


def decode_pool() -> ThreadPoolExecutor:
    """Pillow releases the GIL while decoding and resizing: decode on every core."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                   thread_name_prefix="ncanvas-decode")
    return _POOL


def softmax_if_logits(x: np.ndarray) -> np.ndarray:
    """Rows that already are probabilities are kept; logits go through softmax."""
    x = x.astype(np.float32, copy=False)
    sums = x.sum(axis=1)
    if x.min() >= 0.0 and np.allclose(sums, 1.0, atol=1e-3):
        return x
    z = x - x.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    out: np.ndarray = z
    return out


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest per row, largest first."""
    k = min(k, probs.shape[1])
    idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(probs, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(vals, order, axis=1)


@dataclass
class InferResult:
    model: str
    backend: str
    precision: str
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=lambda: {"preprocess": 0.0, "infer": 0.0,
                                                                 "postprocess": 0.0})
    batches: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    artefact: str | None = None       # the artefact id (None: the source ONNX itself)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "precision": self.precision,
                "artefact": self.artefact,
                "results": self.results, "errors": self.errors,
                "timing_ms": {k: round(v, 3) for k, v in self.timing_ms.items()},
                "batches": self.batches, "notes": self.notes}


class Classifier:
    """One artefact (or the source ONNX) on its backend, loaded once, classifying any number of images.

    What runs is chosen by ``engines.artefacts.select`` from the model / backend / precision /
    calibrator / float-kept layers / artefact id given (None: the settings' values), or given
    as ``target``."""

    def __init__(self, settings: Settings, model: str | None = None, backend: str | None = None,
                 precision: str | None = None, top: int | None = None, *, calibrator: str | None = None,
                 keep_float: tuple[str, ...] | None = None, artefact: str | None = None,
                 target: Target | None = None) -> None:
        self.settings = settings
        self.target = target or select(settings, Selection(model=model, backend=backend, precision=precision,
                                                           calibrator=calibrator, keep_float=keep_float,
                                                           artefact=artefact))
        self.entry = self.target.entry
        self.top = top or settings.inference.top_k
        self.normalize = Normalizer(self.entry.preprocess)
        self.backend: Backend | None = None

    def load(self) -> Backend:
        if self.backend is None:
            t = self.target
            be = open_backend(t.backend, t.path, precision=t.precision, max_batch=t.max_batch,
                              input_size=self.entry.preprocess.input_size, notes=t.notes)
            be.load()
            self.backend = be
        return self.backend

    @property
    def max_batch(self) -> int:
        return self.load().info.max_batch

    def load_images(self, paths: Sequence[str]) -> list[LoadedImage | ImageError]:
        pre = self.entry.preprocess

        def one(p: str) -> LoadedImage | ImageError:
            try:
                return load_image(p, pre)
            except ImageError as e:
                return e

        if len(paths) == 1:
            return [one(paths[0])]
        return list(decode_pool().map(one, paths))

    def classify(self, paths: Sequence[str], *, progress: Progress = no_progress,
                 cancel: CancelToken = NEVER) -> InferResult:
        be = self.load()
        info = be.info
        res = InferResult(model=self.entry.name, backend=info.name, precision=info.precision,
                          notes=list(info.notes), artefact=self.target.id)
        step = max(1, info.max_batch)
        chunks = [list(paths[i:i + step]) for i in range(0, len(paths), step)]
        done = 0
        for chunk in chunks:
            cancel.check("classification")
            t0 = time.perf_counter()
            loaded = self.load_images(chunk)
            good = [x for x in loaded if isinstance(x, LoadedImage)]
            for path, x in zip(chunk, loaded):
                if isinstance(x, ImageError):
                    res.errors.append({"image": path, "error": str(x)})
            if not good:
                res.timing_ms["preprocess"] += (time.perf_counter() - t0) * 1e3
                done += len(chunk)
                continue
            batch = self.normalize([g.rgb for g in good])
            t1 = time.perf_counter()
            logits = be.infer(batch)
            t2 = time.perf_counter()
            probs = softmax_if_logits(logits)
            idx, vals = top_k(probs, self.top)
            n_classes = probs.shape[1]
            for g, ii, vv in zip(good, idx, vals):
                res.results.append({
                    "image": g.path,
                    "top": [{"index": int(i), "label": label(int(i), n_classes), "prob": round(float(v), 6)}
                            for i, v in zip(ii, vv)],
                })
            t3 = time.perf_counter()
            res.timing_ms["preprocess"] += (t1 - t0) * 1e3
            res.timing_ms["infer"] += (t2 - t1) * 1e3
            res.timing_ms["postprocess"] += (t3 - t2) * 1e3
            res.batches.append(len(good))
            done += len(chunk)
            progress(done, len(paths), f"batch of {len(good)}")
        return res

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
