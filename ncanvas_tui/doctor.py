"""What this machine has for ncanvas: Python, TensorRT / RTX / ONNX Runtime, GPU, settings, endpoints.

Nothing here fails: every probe reports what it found or why not. Keys are never
printed, only whether the env var they come from is set.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ncanvas_tui.settings import Settings


def _dist_version(*names: str) -> str | None:
    for n in names:
        try:
            return md.version(n)
        except md.PackageNotFoundError:
            continue
    return None


def _module(name: str) -> dict[str, Any]:
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - a probe reports, never raises
        return {"available": False, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
    return {"available": True, "version": getattr(mod, "__version__", None)}


def _tensorrt() -> dict[str, Any]:
    from ncanvas_tui.backends.base import real_tensorrt

    info = _module("tensorrt")
    trt = real_tensorrt() if info["available"] else None
    if info["available"] and trt is None:
        info = {"available": False, "error": "`tensorrt` found but it is not the TensorRT library "
                "(an empty namespace package or stubs)"}
    if trt is not None:
        info["version"] = getattr(trt, "__version__", None)
        info["features"] = {
            "fp16_flag": hasattr(trt.BuilderFlag, "FP16"),
            "int8_calibrators": hasattr(trt, "IInt8EntropyCalibrator2"),
            "strongly_typed": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
            "progress_monitor": hasattr(trt, "IProgressMonitor"),
        }
    else:
        info["hint"] = ("on a Jetson, TensorRT comes with JetPack: create the venv with "
                        "--system-site-packages so `import tensorrt` works")
    return info


def _onnxruntime() -> dict[str, Any]:
    info = _module("onnxruntime")
    if info["available"]:
        import onnxruntime as ort

        info["providers"] = list(ort.get_available_providers())
    return info


def _gpu() -> dict[str, Any]:
    gpu: dict[str, Any] = {"present": False, "name": None, "compute_capability": None, "source": None}
    model = Path("/proc/device-tree/model")
    if model.exists():
        try:
            gpu["board"] = model.read_text(errors="replace").strip("\x00\n ")
        except OSError:
            pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > 0:
            dev = cuda.Device(0)
            cc = dev.compute_capability()
            gpu.update(present=True, name=dev.name(), compute_capability=f"{cc[0]}.{cc[1]}",
                       memory_mib=dev.total_memory() // (1 << 20), source="pycuda",
                       integrated=bool(dev.get_attribute(cuda.device_attribute.INTEGRATED)))
            return gpu
    except Exception as e:  # noqa: BLE001
        gpu["pycuda_error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=False).stdout.strip().splitlines()
            if out:
                name, _, cc = out[0].partition(",")
                gpu.update(present=True, name=name.strip(), compute_capability=cc.strip() or None,
                           source="nvidia-smi")
        except (OSError, subprocess.SubprocessError):
            pass
    if not gpu["present"] and Path("/dev/nvhost-ctrl-gpu").exists():
        gpu.update(present=True, name="Jetson integrated GPU", source="/dev/nvhost-ctrl-gpu")
    return gpu


def _board() -> dict[str, Any]:
    """Run conditions and where power is read from (ncanvas_tui.board)."""
    from ncanvas_tui import board

    out: dict[str, Any] = {"sysroot": str(board.root()), "conditions": board.conditions_snapshot(), "power": {}}
    for device in ("gpu", "cpu"):
        try:
            src = board.power_source(device)
        except Exception:  # noqa: BLE001 - a probe reports, never raises
            src = None
        out["power"][device] = None if src is None else {"source": src.name, "total": src.total_label}
        if src is not None:
            src.close()
    return out


def _endpoint(section: Any, kind: str) -> dict[str, Any]:
    from ncanvas_tui.endpoints import redact_url

    env = section.api_key_env
    return {
        "kind": kind, "base_url": redact_url(section.base_url), "model": section.model,
        "api_key_env": env or None,
        "key_present": bool(env and os.environ.get(env)) if env else None,
        "provider": getattr(section, "provider", None),
    }


def _endpoints(settings: Settings) -> dict[str, Any]:
    """[llm] and [imagegen], each tried once (in parallel, a short timeout): reachable / detail."""
    from concurrent.futures import ThreadPoolExecutor

    from ncanvas_tui.probe import probe_section

    sections = {"llm": settings.llm, "imagegen": settings.imagegen}
    with ThreadPoolExecutor(max_workers=2) as pool:
        probes = {k: pool.submit(probe_section, sec) for k, sec in sections.items()}
        out = {}
        for k, sec in sections.items():
            p = probes[k].result()
            out[k] = {**_endpoint(sec, k), "reachable": p.reachable, "detail": p.detail}
    return out


def report(settings: Settings) -> dict[str, Any]:
    from ncanvas_tui import resources
    from ncanvas_tui.backends.base import resolve_backend
    from ncanvas_tui.vision import catalog

    default = catalog.find(settings, settings.inference.model) if settings.inference.model else None
    default_path = default.locate(settings) if default else None
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform(), "machine": platform.machine()},
        "ncanvas": {"version": importlib.import_module("ncanvas_tui").__version__},
        "settings": {"file": str(settings.source) if settings.source else None,
                     "defaults_only": settings.source is None, "origin": settings.origin,
                     "user_file": str(resources.user_config_file())},
        "paths": {name: {"path": str(value), "exists": Path(value).exists()}
                  for name, value in settings.public_dict()["paths"].items()},
        "data": {"bundled_models": str(resources.bundled_model_dir()), "rails": str(resources.bundled_rails()),
                 "sample_photos": str(resources.sample_photos()),
                 "checkout": str(resources.checkout_root()) if resources.checkout_root() else None},
        "tensorrt": _tensorrt(),
        "tensorrt_rtx": {**_module("tensorrt_rtx"), "dist": _dist_version("tensorrt-rtx-cu13", "tensorrt-rtx")},
        "onnxruntime": _onnxruntime(),
        "polygraphy": _module("polygraphy"),
        "pycuda": {"available": _dist_version("pycuda") is not None, "version": _dist_version("pycuda")},
        "gpu": _gpu(),
        "board": _board(),
        "backend": {"configured": settings.inference.backend,
                    "auto_resolves_to": resolve_backend(settings.inference.backend)},
        "model": {"name": settings.inference.model, "path": str(default_path) if default_path else None,
                  "present": default_path is not None},
        **_endpoints(settings),
        "guardrails": {"enabled": settings.guardrails.enabled, "config": str(settings.guardrails.config),
                       "config_present": (settings.guardrails.config / "config.yml").is_file()},
    }


def _board_line(b: dict[str, Any] | None) -> str:
    from ncanvas_tui.board import describe_conditions

    if not b:
        return "board         unknown"
    src = {k: v for k, v in b["power"].items() if v}
    power = "; ".join(f"{k} work: {v['source']} ({v['total']})" for k, v in src.items()) or "no readable source"
    where = "" if b["sysroot"] == "/" else f" [replaying {b['sysroot']}]"
    return (f"board         {describe_conditions(b['conditions'])}{where}\n"
            f"power         {power}")


_ORIGINS = {"--settings": "from --settings", "$NCANVAS_SETTINGS": "from $NCANVAS_SETTINGS",
            "checkout": "the checkout's", "user": "your own (ncanvas init)"}


def _settings_line(s: dict[str, Any]) -> str:
    if not s.get("file"):
        return f"built-in defaults (no settings file; `ncanvas init` writes {s.get('user_file')})"
    return f"{s['file']} ({_ORIGINS.get(s.get('origin', ''), s.get('origin'))})"


def _path_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    for name, info in r.get("paths", {}).items():
        lines.append(f"  {name:<11} {info['path']}{'' if info['exists'] else '  (not there yet)'}")
    data = r.get("data") or {}
    if data:
        lines.append(f"  {'bundled':<11} model {data['bundled_models']}, rails {data['rails']}, "
                     f"sample photos {data['sample_photos']}")
    return lines


def format_report(r: dict[str, Any]) -> str:
    def yes(info: dict[str, Any]) -> str:
        if info.get("available"):
            return f"yes {info.get('version') or ''}".strip()
        return f"no ({info.get('error', 'not installed')})"

    gpu = r["gpu"]
    lines = [
        f"python        {r['python']['version']} ({r['python']['machine']}) {r['python']['executable']}",
        f"settings      {_settings_line(r['settings'])}",
        *_path_lines(r),
        f"tensorrt      {yes(r['tensorrt'])}",
    ]
    if r["tensorrt"].get("hint"):
        lines.append(f"              hint: {r['tensorrt']['hint']}")
    if r["tensorrt"].get("features"):
        lines.append("              " + ", ".join(f"{k}={v}" for k, v in r["tensorrt"]["features"].items()))
    lines += [
        f"tensorrt-rtx  {yes(r['tensorrt_rtx'])}",
        f"onnxruntime   {yes(r['onnxruntime'])} providers: {', '.join(r['onnxruntime'].get('providers', []))}",
        f"polygraphy    {yes(r['polygraphy'])}",
        f"pycuda        {'yes ' + r['pycuda']['version'] if r['pycuda']['available'] else 'no'}",
        f"gpu           {gpu['name'] + ' (compute ' + str(gpu['compute_capability']) + ')' if gpu['present'] else 'none'}"
        + (f"  board: {gpu['board']}" if gpu.get("board") else ""),
        _board_line(r.get("board")),
        f"backend       {r['backend']['configured']} -> {r['backend']['auto_resolves_to']}",
        f"model         {r['model']['name']}: {r['model']['path'] or 'NOT FOUND'}",
    ]
    for k in ("llm", "imagegen"):
        e = r[k]
        key = ("key not needed" if e["api_key_env"] is None else
               f"key ${e['api_key_env']} {'set' if e['key_present'] else 'NOT SET'}")
        prov = f"{e['provider']} " if e.get("provider") else ""
        lines.append(f"{k:<13} {prov}{e['base_url']} model {e['model']}, {key}")
        if e.get("detail"):
            lines.append(f"              {e['detail']}")
    g = r["guardrails"]
    lines.append(f"guardrails    {'on' if g['enabled'] else 'off'}, config {g['config']}"
                 f"{'' if g['config_present'] else ' (config.yml MISSING)'}")
    if "selftest" in r:
        st = r["selftest"]
        lines.append(f"gpu selftest  {'PASS' if st.get('ok') else 'FAIL'}")
        for step in st.get("steps", []):
            lines.append(f"              {'ok  ' if step.get('ok') else 'FAIL'} {step.get('name')}: "
                         f"{step.get('detail', '')}")
    return "\n".join(lines)
