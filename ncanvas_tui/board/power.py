"""Power sources and the sampler thread that turns their readings into energy.

A source reads channels: instantaneous watts (Jetson INA3221 rails; NVML power draw) or
cumulative joules (NVML's energy counter, RAPL's ``energy_uj``, with its wrap-around).
``PowerSampler`` reads one at ``hz`` (>= 10) in a thread between ``start()`` and ``stop()``,
plus one reading at each end, and integrates: trapezoids for watts, differences for
counters. A counter that did not move (a replayed tree) is unknown, not 0 W.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ncanvas_tui.board import nvml, sysfs
from ncanvas_tui.board.sysroot import FdReader, Fs

MIN_HZ = 10.0


class PowerSource:
    """``read()`` -> {channel: value}; ``kinds[channel]`` is "w" (watts) or "j" (cumulative joules)."""

    name = ""
    #: what ``avg_w`` is: a channel name, or None for the sum of all channels
    total: str | None = None
    #: the words for the total shown to people ("VDD_IN", "sum of rails", ...)
    total_label = ""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.wraps: dict[str, float | None] = {}

    def read(self) -> dict[str, float]:
        raise NotImplementedError

    def probe(self) -> dict[str, Any]:
        """Slow-changing state read about once a second during a run: {"gpu_mhz", "throttled"}."""
        return {}

    def close(self) -> None:
        """Release what the source holds open."""


class Ina3221Source(PowerSource):
    """A Jetson board's INA3221 rails (board power, whatever backend ran)."""

    name = "ina3221"

    def __init__(self, fs: Fs, rails: list[sysfs.Rail]) -> None:
        super().__init__()
        self.fs = fs
        self.rails = rails
        self.total = sysfs.total_rail(rails)
        self.total_label = self.total or "sum of rails"
        self.kinds = {r.name: "w" for r in rails}
        self._igpu = sysfs.find_igpu(fs)
        self._fds: list[tuple[sysfs.Rail, list[FdReader]]] = []
        try:
            for r in rails:
                self._fds.append((r, [FdReader(fs.path(f)) for f in r.files]))
        except OSError:
            self.close()
            self._fds = []

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if not self._fds:  # could not keep them open: plain reads
            for r in self.rails:
                w = sysfs.rail_watts(self.fs, r)
                if w is not None:
                    out[r.name] = w
            return out
        for r, fds in self._fds:
            vals = [fd.read_int() for fd in fds]
            if any(v is None for v in vals):
                continue
            out[r.name] = vals[0] * vals[1] / 1e6 if r.kind == "hwmon" else vals[0] / 1e3  # type: ignore[operator]
        return out

    def probe(self) -> dict[str, Any]:
        return {"gpu_mhz": sysfs.igpu_state(self.fs, self._igpu)["mhz"],
                "throttled": sysfs.thermal(self.fs).throttled}

    def close(self) -> None:
        for _r, fds in self._fds:
            for fd in fds:
                fd.close()


class NvmlSource(PowerSource):
    """A desktop GPU by NVML: its energy counter where present, else its power draw."""

    name = "nvml"
    total = "gpu"

    def __init__(self) -> None:
        super().__init__()
        self.counter = nvml.energy_j() is not None
        self.kinds = {"gpu": "j" if self.counter else "w"}
        self.wraps = {"gpu": None}
        self.total_label = "GPU energy counter" if self.counter else "GPU power draw"

    def read(self) -> dict[str, float]:
        v = nvml.energy_j() if self.counter else nvml.power_w()
        return {} if v is None else {"gpu": v}

    def probe(self) -> dict[str, Any]:
        st = nvml.state() or {}
        return {"gpu_mhz": st.get("mhz"), "throttled": st.get("throttled")}


class RaplSource(PowerSource):
    """An x86 CPU's package energy (RAPL ``energy_uj``) where readable."""

    name = "rapl"

    def __init__(self, fs: Fs, zones: list[sysfs.RaplZone]) -> None:
        super().__init__()
        self.fs = fs
        self.zones = zones
        self.kinds = {z.name: "j" for z in zones}
        self.wraps = {z.name: z.wrap_j for z in zones}
        self.total = None
        self.total_label = "CPU package" if len(zones) == 1 else "CPU packages"

    def read(self) -> dict[str, float]:
        out = {}
        for z in self.zones:
            uj = self.fs.read_int(z.energy)
            if uj is not None:
                out[z.name] = uj / 1e6
        return out


def power_source(device: str, fs: Fs | None = None) -> PowerSource | None:
    """Where the power of work on ``device`` ("gpu" or "cpu") can be read: a Jetson's board rails,
    else NVML for GPU work, else RAPL for CPU work; None when nothing is readable."""
    fs = fs or Fs()
    rails = sysfs.find_rails(fs)
    if rails:
        return Ina3221Source(fs, rails)
    if device == "gpu":
        return NvmlSource() if nvml.device() is not None else None
    zones = sysfs.rapl_zones(fs)
    return RaplSource(fs, zones) if zones else None


