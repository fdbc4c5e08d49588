"""Board state: power, temperatures, clocks, power mode and throttling of the machine that does the work.

Core package (no Textual; NVML imported lazily). Readers:

- Jetson: INA3221 power rails, thermal zones, GPU load and clocks (devfreq), board model,
  L4T release, nvpmodel mode, jetson_clocks (inferred as jtop does), over-current throttling.
- Desktop NVIDIA GPU: NVML (``nvidia-ml-py``): power, energy counter, temperature, load, clocks.
- x86 CPU: RAPL package energy where readable.

``NCANVAS_SYSROOT=DIR`` makes the file readers look under DIR instead of ``/`` (and turns NVML
off); ``ncanvas doctor --capture-board DIR`` writes such a tree. Unknowns are None, never made up.

    from ncanvas_tui import board
    board.conditions_snapshot()        # run conditions (bench, history runs, engine sidecars)
    meter = board.EnergyMeter("gpu")   # energy around a benchmark
    board.LiveReader().read()          # the TUI strip's figures
"""

from __future__ import annotations

from ncanvas_tui.board.capture import CaptureError, capture_board
from ncanvas_tui.board.meter import EnergyMeter, backend_device
from ncanvas_tui.board.power import PowerSampler, PowerSource, PowerWindow, integrate, power_source
from ncanvas_tui.board.state import LiveReader, conditions_snapshot, describe_conditions, describe_live
from ncanvas_tui.board.sysroot import ENV, Fs, root

__all__ = ["ENV", "CaptureError", "EnergyMeter", "Fs", "LiveReader", "PowerSampler", "PowerSource",
           "PowerWindow", "backend_device", "capture_board", "conditions_snapshot", "describe_conditions", "describe_live",
           "integrate", "power_source", "root"]
