"""Explicit quantization (Q/DQ ONNX per backend flavour), fp16 ONNX, calibration data."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_factory import SIZE, add_model, qdq_classifier, run, tiny_classifier

from ncanvas_tui.engines import calibrate
from ncanvas_tui.engines.build import BuildRequest, build, plan_build
from ncanvas_tui.engines.plan import load_source
from ncanvas_tui.engines.quantize import float_nodes, fp16_model_for, has_qdq, qdq_model_for
from ncanvas_tui.errors import CancelledError, EngineError
from ncanvas_tui.progress import NEVER, CancelToken, no_progress
from ncanvas_tui.vision import catalog
from ncanvas_tui.vision.preprocess import Normalizer, load_image

DEFAULT_ONNX = catalog.BUNDLED_DIR / "efficientnet_lite0.onnx"


def _plan(settings, model, backend="onnxruntime", **kw):
    return plan_build(settings, BuildRequest(model, "int8", backend=backend, **kw))


def ort_int8(settings, model, *, progress=no_progress, cancel=NEVER, **kw) -> Path:
    """Build (or reuse) the ONNX Runtime int8 artefact of ``model``; its path."""
    res = build(_plan(settings, model, **kw), progress=progress, cancel=cancel)
    assert res.artefact is not None, res.note
    return res.artefact.path


def files(folder: Path) -> list[str]:
    """What a folder holds, less the build locks (``.locks/``: not files anyone reads)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".locks")


def cancel_when(pred) -> tuple[CancelToken, list[str], object]:
    """A token, the progress messages seen, and a progress callback that cancels once ``pred(seen)``."""
    token, seen = CancelToken(), []

    def progress(d, t, m):
        seen.append(m)
        if pred(seen):
            token.cancel()

    return token, seen, progress


def _ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _x(workdir, entry, n=4):
    files = sorted((workdir / "pictures").glob("*.jpg"))[:n]
    return Normalizer(entry.preprocess)([load_image(p, entry.preprocess).rgb for p in files])


# -- calibration data ----------------------------------------------------------------------------

def test_missing_and_empty_calibration_folder_are_clear_errors(settings, workdir):
    shutil.rmtree(workdir / "calibdata")
    with pytest.raises(EngineError, match="calibration folder not found"):
        calibrate.plan(settings, batch=4)
    (workdir / "calibdata").mkdir()
    (workdir / "calibdata" / "notes.txt").write_text("no images here")
    with pytest.raises(EngineError, match="has no images.*random data is never used"):
        calibrate.plan(settings, batch=4)


def test_fewer_calibration_images_than_the_opt_batch(settings, workdir):
    for p in sorted((workdir / "calibdata").glob("*.jpg"))[2:]:
        p.unlink()
    with pytest.raises(EngineError, match=r"2 calibration image\(s\), fewer than the OPT batch of 4"):
        calibrate.plan(settings, batch=4)


