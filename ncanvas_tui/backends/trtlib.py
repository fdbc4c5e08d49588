"""Importing TensorRT (``tensorrt`` or ``tensorrt_rtx``) for the runtime backend and the builder alike."""

from __future__ import annotations

from types import ModuleType

from ncanvas_tui.errors import BackendError

TRT_BACKENDS = ("tensorrt", "tensorrt-rtx")
_MODULE = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


def import_trt(backend: str) -> ModuleType:
    """The TensorRT module for ``backend`` (``tensorrt`` or ``tensorrt_rtx``). BackendError if missing.

    (``tensorrt-stubs`` installs a ``tensorrt`` folder of .pyi files that imports as an empty
    namespace package: a module without ``Builder`` is not TensorRT.)"""
    name = _MODULE.get(backend)
    if name is None:
        raise BackendError(f"backend {backend!r} is not a TensorRT backend (tensorrt | tensorrt-rtx)")
    try:
        module = __import__(name)
    except ImportError as e:
        pkg = "tensorrt-rtx-cu13 (pip install 'ncanvas[rtx]')" if backend == "tensorrt-rtx" else \
            "TensorRT (JetPack on a Jetson; pip install tensorrt on a desktop GPU)"
        raise BackendError(f"backend {backend}: cannot import {name} ({' '.join(str(e).split())[:160]}); "
                           f"install {pkg}") from None
    if not hasattr(module, "Builder"):
        raise BackendError(f"backend {backend}: the {name} module here has no Builder (only type stubs "
                           f"installed?); install the real TensorRT")
    return module


def available(backend: str) -> bool:
    """Whether the real TensorRT flavour of ``backend`` imports here."""
    try:
        import_trt(backend)
    except BackendError:
        return False
    return True


