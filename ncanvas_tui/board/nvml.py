"""A desktop NVIDIA GPU through NVML (``nvidia-ml-py``, imported lazily; the ``gpu`` extra).

One ``nvmlInit`` per process, on first use; when the library, the driver or the GPU is
missing every reading is None. Off while replaying a captured board (``NCANVAS_SYSROOT``):
a captured tree has no live GPU library. Which GPU: the first of ``CUDA_VISIBLE_DEVICES``
(an index or a ``GPU-...`` UUID), else index 0.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from ncanvas_tui.board.sysroot import replaying

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}
#: clock event reasons that mean the GPU is being slowed down (not idle, not an application clock)
_SLOWDOWN = ("SwPowerCap", "HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown")


def device() -> tuple[Any, Any] | None:
    """(pynvml module, handle) of the GPU that does the work, or None."""
    if replaying():
        return None
    with _LOCK:
        if "handle" not in _STATE:
            _STATE["handle"] = _open()
        handle = _STATE["handle"]
    return (_STATE["nvml"], handle) if handle is not None else None


def _open() -> Any:
    try:
        import pynvml
    except Exception as e:  # noqa: BLE001 - not installed (or broken): no NVML readings
        log.debug("NVML: pynvml not importable: %s", e)
        return None
    try:
        pynvml.nvmlInit()
        first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
        if first.startswith(("GPU-", "MIG-")):
            handle = pynvml.nvmlDeviceGetHandleByUUID(first)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)
    except Exception as e:  # noqa: BLE001 - no driver, no GPU, bad CUDA_VISIBLE_DEVICES
        log.debug("NVML: no GPU: %s", e)
        return None
    _STATE["nvml"] = pynvml
    return handle


def _call(fn: str, *args: Any) -> Any:
    dev = device()
    if dev is None:
        return None
    nvml, handle = dev
    try:
        return getattr(nvml, fn)(handle, *args)
    except Exception:  # noqa: BLE001 - NVML_ERROR_NOT_SUPPORTED and friends: unknown
        return None


def name() -> str | None:
    n = _call("nvmlDeviceGetName")
    return n.decode() if isinstance(n, bytes) else n


def power_w() -> float | None:
    mw = _call("nvmlDeviceGetPowerUsage")
    return None if mw is None else mw / 1e3


def energy_j() -> float | None:
    """The GPU's energy counter (J since the driver loaded; Volta and newer), or None."""
    mj = _call("nvmlDeviceGetTotalEnergyConsumption")
    return None if mj is None else mj / 1e3


def state() -> dict[str, Any] | None:
    """{"name", "power_w", "load_pct", "mhz", "max_mhz", "temp_c", "throttled"} or None without a GPU."""
    dev = device()
    if dev is None:
        return None
    nvml = dev[0]
    util = _call("nvmlDeviceGetUtilizationRates")
    return {"name": name(), "power_w": power_w(),
            "load_pct": None if util is None else float(util.gpu),
            "mhz": _call("nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_GRAPHICS),
            "max_mhz": _call("nvmlDeviceGetMaxClockInfo", nvml.NVML_CLOCK_GRAPHICS),
            "temp_c": _call("nvmlDeviceGetTemperature", nvml.NVML_TEMPERATURE_GPU),
            "throttled": throttled()}


def throttled() -> bool | None:
    dev = device()
    if dev is None:
        return None
    nvml = dev[0]
    reasons = _call("nvmlDeviceGetCurrentClocksEventReasons")
    if reasons is None:
        reasons = _call("nvmlDeviceGetCurrentClocksThrottleReasons")
    if reasons is None:
        return None
    mask = 0
    for r in _SLOWDOWN:
        mask |= getattr(nvml, f"nvmlClocksEventReason{r}", getattr(nvml, f"nvmlClocksThrottleReason{r}", 0))
    return bool(reasons & mask)