def test_calibration_batches_are_real_images_at_the_opt_shape(settings, workdir):
    entry = catalog.find(settings, "efficientnet_lite0")
    (workdir / "calibdata" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    cal = calibrate.plan(settings, batch=2, max_batches=3)
    seen = []
    batches = list(calibrate.iter_batches(cal, entry.preprocess, progress=lambda d, t, m: seen.append(m)))
    assert [b.shape for b in batches] == [(2, 3, 224, 224)] * 3
    assert seen == ["calibration batch 1/3", "calibration batch 2/3", "calibration batch 3/3"]
    assert cal.skipped and "broken.jpg" in cal.skipped[0]
    assert batches[0].std() > 0.1  # photos, not zeros


# -- Q/DQ models ---------------------------------------------------------------------------------

def test_tiny_model_both_flavours_cached_separately(settings, workdir):
    add_model(workdir / "models", "tiny", tiny_classifier)
    progress = []
    ort_q = ort_int8(settings, "tiny", progress=lambda d, t, m: progress.append(m))
    trt_q = qdq_model_for(_plan(settings, "tiny"))  # the intermediate a strongly typed TensorRT build parses
    assert ort_q != trt_q and ort_q.parent == trt_q.parent == workdir / "engines"
    assert ".onnxruntime.int8." in ort_q.name and "int8-trt" in trt_q.name
    assert any(m.startswith("calibration image 1/") for m in progress)
    for q in (ort_q, trt_q):
        assert has_qdq(onnx.load(str(q)))
    ort_model, trt_model = onnx.load(str(ort_q)), onnx.load(str(trt_q))
    inits = {i.name: i for i in ort_model.graph.initializer}
    zps = [inits[n.input[2]] for n in ort_model.graph.node if n.op_type == "QuantizeLinear"]
    assert any(z.data_type == onnx.TensorProto.UINT8 for z in zps)  # uint8 activations for ORT
    inits = {i.name: i for i in trt_model.graph.initializer}
    qs = [n for n in trt_model.graph.node if n.op_type == "QuantizeLinear"]
    for n in qs:  # symmetric int8 for TensorRT: int8 zero points, all zero
        z = inits[n.input[2]]
        assert z.data_type == onnx.TensorProto.INT8
        assert not np.any(onnx.numpy_helper.to_array(z))
    dq_inputs = {n.input[0] for n in trt_model.graph.node if n.op_type == "DequantizeLinear"}
    assert all(inits[i].data_type != onnx.TensorProto.INT32 for i in dq_inputs if i in inits)  # no int32 bias
    # first conv and classifier stay float
    assert float_nodes(onnx.load(str(workdir / "models" / "tiny.onnx"))) == ["conv1", "fc"]
    # cached: a second call reuses the file
    mtime = ort_q.stat().st_mtime_ns
    again = build(_plan(settings, "tiny"))
    assert again.reused and again.artefact is not None and again.artefact.path == ort_q
    assert ort_q.stat().st_mtime_ns == mtime
    # calibration ranges were cached once and shared by both flavours
    assert len(list((workdir / "engines").glob("*.ort-calib.json"))) == 1
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    assert run(ort_q, x).shape == (2, 10)


def test_corrupt_calibration_cache_is_moved_aside(settings, workdir):
    add_model(workdir / "models", "tiny", tiny_classifier)
    ort_int8(settings, "tiny")
    cache = next((workdir / "engines").glob("*.ort-calib.json"))
    cache.write_text("{truncated")
    out = ort_int8(settings, "tiny", force=True)
    assert has_qdq(onnx.load(str(out)))
    assert list((workdir / "engines").glob("*.ort-calib.json.corrupt-*"))
    assert cache.is_file() and cache.read_text().startswith("{")


def test_qat_model_is_taken_as_it_is(settings, workdir):
    src = add_model(workdir / "models", "qat", qdq_classifier)
    res = build(_plan(settings, "qat"))
    assert res.artefact is None and "already has Q/DQ nodes" in res.note
    assert qdq_model_for(_plan(settings, "qat")) == src
    assert files(workdir / "engines") == []


def test_cancel_during_calibration_leaves_nothing(settings, workdir):
    add_model(workdir / "models", "tiny", tiny_classifier)
    token, _seen, progress = cancel_when(lambda seen: len(seen) >= 3)
    with pytest.raises(CancelledError):
        ort_int8(settings, "tiny", progress=progress, cancel=token)
    assert files(workdir / "engines") == []


def test_empty_calibration_folder_fails_quantization_cleanly(settings, workdir):
    add_model(workdir / "models", "tiny", tiny_classifier)
    for p in (workdir / "calibdata").iterdir():
        p.unlink()
    with pytest.raises(EngineError, match="calibdata: calibration folder has no images"):
        ort_int8(settings, "tiny")
    assert files(workdir / "engines") == []


def test_fp16_model_keeps_fp32_inputs_and_outputs(settings, workdir):
    add_model(workdir / "models", "tiny", tiny_classifier)
    out = fp16_model_for(settings, load_source(settings, catalog.find(settings, "tiny")))
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {i.data_type for i in m.graph.initializer} == {onnx.TensorProto.FLOAT16}
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(workdir / "models" / "tiny.onnx", x), atol=2e-2)


# -- the default model on real photos ------------------------------------------------------------

