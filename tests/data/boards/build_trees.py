#!/usr/bin/env python3
"""Writes the board-state trees the tests replay with NCANVAS_SYSROOT (run it to rebuild them).

Built from the kernel's documented layouts (Documentation/hwmon/ina3221.rst: in[123]_label,
in[123]_input mV, curr[123]_input mA, in7 = "sum of shunt voltages"; NVIDIA's JetPack 4 IIO
ina3221x driver: rail_name_N, in_power{N}_input mW; devfreq: cur_freq/min_freq/max_freq Hz;
thermal zones: type, temp m°C, trip_point_N_type/temp; Orin's soctherm_oc hwmon:
oc{N}_event_cnt) and the files JetPack ships (/proc/device-tree/model, /etc/nv_tegra_release,
/etc/nvpmodel.conf, /var/lib/nvpmodel/status). Round figures so the tests can check by hand:

- orin-nano-jp6: VDD_IN 5000 mV x 1600 mA = 8.0 W (the total), VDD_CPU_GPU_CV 2.5 W, VDD_SOC 2.0 W;
  GPU 612 of 1020 MHz (clocks not locked), load 47.3%; MAXN_SUPER; hottest 52.3 °C (gpu-thermal);
  cv0-thermal off (-256 °C); RAM 3072 of 7620 MiB used.
- orin-agx-jp6: two INA3221, NC channels; no VDD_IN: total = sum = 5 + 3 + 4 + 1 = 13.0 W.
- xavier-agx-jp5: two INA3221, no VDD_IN: total = 4 + 2 + 1.5 + 0 + 1 + 2.5 = 11.0 W;
  jetson_clocks on (GPU and CPUs at min = max = current); a zone over its passive trip: throttled.
- nano-jp4: IIO rails, POM_5V_IN 4.0 W (the total), POM_5V_GPU 1.2 W, POM_5V_CPU 0.8 W.
- empty: nothing at all (no source: every figure unknown).
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data if data.endswith("\n") or data == "" else data + "\n", encoding="utf-8")


def hwmon(dev: str, hw: str, chans: list[tuple[str, int, int]]) -> dict[str, str]:
    base = f"sys/bus/i2c/devices/{dev}"
    out = {f"{base}/name": "ina3221", f"{base}/hwmon/{hw}/name": "ina3221"}
    for n, (label, mv, ma) in enumerate(chans, 1):
        out[f"{base}/hwmon/{hw}/in{n}_label"] = label
        out[f"{base}/hwmon/{hw}/in{n}_input"] = str(mv)
        out[f"{base}/hwmon/{hw}/curr{n}_input"] = str(ma)
        out[f"{base}/hwmon/{hw}/shunt{n}_resistor"] = "5000"
        out[f"{base}/hwmon/{hw}/in{n + 3}_input"] = str(ma * 5)  # shunt voltage uV (not a rail)
    out[f"{base}/hwmon/{hw}/in7_label"] = "sum of shunt voltages"
    out[f"{base}/hwmon/{hw}/in7_input"] = "12345"
    out[f"{base}/hwmon/{hw}/curr4_input"] = "9999"
    return out


def zones(specs: list[tuple[str, int, list[tuple[str, int]]]]) -> dict[str, str]:
    out = {}
    for i, (kind, milli, trips) in enumerate(specs):
        d = f"sys/class/thermal/thermal_zone{i}"
        out[f"{d}/type"] = kind
        out[f"{d}/temp"] = str(milli)
        for j, (ttype, ttemp) in enumerate(trips):
            out[f"{d}/trip_point_{j}_type"] = ttype
            out[f"{d}/trip_point_{j}_temp"] = str(ttemp)
    return out


def devfreq(entry: str, of_name: str, cur: int, lo: int, hi: int, load: int | None) -> dict[str, str]:
    d = f"sys/class/devfreq/{entry}"
    out = {f"{d}/device/of_node/name": of_name + "\x00", f"{d}/cur_freq": str(cur), f"{d}/min_freq": str(lo),
           f"{d}/max_freq": str(hi), f"{d}/governor": "nvhost_podgov"}
    if load is not None:
        out[f"{d}/device/load"] = str(load)
    return out


def cpus(n: int, lo: int, hi: int, cur: int) -> dict[str, str]:
    out = {"sys/devices/system/cpu/online": f"0-{n - 1}"}
    for i in range(n):
        d = f"sys/devices/system/cpu/cpu{i}/cpufreq"
        out.update({f"{d}/scaling_min_freq": str(lo), f"{d}/scaling_max_freq": str(hi), f"{d}/scaling_cur_freq": str(cur)})
    return out


def meminfo(total_kb: int, avail_kb: int) -> str:
    return (f"MemTotal:       {total_kb} kB\nMemFree:         {avail_kb // 2} kB\n"
            f"MemAvailable:   {avail_kb} kB\nBuffers:           12345 kB\n")


ORIN_CONF = """< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 612000000
< POWER_MODEL ID=1 NAME=25W >
GPU MAX_FREQ 918000000
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
GPU MAX_FREQ 1020000000
< POWER_MODEL ID=3 NAME=7W >
< PM_CONFIG DEFAULT=2 >
"""


def orin_nano() -> dict[str, str | bytes]:
    f: dict[str, str | bytes] = {
        "proc/device-tree/model": b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00",
        "etc/nv_tegra_release": "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
                                "DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot",
        "etc/nvpmodel.conf": ORIN_CONF,
        "var/lib/nvpmodel/status": "pmode:0002 fmode:quiet",
        "proc/meminfo": meminfo(7802880, 7802880 - 3072 * 1024),
        "sys/bus/i2c/devices/0-0050/name": "24c02",  # an EEPROM: not a power monitor
        "sys/class/hwmon/hwmon0/name": "pwmfan",
        "sys/class/hwmon/hwmon3/name": "soctherm_oc",
        "sys/class/hwmon/hwmon3/oc1_event_cnt": "0", "sys/class/hwmon/hwmon3/oc2_event_cnt": "0",
        "sys/class/hwmon/hwmon3/oc3_event_cnt": "7", "sys/class/hwmon/hwmon3/oc1_throt_en": "1",
    }
    f.update(hwmon("1-0040", "hwmon1", [("VDD_IN", 5000, 1600), ("VDD_CPU_GPU_CV", 5000, 500),
                                        ("VDD_SOC", 5000, 400)]))
    f.update(devfreq("17000000.gpu", "gpu", 612000000, 306000000, 1020000000, 473))
    f.update(devfreq("15480000.nvdec", "nvdec", 115200000, 115200000, 704000000, None))
    f.update(cpus(6, 729600, 1728000, 1510400))
    f.update(zones([("cpu-thermal", 48500, [("passive", 99000), ("critical", 105000)]),
                    ("gpu-thermal", 52300, [("passive", 99000)]),
                    ("cv0-thermal", -256000, []),
                    ("soc0-thermal", 47900, [("passive", 99000)]),
                    ("tj-thermal", 52100, [("critical", 105000)])]))
    return f


def orin_agx() -> dict[str, str | bytes]:
    f: dict[str, str | bytes] = {
        "proc/device-tree/model": b"Jetson AGX Orin Developer Kit\x00",
        "etc/nv_tegra_release": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
                                "DATE: Mon May  6 17:34:21 UTC 2024",
        "etc/nvpmodel.conf": "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=MODE_15W >\n"
                             "< PM_CONFIG DEFAULT=0 >\n",
        "var/lib/nvpmodel/status": "pmode:0000 fmode:quiet",
        "proc/meminfo": meminfo(65000000, 60000000),
    }
    f.update(hwmon("1-0040", "hwmon1", [("VDD_GPU_SOC", 5000, 1000), ("VDD_CPU_CV", 5000, 600),
                                        ("VIN_SYS_5V0", 5000, 800)]))
    f.update(hwmon("1-0041", "hwmon2", [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 200), ("NC", 0, 0)]))
    f.update(devfreq("17000000.gpu", "gpu", 1300500000, 306000000, 1300500000, 990))
    f.update(cpus(12, 115200, 2201600, 2201600))
    f.update(zones([("cpu-thermal", 55000, [("passive", 99000)]), ("gpu-thermal", 57000, [("passive", 99000)])]))
    return f


def xavier() -> dict[str, str | bytes]:
    f: dict[str, str | bytes] = {
        "proc/device-tree/model": b"Jetson-AGX\x00",
        "etc/nv_tegra_release": "# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64, "
                                "DATE: Tue Feb 20 04:46:31 UTC 2024",
        "etc/nvpmodel.conf": "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=MODE_10W >\n"
                             "< POWER_MODEL ID=2 NAME=MODE_15W >\n< PM_CONFIG DEFAULT=2 >\n",
        "var/lib/nvpmodel/status": "pmode:0000",
        "proc/meminfo": meminfo(32000000, 28000000),
    }
    f.update(hwmon("1-0040", "hwmon3", [("GPU", 5000, 800), ("CPU", 5000, 400), ("SOC", 5000, 300)]))
    f.update(hwmon("1-0041", "hwmon4", [("CV", 5000, 0), ("VDDRQ", 5000, 200), ("SYS5V", 5000, 500)]))
    f.update(devfreq("17000000.gv11b", "gv11b", 1377000000, 1377000000, 1377000000, 812))
    f.update(cpus(8, 2265600, 2265600, 2265600))
    f.update(zones([("CPU-therm", 61500, [("passive", 95500)]),
                    ("GPU-therm", 96000, [("passive", 95500), ("critical", 105000)]),  # over: throttled
                    ("AUX-therm", 58000, [])]))
    return f


def nano() -> dict[str, str | bytes]:
    d = "sys/bus/i2c/devices/6-0040"
    f: dict[str, str | bytes] = {
        "proc/device-tree/model": b"NVIDIA Jetson Nano Developer Kit\x00",
        "etc/nv_tegra_release": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
                                "DATE: Sat Feb 19 17:05:08 UTC 2022",
        "etc/nvpmodel.conf": "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=5W >\n< PM_CONFIG DEFAULT=0 >\n",
        "var/lib/nvpmodel/status": "pmode:0001",
        "proc/meminfo": meminfo(4051032, 2500000),
        f"{d}/name": "ina3221x",
    }
    for n, (rail, mw) in enumerate([("POM_5V_IN", 4000), ("POM_5V_GPU", 1200), ("POM_5V_CPU", 800)]):
        f[f"{d}/iio:device0/rail_name_{n}"] = rail
        f[f"{d}/iio:device0/in_power{n}_input"] = str(mw)
        f[f"{d}/iio:device0/in_voltage{n}_input"] = "5000"
        f[f"{d}/iio:device0/in_current{n}_input"] = str(mw // 5)
    f.update(devfreq("57000000.gpu", "gpu", 230400000, 76800000, 640000000, 125))
    f.update(cpus(4, 102000, 918000, 918000))
    f.update(zones([("AO-therm", 41500, []), ("CPU-therm", 38500, [("passive", 97000)]),
                    ("GPU-therm", 36500, [("passive", 97000)]), ("PLL-therm", 35250, []),
                    ("PMIC-Die", 100000, []), ("thermal-fan-est", 37400, [("active", 51000)])]))
    return f


TREES = {"orin-nano-jp6": orin_nano, "orin-agx-jp6": orin_agx, "xavier-agx-jp5": xavier, "nano-jp4": nano}


def main() -> None:
    for name, make in TREES.items():
        root = HERE / name
        shutil.rmtree(root, ignore_errors=True)
        write(root, make())
    empty = HERE / "empty"
    shutil.rmtree(empty, ignore_errors=True)
    empty.mkdir()
    (empty / "README").write_text("An empty board tree: nothing readable, every figure unknown.\n", encoding="utf-8")


if __name__ == "__main__":
    main()
