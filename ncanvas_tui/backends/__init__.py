"""Backends: TensorRT, TensorRT-RTX and ONNX Runtime behind one interface.

``open_backend`` makes the backend for one file (an ONNX for ONNX Runtime, an engine for
TensorRT) that the artefact selection (``engines.artefacts.select``) chose and checked; the
actual loading happens in ``backend.load()``, in the worker thread. Backends never look for,
build or check artefacts themselves.
"""

from __future__ import annotations

from pathlib import Path

from ncanvas_tui.backends.base import Backend, BackendInfo, resolve_backend
from ncanvas_tui.errors import BackendError

__all__ = ["Backend", "BackendInfo", "open_backend", "resolve_backend"]


def open_backend(name: str, path: Path, *, precision: str, max_batch: int, input_size: int | None = None,
                 notes: tuple[str, ...] = ()) -> Backend:
    """An unloaded backend ``name`` (tensorrt | tensorrt-rtx | onnxruntime) for the file ``path``."""
    be: Backend
    if name == "onnxruntime":
        from ncanvas_tui.backends.onnxruntime import OnnxRuntimeBackend, default_threads

        be = OnnxRuntimeBackend(path, precision=precision, max_batch=max_batch, input_size=input_size,
                                threads=default_threads())
    elif name in ("tensorrt", "tensorrt-rtx"):
        from ncanvas_tui.backends.tensorrt import TensorRTBackend

        be = TensorRTBackend(name, path, precision=precision, max_batch=max_batch)
    else:
        raise BackendError(f"unknown backend {name!r} (auto | tensorrt | tensorrt-rtx | onnxruntime)")
    be.info.notes.extend(notes)
    return be
