"""Calibration data: real images from ``[paths].calibration``, preprocessed per model.

Used by explicit quantization (ONNX Runtime ``quantize_static``) and by TensorRT's
implicit INT8 calibration (Polygraphy ``Calibrator``). Never random data: a missing
or empty folder, or fewer images than one OPT batch, is an error naming the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ncanvas_tui.errors import EngineError, ImageError
from ncanvas_tui.vision.preprocess import Normalizer, is_image_name, load_image

if TYPE_CHECKING:
    from ncanvas_tui.settings import Settings
    from ncanvas_tui.vision.catalog import ModelEntry, Preprocess

ProgressFn = Callable[[int, int, str], None]


def calibration_images(folder: Path, *, need: int = 1) -> list[Path]:
    """The image files in ``folder`` (sorted, recursive one level); at least ``need`` of them."""
    folder = Path(folder)
    from ncanvas_tui.resources import sample_photos

    if not folder.exists():
        raise EngineError(f"{folder}: calibration folder not found; put 32+ ordinary photos there "
                          f"(or set [paths].calibration) for INT8 calibration; to try it first, copy "
                          f"the sample photos in {sample_photos()}")
    if not folder.is_dir():
        raise EngineError(f"{folder}: [paths].calibration is not a folder")
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p.name))
        if not files:
            files = sorted(p for p in folder.glob("*/*") if p.is_file() and is_image_name(p.name))
    except PermissionError:
        raise EngineError(f"{folder}: calibration folder is not readable (permission denied)") from None
    if not files:
        raise EngineError(f"{folder}: calibration folder has no images; put 32+ ordinary photos there "
                          f"for INT8 calibration (random data is never used); to try it first, copy "
                          f"the sample photos in {sample_photos()}")
    if len(files) < need:
        raise EngineError(f"{folder}: {len(files)} calibration image(s), fewer than the OPT batch of {need}; "
                          f"add images or lower the OPT size of [build].batch")
    return files


@dataclass
class CalibrationSet:
    """Preprocessed calibration batches of exactly ``batch`` images (the OPT shape)."""

    folder: Path
    files: list[Path]
    batch: int
    batches: int
    skipped: list[str]
    #: images used (the last batch may be partial when ``partial``)
    count: int = 0
    partial: bool = False

    @property
    def used(self) -> int:
        return self.count or self.batch * self.batches


def plan(settings: Settings, *, batch: int, max_batches: int | None = None,
         folder: Path | None = None, partial: bool = False) -> CalibrationSet:
    """Which images calibration will use: at most ``calibration_batches`` batches of ``batch``.

    ``partial`` (ONNX Runtime, any batch size): every image up to the limit, the last batch
    may be smaller. Otherwise (TensorRT, fixed OPT shape): full batches only, and at least one."""
    folder = Path(folder or settings.paths.calibration)
    files = calibration_images(folder, need=1 if partial else batch)
    limit = max_batches if max_batches is not None else settings.build.calibration_batches
    if partial:
        count = min(len(files), limit * batch)
        return CalibrationSet(folder=folder, files=files, batch=batch, batches=-(-count // batch),
                              skipped=[], count=count, partial=True)
    n = min(len(files) // batch, limit)
    return CalibrationSet(folder=folder, files=files, batch=batch, batches=n, skipped=[], count=n * batch)


def iter_batches(cal: CalibrationSet, pre: Preprocess, *, progress: ProgressFn | None = None,
                 cancelled: Callable[[], bool] | None = None, label: str = "calibration batch"
                 ) -> Iterator[np.ndarray]:
    """float32 NCHW arrays of (batch, 3, S, S) (the last one smaller when ``cal.partial``).
    Unreadable images are skipped (listed in ``cal.skipped``) and the next ones fill the batch;
    when too few readable images are left for a full batch, calibration stops there (an error
    before the first batch). Reports ``label i/N`` through ``progress``."""
    from ncanvas_tui.errors import CancelledError

    norm = Normalizer(pre)
    pending = iter(cal.files)
    for i in range(cal.batches):
        if cancelled is not None and cancelled():
            raise CancelledError("calibration cancelled")
        want = min(cal.batch, cal.used - i * cal.batch)
        crops: list[np.ndarray] = []
        while len(crops) < want:
            path = next(pending, None)
            if path is None:
                break
            try:
                crops.append(load_image(path, pre).rgb)
            except ImageError as e:
                cal.skipped.append(str(e))
        if len(crops) < want and not (cal.partial and crops):
            if i == 0:
                raise EngineError(f"{cal.folder}: fewer readable calibration images than the batch of "
                                  f"{cal.batch} ({len(cal.skipped)} unreadable, first: "
                                  f"{cal.skipped[0] if cal.skipped else '-'})")
            return
        if progress is not None:
            progress(i + 1, cal.batches, f"{label} {i + 1}/{cal.batches}")
        yield norm(crops)


class Feed:
    """The data loader given to TensorRT's calibrator: ``{input_name: batch}`` per batch.

    TensorRT's Python ``get_batch`` trampoline takes any exception from the loader for "end of
    data": calibration would end early and the engine be built anyway. The Feed keeps the
    exception instead (cancel, Ctrl-C, unreadable images), ends the data, and
    ``raise_if_failed()`` raises it again after the build."""

    def __init__(self, batches: Iterator[np.ndarray], input_name: str) -> None:
        self.batches = batches
        self.input_name = input_name
        self.served = 0
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        try:
            for x in self.batches:
                self.served += 1
                yield {self.input_name: x}
        except BaseException as e:  # noqa: BLE001 - kept, raised again by raise_if_failed
            self.error = e

    def raise_if_failed(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def sample_inputs(settings: Settings, entry: ModelEntry, *, count: int = 4) -> tuple[np.ndarray, str]:
    """A few real images for output comparisons (prep, checks): [paths].calibration, else the
    bundled sample photos, else a deterministic synthetic batch. Returns (batch, where-from)."""
    from ncanvas_tui.resources import sample_photos

    for folder in (Path(settings.paths.calibration), sample_photos()):
        try:
            files = calibration_images(folder)
        except EngineError:
            continue
        crops = []
        for p in files:
            try:
                crops.append(load_image(p, entry.preprocess).rgb)
            except ImageError:
                continue
            if len(crops) == count:
                break
        if crops:
            return Normalizer(entry.preprocess)(crops), f"{len(crops)} image(s) from {folder}"
    s = entry.preprocess.input_size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((count, 3, s, s)).astype(np.float32)
    return x, f"{count} synthetic input(s) (no images found)"
