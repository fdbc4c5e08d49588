"""What the kernel files say about the board: Jetson power rails, GPU clocks and load, power mode,
temperatures, throttling, memory; RAPL on x86.

Jetson power is read the way jtop reads it: every I2C device whose ``name`` holds ``ina3221``;
JetPack 5/6 expose hwmon channels (``hwmon/hwmon*/in{N}_label``, bus voltage ``in{N}_input`` in mV
times ``curr{N}_input`` in mA), skipping "NC" channels and the "sum of shunt voltages" channel
(in7); JetPack 4 exposes IIO rails (``iio:device*/rail_name_N`` with ``in_power{N}_input`` in mW).
The board's total is ``VDD_IN`` or ``POM_5V_IN`` where there is one, else the sum of the rails.
Anything missing or unreadable is ``None``: nothing is made up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ncanvas_tui.board.sysroot import Fs

I2C = "sys/bus/i2c/devices"
DEVFREQ = "sys/class/devfreq"
THERMAL = "sys/class/thermal"
HWMON = "sys/class/hwmon"
CPUS = "sys/devices/system/cpu"
POWERCAP = "sys/class/powercap"
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
#: devfreq ``device/of_node/name`` of Jetson integrated GPUs (as jtop lists them)
IGPU_NAMES = ("gv11b", "gp10b", "ga10b", "gb10b", "gpu")
#: thermal trip types whose crossing means the kernel is slowing the chip down
THROTTLE_TRIPS = ("passive", "hot")
OFFLINE_C = -200.0  # Jetson zones that are off read -256 C


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel. ``kind`` hwmon: (voltage mV file, current mA file); iio: (power mW file,)."""

    name: str
    kind: str
    files: tuple[str, ...]


def find_rails(fs: Fs) -> list[Rail]:
    rails: list[Rail] = []
    seen: set[str] = set()
    for dev in fs.listdir(I2C):
        name = fs.read(f"{I2C}/{dev}/name")
        if not name or "ina3221" not in name:
            continue
        base = f"{I2C}/{dev}"
        found: list[Rail] = []
        for hw in fs.listdir(f"{base}/hwmon"):
            if hw.startswith("hwmon"):
                found += _hwmon_rails(fs, f"{base}/hwmon/{hw}")
        for item in fs.listdir(base):
            if item.startswith("iio:device"):
                found += _iio_rails(fs, f"{base}/{item}")
        for r in found:
            name = r.name if r.name not in seen else f"{r.name}@{dev}"
            seen.add(name)
            rails.append(Rail(name, r.kind, r.files))
    return rails


def _hwmon_rails(fs: Fs, d: str) -> list[Rail]:
    out = []
    for item in fs.listdir(d):
        m = re.fullmatch(r"in(\d+)_label", item)
        if not m:
            continue
        n = int(m.group(1))
        label = fs.read(f"{d}/{item}") or ""
        if not label or label.upper() == "NC" or "sum of shunt" in label.lower() or n == 7:
            continue
        volt, curr = f"{d}/in{n}_input", f"{d}/curr{n}_input"
        if fs.read_int(volt) is None or fs.read_int(curr) is None:  # disabled channel: ENODATA
            continue
        out.append(Rail(label, "hwmon", (volt, curr)))
    return out


def _iio_rails(fs: Fs, d: str) -> list[Rail]:
    out = []
    for item in fs.listdir(d):
        m = re.fullmatch(r"rail_name_(\d+)", item)
        if not m:
            continue
        label = fs.read(f"{d}/{item}") or ""
        power = f"{d}/in_power{m.group(1)}_input"
        if label and label.upper() != "NC" and fs.read_int(power) is not None:
            out.append(Rail(label, "iio", (power,)))
    return out


