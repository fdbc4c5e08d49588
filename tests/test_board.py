"""Board state (ncanvas_tui.board): the reader on replayed Jetson trees (tests/data/boards, see
build_trees.py for the figures), energy checked by hand, bench's power/conditions fields, the
three-way Pareto and --budget-mj, --capture-board round trips, history runs with conditions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ncanvas_tui import board
from ncanvas_tui.bench import pareto_front, pick_for_budget
from ncanvas_tui.board import power
from ncanvas_tui.board.capture import MANIFEST, read_everything
from ncanvas_tui.board.sysroot import Fs

BOARDS = Path(__file__).resolve().parent / "data" / "boards"
ORIN = BOARDS / "orin-nano-jp6"
TREES = ["orin-nano-jp6", "orin-agx-jp6", "xavier-agx-jp5", "nano-jp4", "empty"]
needs_model = pytest.mark.skipif(not (Path(__file__).resolve().parent.parent / "models" /
                                      "efficientnet_lite0.onnx").is_file(), reason="bundled model missing")


@pytest.fixture
def sysroot(monkeypatch):
    def use(name: str) -> Path:
        monkeypatch.setenv(board.ENV, str(BOARDS / name))
        return BOARDS / name
    return use


# ---- the reader ---------------------------------------------------------------------------------------------

def test_orin_nano_jp6_reads_like_jtop(sysroot) -> None:
    sysroot("orin-nano-jp6")
    src = board.power_source("gpu")
    assert src is not None and src.name == "ina3221" and src.total == "VDD_IN"
    # 5000 mV x 1600 mA = 8.0 W; the "sum of shunt voltages" channel (in7 / curr4) is not a rail
    assert src.read() == {"VDD_IN": 8.0, "VDD_CPU_GPU_CV": 2.5, "VDD_SOC": 2.0}
    src.close()
    c = board.conditions_snapshot()
    assert c == {"board": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "l4t": "36.4.0",
                 "nvpmodel": {"id": 2, "name": "MAXN_SUPER"}, "jetson_clocks": False,
                 "gpu_mhz": 612.0, "gpu_max_mhz": 1020.0, "gpu_min_mhz": 306.0,
                 # cv0-thermal reads -256 C (off): left out
                 "temps_c": {"cpu-thermal": 48.5, "gpu-thermal": 52.3, "soc0-thermal": 47.9, "tj-thermal": 52.1},
                 "throttled": False}
    live = board.LiveReader().read()
    assert live["power_w"] == 8.0 and live["gpu_pct"] == 47.3 and live["gpu_mhz"] == 612.0
    assert (live["temp_c"], live["temp_zone"]) == (52.3, "gpu-thermal")
    assert (live["ram_used_mib"], live["ram_total_mib"]) == (3072.0, 7620.0)
    assert board.describe_live(live) == ["8.0 W", "GPU 47%", "612 MHz", "52.3°C gpu-thermal", "RAM 3.0/7.4 GiB"]


def test_orin_agx_skips_nc_channels_and_sums_rails_without_vdd_in(sysroot) -> None:
    sysroot("orin-agx-jp6")
    src = board.power_source("cpu")
    assert src is not None and src.total is None and src.total_label == "sum of rails"
    watts = src.read()
    assert "NC" not in watts and set(watts) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert board.LiveReader().read()["power_w"] == pytest.approx(5.0 + 3.0 + 4.0 + 1.0)
    assert board.conditions_snapshot()["jetson_clocks"] is False  # GPU at max but min 306 MHz


def test_xavier_jp5_clocks_locked_and_thermal_throttle(sysroot) -> None:
    sysroot("xavier-agx-jp5")
    c = board.conditions_snapshot()
    assert c["l4t"] == "35.5.0" and c["nvpmodel"] == {"id": 0, "name": "MAXN"}
    assert c["jetson_clocks"] is True          # every CPU and the GPU at current = min = max
    assert c["throttled"] is True              # GPU-therm 96.0 >= its passive trip 95.5
    live = board.LiveReader().read()
    assert live["power_w"] == pytest.approx(11.0) and live["throttled"] is True
    assert "THROTTLED" in board.describe_live(live)


def test_nano_jp4_iio_rails(sysroot) -> None:
    sysroot("nano-jp4")
    src = board.power_source("gpu")
    assert src is not None and src.total == "POM_5V_IN"
    assert src.read() == {"POM_5V_IN": 4.0, "POM_5V_GPU": 1.2, "POM_5V_CPU": 0.8}  # in_power mW / 1000
    c = board.conditions_snapshot()
    assert c["l4t"] == "32.7.1" and c["nvpmodel"] == {"id": 1, "name": "5W"} and c["gpu_max_mhz"] == 640.0
    assert "PMIC-Die" not in c["temps_c"]      # a fixed 100 C placeholder, as jtop hides it


def test_empty_tree_invents_nothing(sysroot) -> None:
    sysroot("empty")
    assert board.power_source("gpu") is None and board.power_source("cpu") is None
    c = board.conditions_snapshot()
    assert c == {"board": None, "l4t": None, "nvpmodel": None, "jetson_clocks": None, "gpu_mhz": None,
                 "gpu_max_mhz": None, "gpu_min_mhz": None, "temps_c": {}, "throttled": None}
    assert board.describe_live(board.LiveReader().read()) == []
    meter = board.EnergyMeter("gpu")
    assert meter.sampler() is None
    assert meter.row(None, 100.0) == {"energy_mj_per_image": None, "images_per_joule": None, "power_w": None,
                                      "power_samples": 0}
    rep = meter.report()
    assert rep["power"] is None and rep["warnings"] == []


def test_orin_over_current_counters_that_move_mean_throttled(tmp_path, monkeypatch) -> None:
    import shutil

    tree = tmp_path / "orin"
    shutil.copytree(ORIN, tree)
    monkeypatch.setenv(board.ENV, str(tree))
    meter = board.EnergyMeter("gpu")
    assert meter.report()["conditions"]["throttled"] is False
    (tree / "sys/class/hwmon/hwmon3/oc3_event_cnt").write_text("9\n")  # two over-current events meanwhile
    rep = meter.report()
    assert rep["conditions"]["throttled"] is True
    assert any("throttled" in w for w in rep["warnings"])


# ---- energy by hand ---------------------------------------------------------------------------------------------

def test_integrate_power_and_counters_by_hand() -> None:
    samples = [(0.0, {"a": 2.0, "c": 10.0}), (0.5, {"a": 4.0, "c": 12.0}), (1.5, {"a": 4.0, "c": 1.0})]
    e = power.integrate(samples, {"a": "w", "c": "j"}, {"c": 20.0})
    assert e["a"] == pytest.approx((2 + 4) / 2 * 0.5 + 4 * 1.0)   # 5.5 J of trapezoids
    assert e["c"] == pytest.approx(2.0 + (1.0 - 12.0 + 20.0))       # 2 J, then a wrap at 20 J: 9 J
    assert power.integrate(samples, {"c": "j"})["c"] == pytest.approx(2.0)  # unknown wrap: skip the drop
    still = [(0.0, {"c": 5.0}), (1.0, {"c": 5.0})]
    assert power.integrate(still, {"c": "j"})["c"] is None         # a counter that never moved: unknown
    assert power.integrate(samples[:1], {"a": "w"})["a"] is None   # one reading is no energy


def test_rapl_package_energy_with_wrap(tmp_path, monkeypatch) -> None:
    z = tmp_path / "sys/class/powercap/intel-rapl:0"
    z.mkdir(parents=True)
    (z / "name").write_text("package-0\n")
    (z / "max_energy_range_uj").write_text("262143328850\n")
    (z / "energy_uj").write_text("262143000000\n")
    monkeypatch.setenv(board.ENV, str(tmp_path))
    src = board.power_source("cpu")
    assert src is not None and src.name == "rapl" and src.kinds == {"package-0": "j"}
    assert board.power_source("gpu") is None  # NVML is off while replaying; RAPL is the CPU's
    s0 = (0.0, src.read())
    (z / "energy_uj").write_text("1671150\n")  # wrapped: 328850 + 1671150 uJ = 2.0 J later
    s1 = (0.5, src.read())
    assert power.integrate([s0, s1], src.kinds, src.wraps)["package-0"] == pytest.approx(2.0)


def test_sampler_on_orin_tree_reads_8_watts(sysroot) -> None:
    sysroot("orin-nano-jp6")
    src = board.power_source("gpu")
    assert src is not None
    with pytest.raises(ValueError):
        board.PowerSampler(src, hz=5)
    s = board.PowerSampler(src, hz=50, min_samples=20)
    s.start()
    import time

    deadline = time.monotonic() + 10
    while not s.enough() and time.monotonic() < deadline:
        time.sleep(0.01)
    win = s.stop()
    src.close()
    assert win.samples >= 20 and win.seconds > 0
    assert win.avg_w == pytest.approx(8.0) and win.energy_j == pytest.approx(8.0 * win.seconds)
    assert win.rails_w() == pytest.approx({"VDD_IN": 8.0, "VDD_CPU_GPU_CV": 2.5, "VDD_SOC": 2.0})
    assert win.probes and win.probes[0]["gpu_mhz"] == 612.0


def test_a_source_whose_readings_fail_gives_unknown_energy_and_does_not_hold_the_bench() -> None:
    import time

    class Failing(board.PowerSource):
        name, total = "broken", "x"

        def __init__(self) -> None:
            super().__init__()
            self.kinds = {"x": "w"}

        def read(self) -> dict[str, float]:
            raise OSError(61, "No data available")  # what a disabled INA3221 channel answers

    meter = board.EnergyMeter("cpu", source=Failing(), fs=Fs(BOARDS / "empty"), hz=50)
    s = meter.sampler()
    assert s is not None
    s.start()
    t0 = time.monotonic()
    while not s.enough():
        time.sleep(0.01)
    assert time.monotonic() - t0 < 5           # gave up after 3 x 20 readings' time, not the bench's 10 s
    assert meter.row(s, 50.0)["energy_mj_per_image"] is None and meter.report()["power"] is None


def test_meter_row_is_power_over_throughput(sysroot) -> None:
    sysroot("orin-nano-jp6")
    meter = board.EnergyMeter("gpu", hz=50)
    s = meter.sampler()
    assert s is not None
    s.start()
    import time

    while not s.enough():
        time.sleep(0.01)
    row = meter.row(s, images_per_s=40.0)
    # 8.0 W / 40 images/s = 0.2 J = 200 mJ per image; 5 images per joule
    assert row["energy_mj_per_image"] == pytest.approx(200.0) and row["images_per_joule"] == pytest.approx(5.0)
    rep = meter.report()
    meter.close()
    assert rep["power"]["source"] == "ina3221" and rep["power"]["avg_w"] == pytest.approx(8.0)
    assert rep["power"]["rails"] == {"VDD_IN": 8.0, "VDD_CPU_GPU_CV": 2.5, "VDD_SOC": 2.0}
    assert rep["conditions"]["gpu_mhz"] == 612.0
    assert any("clocks are not locked" in w for w in rep["warnings"])


# ---- bench --json on a replayed board -------------------------------------------------------------------------

@needs_model
def test_bench_json_on_replayed_orin_reports_power_energy_and_conditions(cli, settings_path) -> None:
    r = cli("bench", "--json", "--batch", "1,2", "--seconds", "0.2", "--settings", str(settings_path),
            env={board.ENV: str(ORIN)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    p = out["power"]
    assert p["source"] == "ina3221" and p["total"] == "VDD_IN" and p["avg_w"] == pytest.approx(8.0)
    assert p["rails"] == {"VDD_IN": 8.0, "VDD_CPU_GPU_CV": 2.5, "VDD_SOC": 2.0}
    assert p["hz"] >= 10 and p["samples"] >= 40 and p["sampler_cost_pct"] >= 0
    for row in out["results"]:
        assert row["power_samples"] >= 20                   # each batch size ran long enough
        # energy per image consistent with throughput: 8 W / (images/s), by hand
        assert row["energy_mj_per_image"] == pytest.approx(8.0 / row["images_per_s"] * 1e3, rel=1e-3)
        assert row["images_per_joule"] == pytest.approx(row["images_per_s"] / 8.0, rel=1e-3)
    c = out["conditions"]
    assert c["board"].startswith("NVIDIA Jetson Orin Nano") and c["l4t"] == "36.4.0"
    assert c["nvpmodel"] == {"id": 2, "name": "MAXN_SUPER"} and c["jetson_clocks"] is False
    assert (c["gpu_mhz"], c["gpu_max_mhz"]) == (612.0, 1020.0) and c["temps_c"]["gpu-thermal"] == 52.3
    assert c["throttled"] is False
    assert "bench: warning: clocks are not locked (power mode MAXN_SUPER)" in r.stderr
    text = cli("bench", "--batch", "1", "--seconds", "0.2", "--settings", str(settings_path),
               env={board.ENV: str(ORIN)})
    assert "power: 8.00 W average (ina3221, VDD_IN" in text.stdout
    assert "nvpmodel MAXN_SUPER (2) · jetson_clocks off · GPU 612/1020 MHz" in text.stdout


@needs_model
def test_bench_json_without_a_source_invents_nothing(cli, settings_path) -> None:
    r = cli("bench", "--json", "--batch", "1", "--seconds", "0.2", "--settings", str(settings_path),
            env={board.ENV: str(BOARDS / "empty")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["power"] is None and out["warnings"] == []
    assert out["results"][0]["energy_mj_per_image"] is None and out["results"][0]["images_per_joule"] is None
    assert all(v in (None, {}) for v in out["conditions"].values())
    text = cli("bench", "--batch", "1", "--seconds", "0.2", "--settings", str(settings_path),
               env={board.ENV: str(BOARDS / "empty")})
    assert "power: no readable source here" in text.stdout


# ---- accuracy vs latency vs energy ---------------------------------------------------------------------------

def _rows() -> list[dict]:
    return [
        {"model": "a", "backend": "tensorrt", "precision": "int8", "top1": 75.0, "latency_ms": 1.0,
         "energy_mj_per_image": 9.0},
        # slower and less accurate than a, but frugal: on the front only because energy counts
        {"model": "b", "backend": "tensorrt", "precision": "fp16", "top1": 74.0, "latency_ms": 2.0,
         "energy_mj_per_image": 3.0},
        {"model": "c", "backend": "tensorrt", "precision": "fp16", "top1": 80.0, "latency_ms": 3.0,
         "energy_mj_per_image": 12.0},
        # beaten by c on all three
        {"model": "d", "backend": "onnxruntime", "precision": "fp32", "top1": 79.0, "latency_ms": 30.0,
         "energy_mj_per_image": 400.0},
        {"model": "e", "backend": "tensorrt", "precision": "fp32", "top1": 90.0, "latency_ms": None, "error": "x"},
    ]


def test_pareto_over_accuracy_latency_and_energy() -> None:
    rows = _rows()
    assert [r["model"] for r in pareto_front(rows)] == ["a", "b", "c"]
    assert rows[3]["pareto"] is False
    rows = _rows()
    rows[1]["energy_mj_per_image"] = None   # one unknown: energy is not an axis at all, b is dominated by a
    assert [r["model"] for r in pareto_front(rows)] == ["a", "c"]


def test_budget_mj_picks_the_most_accurate_under_an_energy_budget() -> None:
    rows = _rows()
    assert pick_for_budget(rows, budget_mj=10.0)["model"] == "a"
    assert pick_for_budget(rows, budget_mj=12.0)["model"] == "c"
    assert pick_for_budget(rows, budget_mj=5.0)["model"] == "b"
    assert pick_for_budget(rows, budget_mj=1.0) is None
    assert pick_for_budget(rows, 2.5, 5.0)["model"] == "b"           # both budgets at once
    rows[1]["energy_mj_per_image"] = None
    assert pick_for_budget(rows, budget_mj=5.0) is None                # unknown energy never fits


@needs_model
def test_cli_bench_all_budget_mj(cli, settings_path) -> None:
    r = cli("bench", "--budget-mj", "100000", "--seconds", "0.2", "--json", "--settings", str(settings_path),
            env={board.ENV: str(ORIN)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["energy_axis"] is True and out["budget_mj"] == 100000
    assert out["pick"]["model"] == "efficientnet_lite0" and out["pick"]["energy_mj_per_image"] > 0
    assert out["conditions"]["l4t"] == "36.4.0"
    none = cli("bench", "--budget-mj", "5", "--seconds", "0.2", "--settings", str(settings_path),
               env={board.ENV: str(BOARDS / "empty")})
    assert none.returncode == 0, none.stderr
    assert "budget 5 mJ/image: nothing fits; energy per image is unknown here" in none.stdout
    bad = cli("bench", "--budget-mj", "0", "--settings", str(settings_path))
    assert bad.returncode == 2 and "--budget-mj must be a positive number" in bad.stderr


# ---- capture and replay ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TREES)
def test_capture_board_round_trips(name, tmp_path) -> None:
    original = read_everything(Fs(BOARDS / name))
    cap = board.capture_board(tmp_path / "cap", base=BOARDS / name)
    assert cap["state"] == original
    assert read_everything(Fs(tmp_path / "cap")) == original
    assert json.loads((tmp_path / "cap" / MANIFEST).read_text())["files"] == cap["files"]


def test_capture_of_this_machine_replays_the_same_conditions(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(board.ENV, "/")  # files only: a live NVML GPU would read differently a moment later
    cap = board.capture_board(tmp_path / "here", base=Path("/"))
    assert board.conditions_snapshot(Fs(tmp_path / "here")) == cap["state"]["conditions"]


def test_cli_capture_board(cli, tmp_path) -> None:
    dest = tmp_path / "orin-capture"
    r = cli("doctor", "--capture-board", str(dest), env={board.ENV: str(ORIN)})
    assert r.returncode == 0, r.stderr
    assert f"NCANVAS_SYSROOT={dest}" in r.stdout
    rep = cli("doctor", "--json", env={board.ENV: str(dest)})
    assert rep.returncode == 0, rep.stderr
    b = json.loads(rep.stdout)["board"]
    assert b["conditions"]["nvpmodel"] == {"id": 2, "name": "MAXN_SUPER"}
    assert b["power"]["gpu"] == {"source": "ina3221", "total": "VDD_IN"}
    again = cli("doctor", "--capture-board", str(dest))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not an empty folder" in again.stderr


# ---- history runs, imports -------------------------------------------------------------------------------------

def test_history_runs_record_the_conditions(settings, monkeypatch) -> None:
    from ncanvas_tui.history.store import open_history

    monkeypatch.setenv(board.ENV, str(ORIN))
    store = open_history(settings)
    run = store.record_inference({"model": "m", "backend": "onnxruntime", "precision": "fp32", "results": [],
                                  "errors": [], "timing_ms": {}})
    inf = store.get_run(run)["inferences"][0]
    assert inf["conditions"]["l4t"] == "36.4.0" and inf["conditions"]["jetson_clocks"] is False
    assert '"conditions"' in store.export(run, "json")
    assert ("Conditions: NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super · L4T 36.4.0 · "
            "nvpmodel MAXN_SUPER (2) · jetson_clocks off · GPU 612/1020 MHz") in store.export(run, "md")
    monkeypatch.setenv(board.ENV, str(BOARDS / "empty"))
    bare = store.record_inference({"model": "m", "backend": "onnxruntime", "precision": "fp32", "results": [],
                                   "errors": [], "timing_ms": {}})
    assert "Conditions:" not in store.export(bare, "md")  # nothing known: no line


def test_board_needs_neither_textual_nor_nvml() -> None:
    import subprocess

    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('textual', 'pynvml'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
from ncanvas_tui import board
print(board.conditions_snapshot()['board'], board.power_source('gpu'))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, board.ENV: str(ORIN)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("NVIDIA Jetson Orin Nano") and "Ina3221Source" in r.stdout


# ---- NVML -------------------------------------------------------------------------------------------------------

def _stand_in_nvml(calls: list[str]):
    """A stand-in for pynvml's module surface (the real library runs in the gpu test below)."""
    import types

    fake = types.ModuleType("pynvml")
    fake.NVML_CLOCK_GRAPHICS, fake.NVML_TEMPERATURE_GPU = 0, 0
    fake.nvmlClocksEventReasonGpuIdle, fake.nvmlClocksEventReasonSwThermalSlowdown = 0x1, 0x20
    fake.nvmlClocksEventReasonSwPowerCap, fake.nvmlClocksEventReasonHwSlowdown = 0x4, 0x8
    energy = [5_000_000]

    def rec(name, value):
        def fn(*args):
            calls.append(name if not args else f"{name}{args}")
            return value() if callable(value) else value
        return fn

    def tick():
        energy[0] += 1500
        return energy[0]

    fake.nvmlInit = rec("init", None)
    fake.nvmlDeviceGetHandleByIndex = rec("by_index", "h")
    fake.nvmlDeviceGetHandleByUUID = rec("by_uuid", "h")
    fake.nvmlDeviceGetName = rec("name", b"Stand-in GPU")
    fake.nvmlDeviceGetPowerUsage = rec("power", 150_000)                    # mW
    fake.nvmlDeviceGetTotalEnergyConsumption = rec("energy", tick)         # mJ
    fake.nvmlDeviceGetUtilizationRates = rec("util", types.SimpleNamespace(gpu=87, memory=10))
    fake.nvmlDeviceGetClockInfo = rec("clock", 1755)
    fake.nvmlDeviceGetMaxClockInfo = rec("max_clock", 1980)
    fake.nvmlDeviceGetTemperature = rec("temp", 64)
    fake.nvmlDeviceGetCurrentClocksEventReasons = rec("reasons", 0x20 | 0x1)  # thermal slowdown (+ idle)
    return fake


