"""``ncanvas bench --all`` / ``--budget-ms``, and bench run through the GPU worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ncanvas_tui.bench import pareto_front, pick_for_budget
from ncanvas_tui.engines.artefacts import Selection
from ncanvas_tui.progress import CancelToken

ORT_FP32 = Selection(model="efficientnet_lite0", backend="onnxruntime", precision="fp32")

REPO = Path(__file__).resolve().parent.parent
needs_model = pytest.mark.skipif(not (REPO / "models" / "efficientnet_lite0.onnx").is_file(),
                                 reason="bundled model missing")


def _rows() -> list[dict]:
    return [
        {"model": "a", "backend": "tensorrt", "precision": "int8", "top1": 75.0, "latency_ms": 1.0},
        {"model": "b", "backend": "tensorrt", "precision": "fp16", "top1": 74.0, "latency_ms": 2.0},  # dominated
        {"model": "c", "backend": "tensorrt", "precision": "fp16", "top1": 80.0, "latency_ms": 3.0},
        {"model": "d", "backend": "onnxruntime", "precision": "fp32", "top1": 82.0, "latency_ms": 30.0},
        {"model": "e", "backend": "tensorrt", "precision": "fp32", "top1": 90.0, "latency_ms": None,
         "error": "stale"},
    ]


def test_pareto_front_keeps_only_undominated_rows() -> None:
    rows = _rows()
    front = pareto_front(rows)
    assert [r["model"] for r in front] == ["a", "c", "d"]
    assert [r.get("pareto") for r in rows[:4]] == [True, False, True, True]


def test_budget_picks_the_most_accurate_that_fits() -> None:
    rows = _rows()
    assert pick_for_budget(rows, 2.5)["model"] == "a"
    assert pick_for_budget(rows, 3.0)["model"] == "c"
    assert pick_for_budget(rows, 100)["model"] == "d"          # the errored row never wins
    assert pick_for_budget(rows, 0.5) is None


@needs_model
def test_cli_bench_all_with_a_budget(cli, settings_path: Path) -> None:
    out = cli("bench", "--all", "--budget-ms", "100000", "--seconds", "0.2", "--json",
              "--settings", str(settings_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rows = data["rows"]
    assert any(r["model"] == "efficientnet_lite0" and r["backend"] == "onnxruntime" and r["precision"] == "fp32"
               for r in rows)
    assert all(r["latency_ms"] > 0 and r["top1"] == 75.1 for r in rows)
    assert data["pick"] is not None and data["pick"]["model"] == "efficientnet_lite0"
    assert data["pareto"]
    tiny = cli("bench", "--budget-ms", "0.000001", "--seconds", "0.2", "--settings", str(settings_path))
    assert tiny.returncode == 0, tiny.stderr
    assert "nothing fits; the fastest is efficientnet_lite0" in tiny.stdout


def test_bad_budget_is_one_line(cli, settings_path: Path) -> None:
    out = cli("bench", "--budget-ms", "-3", "--settings", str(settings_path))
    assert out.returncode == 2 and "--budget-ms must be a positive number" in out.stderr


@needs_model
def test_bench_runs_in_the_worker_and_reports_no_gpu_fields_on_onnxruntime(cli, settings_path: Path) -> None:
    out = cli("bench", "--batch", "1", "--seconds", "0.2", "--json", "--settings", str(settings_path))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)["results"][0]
    assert res["batch"] == 1 and res["p50_ms"] > 0 and "gpu_compute_ms" not in res


class _CancelAfter(CancelToken):
    """A token that turns cancelled after ``n`` polls (the bench polls it between timed calls)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.polls = 0

    @property
    def cancelled(self) -> bool:
        self.polls += 1
        return self.polls > self.n


@needs_model
def test_bench_stops_when_cancelled(settings) -> None:
    import time

    from ncanvas_tui.bench import run_bench
    from ncanvas_tui.errors import CancelledError

    with pytest.raises(CancelledError):
        run_bench(settings, ORT_FP32, batches=[1], seconds=0.2, cancel=_CancelAfter(0))
    flag = _CancelAfter(12)            # in the middle of the first batch's timed loop
    t0 = time.perf_counter()
    with pytest.raises(CancelledError):
        run_bench(settings, ORT_FP32, batches=[1, 4, 8], seconds=30.0, cancel=flag)
    assert time.perf_counter() - t0 < 20 and flag.polls == 13


@needs_model
def test_bench_all_passes_a_cancel_through_instead_of_recording_an_error_row(settings) -> None:
    from ncanvas_tui.bench import run_bench_all
    from ncanvas_tui.errors import CancelledError

    flag = _CancelAfter(5)
    with pytest.raises(CancelledError):
        run_bench_all(settings, seconds=30.0, cancel=flag)


@needs_model
def test_bench_in_the_worker_sees_the_job_cancel(settings) -> None:
    import time

    from ncanvas_tui.bench import run_bench
    from ncanvas_tui.errors import CancelledError
    from ncanvas_tui.worker import get_worker

    started: list[str] = []
    job = get_worker().submit(run_bench, settings, ORT_FP32, batches=[1, 4, 8], seconds=30.0,
                              progress=lambda d, t, m: started.append(m), cancel=CancelToken())
    deadline = time.monotonic() + 60
    while not started and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    job.cancel()
    with pytest.raises(CancelledError):
        job.future.result(timeout=30)
    assert time.monotonic() - t0 < 10


def test_bench_text_prints_the_two_figures_its_ratio_is_made_of() -> None:
    """ours/raw is computed from two printed columns, not from a figure the table does not show."""
    from ncanvas_tui.bench import format_bench

    row = {"batch": 1, "p50_ms": 90.0, "p90_ms": 91.0, "p99_ms": 92.0, "images_per_s": 11.0,
           "preprocess_ms": 2.0, "infer_ms": 88.74, "postprocess_ms": 0.1, "infer_only_ms": 25.3,
           "raw_infer_ms": 87.98, "infer_vs_raw": 0.288}
    text = format_bench({"model": "m", "backend": "onnxruntime", "precision": "fp32", "images": 1,
                         "results": [row]})
    header, values = text.splitlines()[1], text.splitlines()[2].split()
    assert "ours ms" in header and "raw ms" in header and "ours/raw" in header
    ours, raw, ratio = float(values[8]), float(values[9]), float(values[10])  # the columns in that order
    assert (ours, raw) == (25.3, 87.98) and ours / raw == pytest.approx(ratio, rel=0.01)