# ---- integration ------------------------------------------------------------------------------------------

def integrate(samples: list[tuple[float, dict[str, float]]], kinds: dict[str, str],
              wraps: dict[str, float | None] | None = None) -> dict[str, float | None]:
    """Energy in J per channel over the samples (time in s): trapezoids for "w" channels, summed
    differences for "j" counters (a drop is a wrap-around when the wrap is known, else skipped).
    None: fewer than two readings, or a counter that never moved."""
    wraps = wraps or {}
    out: dict[str, float | None] = {}
    for ch, kind in kinds.items():
        pts = [(t, v[ch]) for t, v in samples if ch in v]
        if len(pts) < 2:
            out[ch] = None
            continue
        energy = 0.0
        for (t0, a), (t1, b) in itertools.pairwise(pts):
            if kind == "w":
                energy += (a + b) / 2 * (t1 - t0)
            else:
                d = b - a
                if d < 0:
                    wrap = wraps.get(ch)
                    if not wrap:
                        continue
                    d += wrap
                energy += d
        out[ch] = None if kind == "j" and energy == 0 else energy
    return out


@dataclass
class PowerWindow:
    """What one sampled window measured."""

    seconds: float
    samples: int
    energy_j: float | None
    avg_w: float | None
    rails_j: dict[str, float | None] = field(default_factory=dict)
    cpu_s: float = 0.0
    probes: list[dict[str, Any]] = field(default_factory=list)

    def rails_w(self) -> dict[str, float | None]:
        return {k: (None if v is None or self.seconds <= 0 else v / self.seconds) for k, v in self.rails_j.items()}


class PowerSampler:
    """Reads ``source`` at ``hz`` in a thread between ``start()`` and ``stop()`` (or ``with``)."""

    def __init__(self, source: PowerSource, hz: float = 20.0, min_samples: int = 20,
                 probe_every_s: float = 1.0) -> None:
        if hz < MIN_HZ:
            raise ValueError(f"sampling rate must be >= {MIN_HZ:g} Hz, got {hz:g}")
        self.source = source
        self.period = 1.0 / hz
        self.hz = hz
        self.min_samples = min_samples
        self.probe_every_s = probe_every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.probes: list[dict[str, Any]] = []
        self.window: PowerWindow | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_s = 0.0
        self._t0 = 0.0

    def __enter__(self) -> PowerSampler:  # noqa: PYI034
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def count(self) -> int:
        return len(self.samples)

    def enough(self) -> bool:
        """At least ``min_samples`` readings so far, or a source that failed to give them in three
        times the time they take (its readings fail: waiting longer would not help)."""
        if len(self.samples) >= self.min_samples:
            return True
        return self._t0 > 0 and time.perf_counter() - self._t0 > 3 * self.min_samples * self.period

    def sample(self) -> None:
        t = time.perf_counter()
        try:
            values = self.source.read()
        except Exception:  # noqa: BLE001 - a reading that fails is a missing sample, never a failed bench
            return
        if values:
            self.samples.append((t, values))

    def _probe(self) -> None:
        try:
            self.probes.append(self.source.probe())
        except Exception:  # noqa: BLE001 - same: unknown
            self.probes.append({})

    def start(self) -> None:
        c0 = time.thread_time()
        self._t0 = time.perf_counter()
        self.sample()
        self._probe()
        self._cpu_s += time.thread_time() - c0
        self._thread = threading.Thread(target=self._run, name="ncanvas-power-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        c0 = time.thread_time()
        next_probe = time.perf_counter() + self.probe_every_s
        while not self._stop.wait(self.period):
            self.sample()
            if time.perf_counter() >= next_probe:
                self._probe()
                next_probe += self.probe_every_s
        self._cpu_s += time.thread_time() - c0

    def stop(self) -> PowerWindow:
        if self.window is not None:
            return self.window
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        c0 = time.thread_time()
        self.sample()
        self._probe()
        self._cpu_s += time.thread_time() - c0
        seconds = (self.samples[-1][0] - self.samples[0][0]) if len(self.samples) >= 2 else 0.0
        rails = integrate(self.samples, self.source.kinds, self.source.wraps)
        if self.source.total is not None:
            energy = rails.get(self.source.total)
        else:
            energy = None if not rails or any(v is None for v in rails.values()) else \
                sum(v for v in rails.values() if v is not None)
        avg = energy / seconds if energy is not None and seconds > 0 else None
        self.window = PowerWindow(seconds, len(self.samples), energy, avg, rails, self._cpu_s, self.probes)
        return self.window