def rail_watts(fs: Fs, rail: Rail) -> float | None:
    """One reading of a rail in W."""
    if rail.kind == "hwmon":
        mv, ma = fs.read_int(rail.files[0]), fs.read_int(rail.files[1])
        return None if mv is None or ma is None else mv * ma / 1e6
    mw = fs.read_int(rail.files[0])
    return None if mw is None else mw / 1e3


def total_rail(rails: list[Rail]) -> str | None:
    """The rail that measures the whole board (``VDD_IN`` / ``POM_5V_IN``), else None (sum the rails)."""
    names = {r.name for r in rails}
    return next((n for n in TOTAL_RAILS if n in names), None)


def board_total(watts: dict[str, float], total: str | None) -> float | None:
    if total is not None:
        return watts.get(total)
    return sum(watts.values()) if watts else None


# ---- GPU (devfreq), CPU clocks ---------------------------------------------------------------------------

def find_igpu(fs: Fs) -> str | None:
    """The devfreq folder of a Jetson's integrated GPU, or None."""
    for item in fs.listdir(DEVFREQ):
        name = fs.read(f"{DEVFREQ}/{item}/device/of_node/name")
        if name in IGPU_NAMES:
            return f"{DEVFREQ}/{item}"
    return None


def igpu_state(fs: Fs, d: str | None) -> dict[str, Any]:
    """{"mhz", "min_mhz", "max_mhz", "load_pct"} of the integrated GPU (None where unknown)."""
    if d is None:
        return {"mhz": None, "min_mhz": None, "max_mhz": None, "load_pct": None}

    def mhz(name: str) -> float | None:
        hz = fs.read_int(f"{d}/{name}")
        return None if hz is None else round(hz / 1e6, 1)

    load = fs.read_int(f"{d}/device/load")
    return {"mhz": mhz("cur_freq"), "min_mhz": mhz("min_freq"), "max_mhz": mhz("max_freq"),
            "load_pct": None if load is None else round(load / 10.0, 1)}


def cpu_freqs(fs: Fs) -> list[tuple[int, int, int]]:
    """(min, max, cur) kHz of each online CPU whose cpufreq is readable."""
    out = []
    for item in fs.listdir(CPUS):
        if not re.fullmatch(r"cpu\d+", item):
            continue
        d = f"{CPUS}/{item}/cpufreq"
        lo, hi, cur = (fs.read_int(f"{d}/scaling_{k}_freq") for k in ("min", "max", "cur"))
        if lo is not None and hi is not None and cur is not None:
            out.append((lo, hi, cur))
    return out


def clocks_locked(gpu: dict[str, Any], cpus: list[tuple[int, int, int]]) -> bool | None:
    """jetson_clocks inferred as jtop does: every CPU and the GPU at current = min = max frequency."""
    if gpu.get("mhz") is None or gpu.get("min_mhz") is None or gpu.get("max_mhz") is None:
        return None
    ok = gpu["mhz"] == gpu["min_mhz"] == gpu["max_mhz"]
    return ok and all(lo == hi == cur for lo, hi, cur in cpus)


# ---- identity, power mode ----------------------------------------------------------------------------------

def board_model(fs: Fs) -> str | None:
    model = fs.read("proc/device-tree/model")
    if model:
        return model
    product = fs.read("sys/class/dmi/id/product_name")
    return product or None


def l4t_release(fs: Fs) -> str | None:
    """``36.4.0`` from ``# R36 (release), REVISION: 4.0, ...`` in /etc/nv_tegra_release."""
    text = fs.read("etc/nv_tegra_release")
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def nvpmodel(fs: Fs) -> dict[str, Any] | None:
    """{"id", "name"} of the power mode: /var/lib/nvpmodel/status (``pmode:0002``), named from
    /etc/nvpmodel.conf; without a status file, the conf's ``PM_CONFIG DEFAULT``."""
    conf = fs.read("etc/nvpmodel.conf") or ""
    names = {int(i): n for i, n in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)}
    status = fs.read("var/lib/nvpmodel/status") or ""
    m = re.search(r"pmode:\s*(\d+)", status)
    if m:
        mode = int(m.group(1))
    else:
        d = re.search(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)", conf)
        if not d:
            return None
        mode = int(d.group(1))
    return {"id": mode, "name": names.get(mode)}


