"""Energy and run conditions around a benchmark.

``EnergyMeter(device)`` picks the power source of the device that does the work and notes
the conditions at the start; ``sampler()`` gives a ``PowerSampler`` per measured batch size;
``row(window, images_per_s)`` gives that row's energy fields; ``report()`` the top-level
``power``, ``conditions`` and ``warnings``. Without a source every energy figure is None.

Energy per image = average power / throughput (mJ = W / (images/s) x 1000) over the same
window as the row's latency and images/s; images per joule is its inverse.
"""

from __future__ import annotations

import statistics
from typing import Any

from ncanvas_tui.board import sysfs
from ncanvas_tui.board.power import PowerSampler, PowerSource, PowerWindow, power_source
from ncanvas_tui.board.state import conditions_snapshot
from ncanvas_tui.board.sysroot import Fs

#: readings a second while a batch size is measured (>= 10); each batch size runs for >= MIN_SAMPLES
HZ = 20.0
MIN_SAMPLES = 20


def backend_device(backend: str, device: str | None = None) -> str:
    """"gpu" for TensorRT flavours (and a CUDA ONNX Runtime), else "cpu"."""
    if backend.startswith("tensorrt") or "cuda" in str(device or "").lower():
        return "gpu"
    return "cpu"


class EnergyMeter:
    def __init__(self, device: str, *, fs: Fs | None = None, hz: float = HZ, min_samples: int = MIN_SAMPLES,
                 source: PowerSource | None = None) -> None:
        self.fs = fs or Fs()
        self.hz = hz
        self.min_samples = min_samples
        try:
            self.source = source if source is not None else power_source(device, self.fs)
        except Exception:  # noqa: BLE001 - no readable source: energy unknown, the bench still runs
            self.source = None
        self.start_conditions = conditions_snapshot(self.fs)
        self._oc0 = _safe(sysfs.oc_counters, self.fs)
        self.windows: list[PowerWindow] = []

    def sampler(self) -> PowerSampler | None:
        if self.source is None:
            return None
        return PowerSampler(self.source, hz=self.hz, min_samples=self.min_samples)

    def row(self, sampler: PowerSampler | None, images_per_s: float) -> dict[str, Any]:
        """The row's energy fields from its (stopped) sampler."""
        win = sampler.stop() if sampler is not None else None
        if win is not None:
            self.windows.append(win)
        avg = win.avg_w if win is not None else None
        out: dict[str, Any] = {"energy_mj_per_image": None, "images_per_joule": None, "power_w": None,
                               "power_samples": win.samples if win is not None else 0}
        if avg is not None and images_per_s > 0:
            out["power_w"] = round(avg, 3)
            out["energy_mj_per_image"] = round(avg / images_per_s * 1e3, 4)
            out["images_per_joule"] = round(images_per_s / avg, 3) if avg > 0 else None
        return out

    def report(self) -> dict[str, Any]:
        """{"power": {...} | None, "conditions": {...}, "warnings": [...]} for the whole bench."""
        end = conditions_snapshot(self.fs)
        cond = dict(self.start_conditions)
        probes = [p for w in self.windows for p in w.probes]
        mhz = [p["gpu_mhz"] for p in probes if p.get("gpu_mhz") is not None]
        if mhz:  # the clock while the work ran, not at rest before it
            cond["gpu_mhz"] = round(statistics.median(mhz), 1)
        oc1 = _safe(sysfs.oc_counters, self.fs)
        oc_moved = None
        if self._oc0 is not None and oc1 is not None:
            oc_moved = any(v > self._oc0.get(k, v) for k, v in oc1.items())
        flags = [f for f in (self.start_conditions.get("throttled"), end.get("throttled"), oc_moved,
                             *(p.get("throttled") for p in probes)) if f is not None]
        cond["throttled"] = any(flags) if flags else None
        cond["temps_c"] = end.get("temps_c") or cond.get("temps_c") or {}
        return {"power": self._power(), "conditions": cond, "warnings": warnings(cond)}

    def _power(self) -> dict[str, Any] | None:
        wins = [w for w in self.windows if w.energy_j is not None and w.seconds > 0]
        if self.source is None or not wins:
            return None
        seconds = sum(w.seconds for w in wins)
        rails: dict[str, Any] = {}
        for name in self.source.kinds:
            js = [w.rails_j.get(name) for w in wins]
            rails[name] = None if any(j is None for j in js) else round(sum(js) / seconds, 3)  # type: ignore[arg-type]
        cpu = sum(w.cpu_s for w in self.windows)
        return {"source": self.source.name, "total": self.source.total_label,
                "avg_w": round(sum(w.energy_j for w in wins) / seconds, 3),  # type: ignore[misc]
                "rails": rails, "seconds": round(seconds, 3), "samples": sum(w.samples for w in self.windows),
                "hz": self.hz,
                # the sampler's own CPU time against the time it measured: its cost to the bench
                "sampler_cpu_ms": round(cpu * 1e3, 2),
                "sampler_cost_pct": round(cpu / seconds * 100, 3)}

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def warnings(cond: dict[str, Any]) -> list[str]:
    out = []
    if cond.get("jetson_clocks") is False:
        mode = cond.get("nvpmodel") or {}
        mode_s = f" (power mode {mode.get('name') or mode.get('id')})" if mode else ""
        gpu = ""
        if cond.get("gpu_mhz") is not None and cond.get("gpu_max_mhz") is not None:
            gpu = f": GPU at {cond['gpu_mhz']:g} of {cond['gpu_max_mhz']:g} MHz"
        out.append(f"clocks are not locked{mode_s}{gpu}; run `sudo jetson_clocks` for figures that reproduce")
    if cond.get("throttled"):
        out.append("the board throttled during the run (thermal or over-current): figures are lower than "
                   "the board can do")
    return out


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001
        return None
