"""``ncanvas doctor --gpu-selftest``: every step reported, with the reason when it cannot pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import has_cuda

from ncanvas_tui.engines import compat
from ncanvas_tui.engines.selftest import STEPS, gpu_selftest, tiny_classifier

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


@pytest.mark.skipif(has_trt, reason="the real TensorRT is installed here")
def test_without_tensorrt_the_report_says_so_and_skips_the_rest(settings) -> None:
    messages: list[str] = []
    rep = gpu_selftest(settings, messages.append, backend="tensorrt")
    steps = _steps(rep)
    assert list(steps) == list(STEPS)
    assert steps["onnx"] is True and steps["onnxruntime"] is True
    assert steps["tensorrt"] is False
    assert steps["gpu"] is has_cuda()          # the GPU is still checked and reported
    assert all(steps[s] is None for s in ("build", "run", "compare"))
    detail = next(s["detail"] for s in rep["steps"] if s["step"] == "tensorrt")
    assert detail.startswith("TensorRT not importable")
    assert rep["ok"] is False
    assert any(m.startswith("tensorrt: FAIL") for m in messages)


@pytest.mark.rtx
@pytest.mark.skipif(not has_rtx, reason="tensorrt-rtx-cu13 not installed")
def test_tensorrt_rtx_builds_the_tiny_engine_even_without_a_gpu(settings, tmp_path: Path) -> None:
    rep = gpu_selftest(settings, backend="tensorrt-rtx", keep=tmp_path)
    steps = _steps(rep)
    assert steps["tensorrt"] is True and steps["build"] is True, rep
    plans = list((tmp_path / "engines").glob("ncanvas_selftest.tensorrt-rtx.fp32.*.plan"))
    assert plans and plans[0].stat().st_size > 10_000
    assert plans[0].with_name(plans[0].name + ".json").is_file()
    if not has_cuda():
        assert steps["gpu"] is False and steps["run"] is None and rep["ok"] is False
        gpu_detail = next(s["detail"] for s in rep["steps"] if s["step"] == "gpu")
        assert gpu_detail.startswith("no GPU:")


@pytest.mark.skipif(has_trt, reason="the real TensorRT is installed here")
def test_doctor_gpu_selftest_json_and_exit_code(cli, settings_path: Path) -> None:
    out = cli("doctor", "--gpu-selftest", "--json", "--settings", str(settings_path))
    data = json.loads(out.stdout)
    st = data["selftest"]
    assert [s["step"] for s in st["steps"]] == list(STEPS)
    assert st["ok"] is False and out.returncode == 1
    text = cli("doctor", "--gpu-selftest", "--settings", str(settings_path))
    assert "GPU self-test" in text.stdout and "FAIL" in text.stdout


@pytest.mark.tensorrt
@pytest.mark.skipif(not (has_trt and has_cuda()), reason="needs TensorRT and a GPU (a Jetson with JetPack)")
def test_full_selftest_passes_on_a_tensorrt_machine(settings) -> None:
    rep = gpu_selftest(settings, backend="tensorrt")
    assert rep["ok"] is True, rep
    assert rep["max_abs_diff"] <= 1e-2


def test_the_model_sidecar_is_written_whole_or_not_at_all(settings, tmp_path: Path, monkeypatch) -> None:
    import os

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    rep = gpu_selftest(settings, backend="tensorrt", keep=tmp_path)
    assert _steps(rep)["onnx"] is False
    assert "No space left on device" in next(s["detail"] for s in rep["steps"] if s["step"] == "onnx")
    models = tmp_path / "models"
    assert not (models / "ncanvas_selftest.onnx.json").exists()  # no half-written sidecar
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []  # and no temp file


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
