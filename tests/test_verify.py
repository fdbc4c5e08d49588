"""``ncanvas verify``: a candidate (quantized model, engine) against fp32 ONNX Runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ncanvas_tui.engines.artefacts import Selection
from ncanvas_tui.engines.build import BuildRequest, build, plan_build
from ncanvas_tui.engines.verify import compare, load_verify, verify, verify_path
from ncanvas_tui.errors import CancelledError
from ncanvas_tui.progress import CancelToken
from ncanvas_tui.worker import GpuWorker

ORT_FP32 = Selection(model="efficientnet_lite0", backend="onnxruntime", precision="fp32")

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "efficientnet_lite0.onnx"

needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="bundled model models/efficientnet_lite0.onnx missing")


def test_compare_counts_agreement_overlap_and_diffs() -> None:
    ref = np.array([[9, 8, 7, 6, 5, 0, 0], [0, 1, 2, 3, 4, 5, 9]], np.float32)
    cand = ref.copy()
    cand[1] = [9, 1, 2, 3, 4, 5, 0]          # row 1: top-1 moves from class 6 to class 0
    out = compare(ref, cand)
    assert out["top1_agree"].tolist() == [True, False]
    assert out["top5_overlap"].tolist() == [1.0, 0.8]   # {6,5,4,3,2} vs {0,5,4,3,2}
    assert out["max_abs_diff"].tolist() == [0.0, 9.0]
    assert out["mean_abs_diff"][1] == pytest.approx(18 / 7)
    with pytest.raises(ValueError):
        compare(ref, cand[:, :5])


@needs_model
def test_cli_fp32_vs_itself_agrees_exactly(cli, settings_path: Path, workdir: Path) -> None:
    photos = sorted(str(p) for p in (workdir / "pictures").glob("*.jpg"))[:3]
    out = cli("verify", "efficientnet_lite0", "--precision", "fp32", "--backend", "onnxruntime",
              "--images", *photos, "--json", "--settings", str(settings_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("model", "backend", "precision", "images", "top1_agreement", "top5_overlap", "max_abs_diff",
                "per_image"):
        assert key in data
    assert (data["model"], data["backend"], data["precision"], data["images"]) == \
        ("efficientnet_lite0", "onnxruntime", "fp32", 3)
    assert data["top1_agreement"] == 1.0 and data["top5_overlap"] == 1.0 and data["max_abs_diff"] == 0.0
    assert [p["image"] for p in data["per_image"]] == photos
    assert any("reference model itself" in n for n in data["notes"])
    assert data["stored"] is None               # never written beside the reference ONNX


@needs_model
@pytest.mark.slow
def test_int8_onnxruntime_against_fp32_on_the_calibration_folder(settings, workdir: Path) -> None:
    pytest.importorskip("onnx_graphsurgeon", reason="quantization sanitizes with onnx-graphsurgeon ([engines] extra)")
    built = build(plan_build(settings, BuildRequest("efficientnet_lite0", "int8", backend="onnxruntime"))).artefact
    assert built is not None
    res = verify(settings, Selection(model="efficientnet_lite0", backend="onnxruntime", precision="int8"))
    n = len(list((workdir / "calibdata").glob("*.jpg")))
    assert res.images == n and res.backend == "onnxruntime" and res.precision == "int8"
    assert res.id == built.id and res.calibrator == "entropy2" and res.artefact == str(built.path)
    assert "int8" in Path(res.artefact).name and res.artefact != res.reference["model"]
    assert res.max_abs_diff > 0.0                # a different model really ran
    assert res.top1_agreement >= 0.8 and res.top5_overlap >= 0.6
    # stored beside the quantized model, readable for `engines list` / the TUI
    stored = load_verify(Path(res.artefact))
    assert stored is not None and stored["top1_agreement"] == res.top1_agreement
    assert Path(res.stored or "") == verify_path(Path(res.artefact))
    # bench --all measures the built int8 model too and shows its verify result
    from ncanvas_tui.bench import run_bench_all

    table = run_bench_all(settings, seconds=0.1, images=[str(p) for p in (workdir / "pictures").glob("*.jpg")][:2])
    row = next(r for r in table["rows"] if r["backend"] == "onnxruntime" and r["precision"] == "int8")
    assert row["verify_top1_agreement"] == res.top1_agreement and row["latency_ms"] > 0
    # a rebuilt (changed) artefact does not show the old verdict
    with open(res.artefact, "ab") as f:
        f.write(b"\0")
    assert load_verify(Path(res.artefact)) is None


@needs_model
def test_bad_images_are_listed_and_the_rest_compared(cli, settings_path: Path, workdir: Path) -> None:
    bad = workdir / "notes.jpg"
    bad.write_text("not a picture")
    good = min((workdir / "pictures").glob("*.jpg"))
    out = cli("verify", "efficientnet_lite0", "--precision", "fp32", "--backend", "onnxruntime",
              "--images", str(bad), str(good), str(workdir / "missing.png"), "--settings", str(settings_path))
    assert out.returncode == 0, out.stderr
    assert "top-1 agreement 100.0%" in out.stdout
    assert f"ERROR {bad}" in out.stdout and "missing.png" in out.stdout


@needs_model
def test_no_usable_image_is_one_clear_line_and_exit_2(cli, settings_path: Path, workdir: Path) -> None:
    bad = workdir / "empty.jpg"
    bad.write_bytes(b"")
    out = cli("verify", "efficientnet_lite0", "--precision", "fp32", "--backend", "onnxruntime",
              "--images", str(bad), "--settings", str(settings_path))
    assert out.returncode == 2
    assert out.stderr.startswith("ncanvas: error: verify: no image could be compared") and "empty.jpg" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@needs_model
def test_missing_calibration_folder_names_it(cli, settings_path: Path, workdir: Path) -> None:
    shutil.rmtree(workdir / "calibdata")
    out = cli("verify", "efficientnet_lite0", "--precision", "fp32", "--backend", "onnxruntime",
              "--settings", str(settings_path))
    assert out.returncode == 2
    assert "calibdata: calibration folder not found" in out.stderr


@needs_model
def test_tensorrt_without_an_engine_says_how_to_build_it(cli, settings_path: Path) -> None:
    out = cli("verify", "efficientnet_lite0", "--precision", "fp16", "--backend", "tensorrt",
              "--settings", str(settings_path))
    assert out.returncode == 2
    assert "no tensorrt fp16 artefact of efficientnet_lite0" in out.stderr
    assert "`ncanvas build efficientnet_lite0 --precision fp16 --backend tensorrt`" in out.stderr


@needs_model
def test_in_the_worker_progress_arrives_and_cancel_stops_it(settings, workdir: Path) -> None:
    photos = sorted(str(p) for p in (workdir / "pictures").glob("*.jpg"))
    seen: list[tuple[int, int]] = []
    with GpuWorker(use_cuda=False) as w:
        job = w.submit(verify, settings, ORT_FP32, photos, progress=lambda d, t, m: seen.append((d, t)))
        res = job.future.result(120)
        assert res.images == len(photos) and seen[-1] == (len(photos), len(photos))
        jobs = []

        def cancel_on_first(d: int, t: int, m: str) -> None:
            jobs[0].cancel()  # job.cancel() sets the token verify was given

        jobs.append(w.submit(verify, settings, ORT_FP32, photos * 3, progress=cancel_on_first,
                             cancel=CancelToken()))
        job2 = jobs[0]
        with pytest.raises(CancelledError, match="verify cancelled"):
            job2.future.result(120)
