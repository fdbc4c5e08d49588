"""``ncanvas doctor --gpu-selftest``: every step reported, with the reason when it cannot pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import has_cuda

from ncanvas_tui.engines import compat
from ncanvas_tui.engines.acceptance import acceptance_run
from ncanvas_tui.engines.selftest import tiny_classifier

has_rtx = compat.available("tensorrt-rtx")
has_trt = compat.available("tensorrt")




def _steps(rep: dict) -> dict[str, bool | None]:
    return {s["step"]: s["ok"] for s in rep["steps"]}


def test_tiny_classifier_runs_on_onnxruntime_at_any_batch(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = tiny_classifier(tmp_path / "tiny.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3, 4):
        y = sess.run(None, {"input": np.ones((n, 3, 32, 32), np.float32)})[0]
        assert y.shape == (n, 10) and np.isfinite(y).all()


STEPS = ["onnxruntime", "tensorrt", "gpu", "build fp32", "build fp16", "build int8", "int8 cache reuse",
         "int8 foreign cache", "timing cache", "second process", "vs onnxruntime", "vs polygraphy", "latency",
         "dla", "cancel"]


@pytest.mark.skipif(has_trt or has_rtx, reason="a TensorRT flavour is installed here")
def test_without_tensorrt_every_step_says_why_it_did_not_run(settings) -> None:
    messages: list[str] = []
    rep = acceptance_run(settings, messages.append)
    steps = _steps(rep)
    assert list(steps) == STEPS
    assert steps["onnxruntime"] is True and steps["tensorrt"] is None
    assert all(steps[s] is None for s in STEPS[3:])
    detail = next(s["detail"] for s in rep["steps"] if s["step"] == "tensorrt")
    assert detail.startswith("not run here: TensorRT not importable")
    assert rep["ok"] is False


@pytest.mark.rtx
@pytest.mark.slow
@pytest.mark.skipif(not has_rtx, reason="tensorrt-rtx-cu13 not installed")
def test_the_acceptance_run_with_tensorrt_rtx_here(settings, tmp_path: Path) -> None:
    """What runs here runs for real (RTX builds, cache reuse, cancel by token and by SIGINT); what needs
    a GPU says "not run here"; the exit is non-zero; a Markdown copy is written."""
    messages: list[str] = []
    rep = acceptance_run(settings, messages.append, backend="tensorrt-rtx", keep=tmp_path)
    steps = _steps(rep)
    assert list(steps) == STEPS, rep
    for s in ("onnxruntime", "tensorrt", "build fp32", "build fp16", "build int8", "int8 cache reuse",
              "int8 foreign cache", "timing cache", "dla", "cancel"):
        assert steps[s] is True, (s, rep)
    detail = {s["step"]: s["detail"] for s in rep["steps"]}
    assert "calibrated nothing" in detail["int8 cache reuse"]
    assert detail["int8 foreign cache"].startswith("n/a") and detail["timing cache"].startswith("n/a")
    assert detail["dla"] == "n/a: no DLA on this device (tensorrt-rtx)"
    assert "token: stopped, nothing written" in detail["cancel"] and "SIGINT: exit 130" in detail["cancel"]
    plans = sorted((tmp_path / "engines").glob("efficientnet_lite0.tensorrt-rtx.*.plan"))
    assert len(plans) == 3 and set(rep["artefacts"]) == {"fp32", "fp16", "int8"}
    if not has_cuda():
        assert steps["gpu"] is None and rep["ok"] is False
        assert all(steps[s] is None for s in ("second process", "vs onnxruntime", "vs polygraphy", "latency"))
    md = Path(rep["markdown"])
    assert md.is_file() and md.parent == settings.paths.output and "| build int8 | pass |" in md.read_text()


@pytest.mark.skipif(has_trt or has_rtx, reason="a TensorRT flavour is installed here")
def test_doctor_gpu_selftest_json_and_exit_code(cli, settings_path: Path) -> None:
    out = cli("doctor", "--gpu-selftest", "--json", "--settings", str(settings_path))
    data = json.loads(out.stdout)
    st = data["selftest"]
    assert [s["step"] for s in st["steps"]] == STEPS
    assert st["ok"] is False and out.returncode == 1
    text = cli("doctor", "--gpu-selftest", "--settings", str(settings_path))
    assert "GPU self-test" in text.stdout and "NOT PROVEN" in text.stdout and "not run here" in text.stdout


@pytest.mark.tensorrt
@pytest.mark.skipif(not (has_trt and has_cuda()), reason="needs TensorRT and a GPU (a Jetson with JetPack)")
def test_full_acceptance_run_passes_on_a_tensorrt_machine(settings) -> None:
    rep = acceptance_run(settings, backend="tensorrt")
    assert rep["ok"] is True, rep


def test_the_sidecar_replaces_an_old_one_atomically(tmp_path: Path, monkeypatch) -> None:
    import os
    import stat

    from ncanvas_tui.engines.store import atomic_write_bytes

    target = tmp_path / "m.onnx.json"
    target.write_text("old", encoding="utf-8")
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b)))
    atomic_write_bytes(target, b'{"input_size": 32}')
    assert target.read_text(encoding="utf-8") == '{"input_size": 32}'
    assert len(replaced) == 1 and replaced[0][1] == str(target) and Path(replaced[0][0]).parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