@pytest.mark.slow
def test_default_model_ort_int8_keeps_top1_and_is_smaller(settings, workdir, capsys):
    """ORT Q/DQ int8 vs fp32 on the test photos: top-1 unchanged where fp32 is clear (a near tie, like
    grace_hopper's mortarboard 25.1% / academic gown 24.8%, may flip to fp32's runner-up); speed
    printed, not asserted."""
    if not DEFAULT_ONNX.is_file():
        pytest.skip("bundled model not present")
    entry = catalog.find(settings, "efficientnet_lite0")
    q = ort_int8(settings, "efficientnet_lite0")
    x = _x(workdir, entry, n=8)
    ref, got = run(DEFAULT_ONNX, x), run(q, x)
    p = np.exp(ref - ref.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top2 = np.argsort(-p, axis=1)[:, :2]
    margin = p[np.arange(len(p)), top2[:, 0]] - p[np.arange(len(p)), top2[:, 1]]
    clear = margin > 0.02
    assert clear.sum() >= 5
    assert (ref.argmax(1) == got.argmax(1))[clear].all(), (ref.argmax(1), got.argmax(1), margin)
    assert all(g in t for g, t in zip(got.argmax(1), top2)), (got.argmax(1), top2)
    assert q.stat().st_size < DEFAULT_ONNX.stat().st_size / 2  # int8 weights; classifier head stays fp32
    import onnxruntime as ort

    def ips(path):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x8 = np.concatenate([x, x])[:8]
        s.run(None, {"input": x8})
        t = time.perf_counter()
        for _ in range(3):
            s.run(None, {"input": x8})
        return 24 / (time.perf_counter() - t)

    with capsys.disabled():
        print(f"\n[bench] ORT batch 8: fp32 {ips(DEFAULT_ONNX):.0f} img/s, int8 Q/DQ {ips(q):.0f} img/s")


def test_build_cli_on_onnxruntime(settings_path, workdir, cli):
    add_model(workdir / "models", "tiny", tiny_classifier)
    r = cli("build", "tiny", "--precision", "fp32", "--backend", "onnxruntime", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    assert "nothing to build" in r.stdout
    r = cli("build", "tiny", "--precision", "fp16", "--backend", "onnxruntime", "--json",
            "--settings", str(settings_path))
    import json

    data = json.loads(r.stdout)
    assert data["id"] is None and "runs fp16 requests as fp32" in data["note"]
    r = cli("build", "tiny", "--precision", "int8", "--backend", "onnxruntime", "--json",
            "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["reused"] is False and data["path"].endswith(f".onnxruntime.int8.{data['id']}.onnx")
    assert "calibration image 1/" in r.stderr  # progress on stderr, JSON alone on stdout
    for p in (workdir / "calibdata").iterdir():
        p.unlink()
    r = cli("build", "tiny", "--precision", "int8", "--backend", "onnxruntime", "--force",
            "--settings", str(settings_path))
    assert r.returncode == 2 and "calibration folder has no images" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- the heavy work runs in a child process (the TUI's event loop never waits on its GIL) ---------

def _child_pids(records) -> list[int]:
    import re

    return [int(m.group(1)) for r in records
            if (m := re.search(r"running in child process (\d+)", r.getMessage()))]


def _gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_int8_ort_build_quantizes_in_a_child_process(settings, workdir, caplog):
    import logging
    import os
    import threading

    add_model(workdir / "models", "tiny", tiny_classifier)
    threads, seen = set(), []

    def progress(d, t, m):
        threads.add(threading.get_ident())
        seen.append(m)

    with caplog.at_level(logging.DEBUG, logger="ncanvas.engines"):
        out = ort_int8(settings, "tiny", progress=progress)
    assert has_qdq(onnx.load(str(out)))
    # quantize_static ran in another process: its log record (forwarded) carries that pid
    qs = [r for r in caplog.records if r.getMessage().startswith("quantize_static ")]
    pids = _child_pids(caplog.records)
    assert qs and pids and qs[0].process == pids[-1] != os.getpid()  # (the first child sanitized the model)
    assert f"in process {pids[-1]}" in qs[0].getMessage()
    # progress still arrives in the calling thread, calibration image by image
    assert threads == {threading.get_ident()}
    assert any(m.startswith("calibration image 1/") for m in seen)
    assert all(_gone(p) for p in pids)


def test_cancel_terminates_the_child_and_leaves_no_temp_files(settings, workdir, caplog, monkeypatch, tmp_path):
    import logging

    add_model(workdir / "models", "tiny", tiny_classifier)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))  # where the child's scratch folder goes
    token, _seen, progress = cancel_when(lambda seen: seen[-1].startswith("calibration image 2/"))
    with caplog.at_level(logging.DEBUG, logger="ncanvas.engines"), \
            pytest.raises(CancelledError, match="calibration cancelled"):
        # at image 2 quantize_static is running: the Q/DQ temp file exists in engines/
        ort_int8(settings, "tiny", progress=progress, cancel=token)
    pids = _child_pids(caplog.records)
    assert pids and _gone(pids[-1])  # terminated and reaped (the first child sanitized the model)
    assert files(workdir / "engines") == []
    assert [p.name for p in (workdir / "models").iterdir() if p.name.startswith(".ncanvas-tmp")] == []
    assert list(scratch.iterdir()) == []  # the child's TMPDIR (ORT's augmented model) is gone too


def test_cancelling_the_worker_job_terminates_the_child(settings, workdir, caplog):
    import logging

    from ncanvas_tui import api
    from ncanvas_tui.worker import GpuWorker

    add_model(workdir / "models", "tiny", tiny_classifier)
    jobs = []

    def cancel_at_first_image(d, t, m):
        if m.startswith("calibration image 1/"):
            jobs[0].cancel()  # job.cancel() sets the token the build was given

    with caplog.at_level(logging.DEBUG, logger="ncanvas.engines"), GpuWorker(use_cuda=False) as w:
        jobs.append(w.submit(api.plan_and_build, settings, BuildRequest("tiny", "int8", backend="onnxruntime"),
                             progress=cancel_at_first_image, cancel=CancelToken()))
        with pytest.raises(CancelledError, match="cancelled"):
            jobs[0].future.result(120)
    assert all(_gone(p) for p in _child_pids(caplog.records))
    assert files(workdir / "engines") == []


def test_errors_in_the_child_keep_their_class_and_one_line_message(settings, workdir):
    from ncanvas_tui.engines import subproc
    from ncanvas_tui.engines.prep import _sanitize_file
    from ncanvas_tui.errors import ModelError

    add_model(workdir / "models", "tiny", tiny_classifier)
    bad = workdir / "models" / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError) as ei:
        subproc.call(_sanitize_file, bad, workdir / "models" / "bad.prep.onnx", "0" * 64,
                     what="sanitize")
    assert str(bad) in str(ei.value) and "not a valid ONNX file" in str(ei.value) and "\n" not in str(ei.value)
    assert not (workdir / "models" / "bad.prep.onnx").exists()


def test_without_a_child_process_it_runs_here_and_says_so(settings, workdir, caplog, monkeypatch):
    import logging
    import multiprocessing.context

    def refuse(self):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", refuse)
    add_model(workdir / "models", "tiny", tiny_classifier)
    with caplog.at_level(logging.WARNING, logger="ncanvas.engines"):
        q = ort_int8(settings, "tiny")
    assert has_qdq(onnx.load(str(q)))
    assert "cannot start a child process" in caplog.text and "running it in this thread" in caplog.text


@pytest.mark.slow
def test_ctrl_c_during_an_onnxruntime_int8_build_leaves_nothing(settings_path, workdir, tmp_path):
    """A real SIGINT to `ncanvas build --backend onnxruntime` while the child calibrates."""
    import os
    import signal
    import subprocess
    import sys

    if not DEFAULT_ONNX.is_file():
        pytest.skip("bundled model not present")
    for i in range(3):  # more images: calibration lasts long enough to be interrupted
        for p in sorted((workdir / "pictures").glob("*.jpg")):
            (workdir / "calibdata" / f"{i}_{p.name}").write_bytes(p.read_bytes())
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "ncanvas_tui", "build", "efficientnet_lite0", "--precision",
                             "int8", "--backend", "onnxruntime", "--settings", str(settings_path)],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)},
                            start_new_session=True)
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "calibration image 3/" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the child gets it too (and ignores it)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + err
    assert "cancelled (Ctrl-C)" in err and "Traceback" not in err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # no process of the group is left (child, resource tracker)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a process of the build outlived it")
    assert files(workdir / "engines") == []
    assert list(tmp.iterdir()) == []  # the child's scratch folder went with it