def test_nvml_readings_and_what_they_mean(monkeypatch) -> None:
    from ncanvas_tui.board import nvml

    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", _stand_in_nvml(calls))
    monkeypatch.setattr(nvml, "_STATE", {})
    monkeypatch.delenv(board.ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234,GPU-5678")
    empty = Fs(BOARDS / "empty")  # no Jetson files: a desktop
    src = board.power_source("gpu", empty)
    assert src is not None and src.name == "nvml" and src.kinds == {"gpu": "j"}
    assert "by_uuid('GPU-1234',)" in calls                      # the first visible GPU does the work
    assert src.read() == {"gpu": pytest.approx(5003.0)}         # the energy counter in J
    c = board.conditions_snapshot(empty)
    assert (c["gpu"], c["gpu_mhz"], c["gpu_max_mhz"], c["temps_c"]) == ("Stand-in GPU", 1755, 1980, {"gpu": 64.0})
    assert c["throttled"] is True and c["jetson_clocks"] is None
    live = board.LiveReader(empty).read()
    assert (live["power_w"], live["gpu_pct"], live["gpu_mhz"], live["temp_c"]) == (150.0, 87.0, 1755, 64.0)
    assert board.power_source("cpu", empty) is None             # CPU work is not the GPU's power
    monkeypatch.setenv(board.ENV, str(BOARDS / "empty"))
    assert nvml.device() is None                                # replaying a tree: no live library


# ---- NVML on a real GPU --------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_nvml_sampler_reads_a_known_gpu_load(monkeypatch) -> None:
    """The sampler through the real NVML library while matmuls keep the GPU busy (torch or cupy)."""
    import threading
    import time

    pytest.importorskip("pynvml")
    monkeypatch.delenv(board.ENV, raising=False)
    from ncanvas_tui.board import nvml

    if nvml.device() is None:
        pytest.skip("no NVIDIA GPU visible to NVML")
    # the known load runs in a child process: torch/cupy would keep the CUDA primary context of THIS
    # process retained for good (the GPU worker tests check that shutdown releases it)
    import subprocess
    import sys

    code = ("import sys, time\n"
            "try:\n    import torch; a = torch.randn(8192, 8192, device='cuda'); f = lambda: (a @ a).sum().item()\n"
            "except Exception:\n    import cupy as cp; a = cp.random.standard_normal((8192, 8192), dtype=cp.float32)\n"
            "    f = lambda: float((a @ a).sum())\n"
            "end = time.time() + float(sys.argv[1])\nprint('loaded', flush=True)\n"
            "while time.time() < end:\n    f()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "20"], stdout=subprocess.PIPE, text=True)
    stop = threading.Event()

    class _Th:
        def join(self, timeout: float) -> None:
            proc.kill()
            proc.wait(timeout)

    if not (proc.stdout and proc.stdout.readline().startswith("loaded")):
        proc.kill()
        pytest.skip("neither torch nor cupy can load the GPU here")
    idle_w = nvml.power_w()
    th = _Th()
    try:
        time.sleep(1.0)  # let the clocks ramp
        src = board.power_source("gpu")
        assert src is not None and src.name == "nvml"
        s = board.PowerSampler(src, hz=20, min_samples=20)
        s.start()
        time.sleep(2.0)
        while not s.enough():
            time.sleep(0.05)
        win = s.stop()
        st = nvml.state()
    finally:
        stop.set()
        th.join(timeout=30)
    print(f"\nNVML {st['name']}: idle {idle_w} W; under matmul load {win.avg_w:.1f} W average over "
          f"{win.seconds:.2f} s, {win.samples} samples ({src.total_label}), energy {win.energy_j:.1f} J, "
          f"load {st['load_pct']}%, {st['mhz']}/{st['max_mhz']} MHz, {st['temp_c']} C, throttled {st['throttled']}, "
          f"sampler CPU {win.cpu_s * 1e3:.1f} ms")
    assert win.samples >= 20 and win.energy_j is not None and win.energy_j > 0
    assert 10 < win.avg_w < 2000
    assert st["load_pct"] is not None and st["load_pct"] > 50