# ---- temperatures, throttling, memory ----------------------------------------------------------------------

@dataclass
class Thermal:
    temps_c: dict[str, float] = field(default_factory=dict)
    #: a zone at or above one of its passive/hot trip points (None: no trip points readable)
    throttled: bool | None = None
    hot_zones: list[str] = field(default_factory=list)


def thermal(fs: Fs, trips: bool = True) -> Thermal:
    out = Thermal()
    seen_trips = False
    for item in fs.listdir(THERMAL):
        if not item.startswith("thermal_zone"):
            continue
        d = f"{THERMAL}/{item}"
        kind = fs.read(f"{d}/type") or item
        if "PMIC" in kind.upper():  # a fixed placeholder on Jetson boards (jtop hides it too)
            continue
        milli = fs.read_int(f"{d}/temp")
        if milli is None or milli / 1000 <= OFFLINE_C:
            continue
        temp = round(milli / 1000, 1)
        name = kind if kind not in out.temps_c else f"{kind}.{item.removeprefix('thermal_zone')}"
        out.temps_c[name] = temp
        if not trips:
            continue
        for f in fs.listdir(d):
            m = re.fullmatch(r"trip_point_(\d+)_type", f)
            if not m or (fs.read(f"{d}/{f}") or "") not in THROTTLE_TRIPS:
                continue
            limit = fs.read_int(f"{d}/trip_point_{m.group(1)}_temp")
            if limit is None:
                continue
            seen_trips = True
            if milli >= limit:
                out.hot_zones.append(name)
    if seen_trips:
        out.throttled = bool(out.hot_zones)
    return out


def oc_counters(fs: Fs) -> dict[str, int] | None:
    """Jetson Orin over-current / under-voltage throttle events since boot (hwmon ``soctherm_oc``:
    ``oc{N}_event_cnt``), or None where the board has no such counters."""
    out: dict[str, int] = {}
    for hw in fs.listdir(HWMON):
        d = f"{HWMON}/{hw}"
        if fs.read(f"{d}/name") != "soctherm_oc":
            continue
        for f in fs.listdir(d):
            if re.fullmatch(r"oc\d+_event_cnt", f):
                v = fs.read_int(f"{d}/{f}")
                if v is not None:
                    out[f"{hw}/{f}"] = v
    return out or None


def memory_mib(fs: Fs) -> tuple[float, float] | None:
    """(used, total) MiB from /proc/meminfo (used = MemTotal - MemAvailable)."""
    text = fs.read("proc/meminfo")
    if not text:
        return None
    vals = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+)", text, flags=re.MULTILINE)}
    if "MemTotal" not in vals or "MemAvailable" not in vals:
        return None
    return (vals["MemTotal"] - vals["MemAvailable"]) / 1024, vals["MemTotal"] / 1024


# ---- RAPL (x86 CPU package energy) ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RaplZone:
    name: str
    energy: str        # energy_uj file
    wrap_j: float | None


def rapl_zones(fs: Fs) -> list[RaplZone]:
    """The readable ``intel-rapl:N`` package zones (the CPU package energy counters)."""
    out = []
    for item in fs.listdir(POWERCAP):
        if not re.fullmatch(r"intel-rapl:\d+", item):
            continue
        d = f"{POWERCAP}/{item}"
        if fs.read_int(f"{d}/energy_uj") is None:  # root-only on most kernels since 2020
            continue
        name = fs.read(f"{d}/name") or item
        wrap = fs.read_int(f"{d}/max_energy_range_uj")
        out.append(RaplZone(name, f"{d}/energy_uj", wrap / 1e6 if wrap else None))
    return out
