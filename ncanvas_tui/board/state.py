"""The board's state in one call: the run conditions that make a benchmark reproducible, and the
live figures of the TUI's board strip.

``conditions_snapshot()`` -> {"board", "l4t", "nvpmodel", "jetson_clocks", "gpu_mhz", "gpu_max_mhz",
"gpu_min_mhz", "temps_c", "throttled"} (+ "gpu" on a desktop GPU): what ``bench`` reports, and what history runs
and engine sidecars record. ``LiveReader().read()`` -> the strip's figures, power included (a
counter-based source needs two reads: the first gives no power).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ncanvas_tui.board import nvml, sysfs
from ncanvas_tui.board.sysroot import Fs


def conditions_snapshot(fs: Fs | None = None) -> dict[str, Any]:
    """The run conditions now; unknown values are None. Never raises."""
    try:
        return _conditions(fs or Fs())
    except Exception:  # noqa: BLE001 - a state reader must never fail the work it describes
        return {k: None for k in ("board", "l4t", "nvpmodel", "jetson_clocks", "gpu_mhz", "gpu_max_mhz",
                                  "gpu_min_mhz", "temps_c", "throttled")}


def _conditions(fs: Fs) -> dict[str, Any]:
    igpu = sysfs.find_igpu(fs)
    gpu = sysfs.igpu_state(fs, igpu)
    therm = sysfs.thermal(fs)
    l4t = sysfs.l4t_release(fs)
    jetson = igpu is not None or l4t is not None
    out: dict[str, Any] = {
        "board": sysfs.board_model(fs),
        "l4t": l4t,
        "nvpmodel": sysfs.nvpmodel(fs),
        "jetson_clocks": sysfs.clocks_locked(gpu, sysfs.cpu_freqs(fs)) if jetson else None,
        "gpu_mhz": gpu["mhz"],
        "gpu_max_mhz": gpu["max_mhz"],
        "gpu_min_mhz": gpu["min_mhz"],
        "temps_c": therm.temps_c,
        "throttled": therm.throttled,
    }
    if not jetson:
        st = nvml.state()
        if st is not None:
            out["gpu"] = st["name"]
            out["gpu_mhz"] = st["mhz"]
            out["gpu_max_mhz"] = st["max_mhz"]
            if st["temp_c"] is not None:
                out["temps_c"] = {**out["temps_c"], "gpu": float(st["temp_c"])}
            if st["throttled"] is not None:
                out["throttled"] = bool(st["throttled"] or therm.throttled)
    return out


class LiveReader:
    """The strip's figures, read about once a second from a worker thread (thread-safe).

    Discovery (which rails, which GPU) happens once, on the first read."""

    def __init__(self, fs: Fs | None = None) -> None:
        self.fs = fs or Fs()
        self._lock = threading.Lock()
        self._found = False
        self._rails: list[sysfs.Rail] = []
        self._total: str | None = None
        self._igpu: str | None = None
        self._rapl: list[sysfs.RaplZone] = []
        self._last_rapl: tuple[float, float] | None = None
        self._last_oc: dict[str, int] | None = None

    def _discover(self) -> None:
        self._rails = sysfs.find_rails(self.fs)
        self._total = sysfs.total_rail(self._rails)
        self._igpu = sysfs.find_igpu(self.fs)
        if not self._rails and nvml.device() is None:
            self._rapl = sysfs.rapl_zones(self.fs)
        self._found = True

    def read(self) -> dict[str, Any]:
        """{"power_w", "power_source", "gpu_pct", "gpu_mhz", "temp_c", "temp_zone", "ram_used_mib",
        "ram_total_mib", "throttled"}; None where unknown. Never raises."""
        with self._lock:
            try:
                return self._read()
            except Exception:  # noqa: BLE001 - the strip shows less, never an error
                return {}

    def _read(self) -> dict[str, Any]:
        if not self._found:
            self._discover()
        fs = self.fs
        out: dict[str, Any] = dict.fromkeys(("power_w", "power_source", "gpu_pct", "gpu_mhz", "temp_c",
                                             "temp_zone", "ram_used_mib", "ram_total_mib", "throttled"))
        gpu = sysfs.igpu_state(fs, self._igpu)
        out["gpu_pct"], out["gpu_mhz"] = gpu["load_pct"], gpu["mhz"]
        if self._rails:
            watts = {r.name: w for r in self._rails if (w := sysfs.rail_watts(fs, r)) is not None}
            out["power_w"] = sysfs.board_total(watts, self._total)
            out["power_source"] = "ina3221"
        elif self._igpu is None and (st := nvml.state()) is not None:
            out.update(power_w=st["power_w"], power_source="nvml", gpu_pct=st["load_pct"], gpu_mhz=st["mhz"])
            if st["temp_c"] is not None:
                out["temp_c"], out["temp_zone"] = float(st["temp_c"]), "gpu"
            out["throttled"] = st["throttled"]
        elif self._rapl:
            now = time.perf_counter()
            joules = [fs.read_int(z.energy) for z in self._rapl]
            if all(j is not None for j in joules):
                total = sum(joules) / 1e6  # type: ignore[arg-type]
                if self._last_rapl is not None and total > self._last_rapl[1] and now > self._last_rapl[0]:
                    out["power_w"] = (total - self._last_rapl[1]) / (now - self._last_rapl[0])
                    out["power_source"] = "rapl"
                self._last_rapl = (now, total)
        therm = sysfs.thermal(fs)
        if therm.temps_c:
            zone, temp = max(therm.temps_c.items(), key=lambda kv: kv[1])
            if out["temp_c"] is None or temp > out["temp_c"]:
                out["temp_c"], out["temp_zone"] = temp, zone
        oc = sysfs.oc_counters(fs)
        oc_moved = None
        if oc is not None:
            oc_moved = self._last_oc is not None and any(v > self._last_oc.get(k, v) for k, v in oc.items())
            self._last_oc = oc
        flags = [f for f in (out["throttled"], therm.throttled, oc_moved) if f is not None]
        out["throttled"] = any(flags) if flags else None
        mem = sysfs.memory_mib(fs)
        if mem is not None:
            out["ram_used_mib"], out["ram_total_mib"] = mem
        return out


def describe_live(state: dict[str, Any]) -> list[str]:
    """The strip's parts, in order, only those known: "8.0 W", "GPU 47%", "612 MHz", "48.5°C gpu",
    "RAM 3.1/7.4 GiB", "THROTTLED"."""
    parts = []
    if state.get("power_w") is not None:
        parts.append(f"{state['power_w']:.1f} W")
    if state.get("gpu_pct") is not None:
        parts.append(f"GPU {state['gpu_pct']:.0f}%")
    if state.get("gpu_mhz") is not None:
        parts.append(f"{state['gpu_mhz']:.0f} MHz")
    if state.get("temp_c") is not None:
        parts.append(f"{state['temp_c']:.1f}°C {state.get('temp_zone') or ''}".rstrip())
    if state.get("ram_used_mib") is not None and state.get("ram_total_mib"):
        parts.append(f"RAM {state['ram_used_mib'] / 1024:.1f}/{state['ram_total_mib'] / 1024:.1f} GiB")
    if state.get("throttled"):
        parts.append("THROTTLED")
    return parts


_SHARED: dict[str, LiveReader] = {}
_SHARED_LOCK = threading.Lock()


def shared_reader() -> LiveReader:
    """One ``LiveReader`` per board root for the whole process (the strips of every screen share it)."""
    from ncanvas_tui.board.sysroot import root

    key = str(root())
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = LiveReader()
        return _SHARED[key]


def describe_conditions(c: dict[str, Any]) -> str:
    """One line for people: "board · L4T 36.4.0 · nvpmodel MAXN_SUPER (2) · jetson_clocks off ·
    GPU 612/1020 MHz · hottest 52.3°C (gpu-thermal) · not throttled" (only what is known)."""
    parts = []
    if c.get("board") or c.get("gpu"):
        parts.append(str(c.get("board") or c.get("gpu")))
    if c.get("l4t"):
        parts.append(f"L4T {c['l4t']}")
    mode = c.get("nvpmodel")
    if mode:
        parts.append(f"nvpmodel {mode.get('name') or '?'} ({mode.get('id')})")
    if c.get("jetson_clocks") is not None:
        parts.append(f"jetson_clocks {'on' if c['jetson_clocks'] else 'off'}")
    if c.get("gpu_mhz") is not None:
        parts.append(f"GPU {c['gpu_mhz']:g}/{c['gpu_max_mhz']:g} MHz" if c.get("gpu_max_mhz") is not None
                     else f"GPU {c['gpu_mhz']:g} MHz")
    temps = c.get("temps_c") or {}
    if temps:
        zone, t = max(temps.items(), key=lambda kv: kv[1])
        parts.append(f"hottest {t:.1f}°C ({zone})")
    if c.get("throttled") is not None:
        parts.append("THROTTLED" if c["throttled"] else "not throttled")
    return " · ".join(parts) if parts else "unknown (no board state readable here)"
