"""TensorRT you can trust on the first run: what an audit found, each fixed and tested where it can be.

No machine here runs a TensorRT engine. What runs for real: TensorRT-RTX builds (``rtx``), Polygraphy's
own Calibrator class (over a stand-in base class), the child-process build with a real SIGINT. What a
stand-in models only: the TensorRT <= 10 calibration trampoline (a loop calling ``get_batch`` the way
TensorRT does) and the builder config of TensorRT 8.6-10 (Polygraphy's CreateConfig object, not built).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx_factory import add_model, tiny_classifier

from ncanvas_tui.engines import calibrate, compat
from ncanvas_tui.engines.build import (
    _config_kwargs,
    calibration_cache_problem,
    check_timing_cache,
    trt_version_tag,
)
from ncanvas_tui.engines.store import EngineStore
from ncanvas_tui.errors import CancelledError, ImageError
from ncanvas_tui.progress import CancelToken

REPO = Path(__file__).resolve().parent.parent
has_rtx = compat.available("tensorrt-rtx")
rtx = pytest.mark.skipif(not has_rtx, reason="tensorrt-rtx-cu13 not installed")


# -- 1. the INT8 calibration cache: keyed by TensorRT version and image set, header checked ----------

def test_calibration_cache_is_keyed_by_tensorrt_version_and_image_set(settings):
    st = EngineStore(settings)
    a = st.calibration_cache_path("m", "a" * 64, "entropy2", 4, "8.6.2", "set1")
    assert a != st.calibration_cache_path("m", "a" * 64, "entropy2", 4, "10.3.0", "set1")  # JetPack 6.0 -> 6.1
    assert a != st.calibration_cache_path("m", "a" * 64, "entropy2", 4, "8.6.2", "set2")   # other photos
    assert a != st.calibration_cache_path("m", "a" * 64, "minmax", 4, "8.6.2", "set1")


@pytest.mark.parametrize("version, header, problem", [
    ("8.6.2", b"TRT-8602-EntropyCalibration2", None),
    ("10.3.0", b"TRT-100300-EntropyCalibration2", None),
    ("10.3.0", b"TRT-8602-EntropyCalibration2", "another TensorRT"),      # a JetPack upgrade
    ("8.6.2", b"TRT-8602-MinMaxCalibration", "another calibrator"),
    ("8.6.2", b"\x00\x01garbage", "not a TensorRT calibration cache"),
])
def test_calibration_cache_header_is_checked(tmp_path, version, header, problem):
    cache = tmp_path / "c.calib.cache"
    cache.write_bytes(header + b"\ninput: 3c010a14\n")
    got = calibration_cache_problem(cache, version, "entropy2")
    assert (got is None) if problem is None else (problem in got), got
    assert b"8602" in trt_version_tag("8.6.2") and b"100300" in trt_version_tag("10.3.0")


# -- 2. exceptions in the calibration data loader are kept, not read as "end of data" ------------

@pytest.fixture
def polygraphy_calibrator(monkeypatch):
    """Polygraphy's real Calibrator class, over a stand-in base class and device copy (no TensorRT)."""
    pytest.importorskip("polygraphy")
    from polygraphy.backend.trt import calibrator as pg_cal
    from polygraphy.backend.trt import util as trt_util

    base = type("FakeInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    monkeypatch.setattr(pg_cal, "trt", SimpleNamespace(IInt8EntropyCalibrator2=base, IInt8LegacyCalibrator=None,
                                                  IInt8Calibrator=None))
    monkeypatch.setattr(trt_util, "_get_array_on_gpu", lambda buf, name, bufs: 1234)
    return lambda feed: pg_cal.Calibrator(feed, BaseClass=base, batch_size=2)


def _drain(calibrator) -> int:
    """What TensorRT's trampoline does: get_batch until None (any exception would also end it)."""
    n = 0
    while True:
        try:
            ptrs = calibrator.get_batch(["input"])
        except BaseException:  # noqa: BLE001 - TensorRT's pybind trampoline swallows everything
            ptrs = None
        if ptrs is None:
            return n
        n += 1


@pytest.mark.parametrize("fault", ["cancel", "ctrl-c", "bad data"])
def test_the_data_loaders_exception_survives_tensorrts_trampoline(polygraphy_calibrator, settings, workdir,
                                                                  fault):
    from ncanvas_tui.vision import catalog

    pre = catalog.find(settings, "efficientnet_lite0").preprocess
    files = sorted((workdir / "calibdata").glob("*.jpg"))[:6]
    cal = calibrate.CalibrationSet(folder=workdir / "calibdata", files=files, batch=2, batches=3, skipped=[])
    token = CancelToken()

    def batches():
        for i, x in enumerate(calibrate.iter_batches(cal, pre, cancelled=token)):
            if i == 1:
                if fault == "cancel":
                    token.cancel()           # Esc: iter_batches raises CancelledError at the next batch
                elif fault == "ctrl-c":
                    raise KeyboardInterrupt
                else:
                    raise ImageError("calibdata/x.jpg: truncated")
            yield x

    feed = calibrate.Feed(batches(), "input")
    served = _drain(polygraphy_calibrator(feed))
    assert served == feed.served < cal.batches  # calibration ended early, as TensorRT would see it...
    expected = {"cancel": CancelledError, "ctrl-c": KeyboardInterrupt, "bad data": ImageError}[fault]
    with pytest.raises(expected):
        feed.raise_if_failed()                  # ...but the build raises the real reason afterwards


# -- 4. precisions: int8 with fp16 fallback unless strict; TF32 kept -----------------------------

def _plan_for_flags(strict: bool, tf32: bool, precision: str = "int8"):
    feats = compat.Features(module="tensorrt", version="10.3.0", rtx=False, builder_flag_fp16=True,
                            builder_flag_int8=True, implicit_int8_calibrators=True, progress_monitor=True,
                            strongly_typed_flag=True, strongly_typed_only=False, optimization_level=True,
                            memory_pool=True, timing_cache=True, sparse_weights=True)
    return SimpleNamespace(features=feats, mode=feats.precision_mode(precision), precision=precision,
                           strict_int8=strict, tf32=tf32, opt_level=3, sparse=False, dla_core=None, keep_float=(),
                           settings=SimpleNamespace(build=SimpleNamespace(workspace_mib=256)))


def test_int8_builder_flags_add_fp16_unless_strict_and_keep_tf32():
    trt = SimpleNamespace(MemoryPoolType=SimpleNamespace(WORKSPACE=0))
    kw = _config_kwargs(_plan_for_flags(strict=False, tf32=True), "profile", trt, [])
    assert kw["int8"] and kw["fp16"] and kw["tf32"]          # as trtexec --best
    kw = _config_kwargs(_plan_for_flags(strict=True, tf32=False), "profile", trt, [])
    assert kw["int8"] and not kw["fp16"] and kw["tf32"] is False
    kw = _config_kwargs(_plan_for_flags(strict=False, tf32=True, precision="fp32"), "profile", trt, [])
    assert "int8" not in kw and "fp16" not in kw and kw["tf32"]
    pytest.importorskip("polygraphy")
    from polygraphy import config as pg_config
    from polygraphy.backend.trt import CreateConfig

    if pg_config.USE_TENSORRT_RTX:
        pytest.skip("Polygraphy is bound to TensorRT-RTX in this process (it refuses precision flags there)")
    cfg = CreateConfig(**{k: v for k, v in kw.items() if k != "memory_pool_limits"})
    assert cfg.tf32 is True  # the object Polygraphy builds the TensorRT config from


def test_strict_int8_and_tf32_are_part_of_the_artefact_key(settings, workdir):
    from ncanvas_tui.engines.build import BuildRequest, plan_build

    add_model(workdir / "models", "tiny", tiny_classifier)
    if not has_rtx:
        pytest.skip("planning a TensorRT build needs a TensorRT flavour (tensorrt-rtx-cu13)")
    ids = {plan_build(settings, BuildRequest("tiny", "int8", backend="tensorrt-rtx", strict_int8=s, tf32=t)).id
           for s in (False, True) for t in (False, True)}
    assert len(ids) == 4


@rtx
@pytest.mark.slow
def test_rtx_int8_is_built_from_an_fp16_qdq_model_unless_strict(settings, workdir):
    """Strongly typed (RTX, TRT 11): the Q/DQ ONNX given to the builder is fp16 outside the Q/DQ pairs;
    --strict-int8 keeps it fp32 there."""
    from ncanvas_tui.engines.build import BuildRequest, build, plan_build

    add_model(workdir / "models", "tiny", tiny_classifier)
    for strict in (False, True):
        a = build(plan_build(settings, BuildRequest("tiny", "int8", backend="tensorrt-rtx",
                                                    strict_int8=strict))).artefact
        assert a is not None and a.path.is_file() and a.options.get("strict_int8") == ("1" if strict else None)
        given = onnx.load(a.source_onnx)
        types = {i.data_type for i in given.graph.initializer}
        ops = {n.op_type for n in given.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        if strict:
            assert onnx.TensorProto.FLOAT16 not in types
        else:
            assert onnx.TensorProto.FLOAT16 in types                      # fp16 weights (biases, float layers)
            assert given.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O kept fp32


# -- 7. the timing cache: a file TensorRT refuses is moved aside, the build goes on ---------------

def test_a_timing_cache_tensorrt_refuses_is_moved_aside(tmp_path, caplog):
    import logging

    path = tmp_path / "tensorrt-10.3.Orin.timing.cache"
    assert check_timing_cache(path, lambda d: True) is False           # none yet
    path.write_bytes(b"TIMING" * 100)
    assert check_timing_cache(path, lambda d: d.startswith(b"TIMING")) is True
    with caplog.at_level(logging.WARNING, logger="ncanvas.engines"):
        assert check_timing_cache(path, lambda d: False) is False       # truncated / foreign
    assert "corrupt timing cache" in caplog.text
    assert not path.exists() and list(tmp_path.glob("*.timing.cache.corrupt-*"))


# -- builds in a child process: Ctrl-C stops a TensorRT-RTX build at once --------------------------

@rtx
@pytest.mark.slow
def test_ctrl_c_while_tensorrt_builds_stops_it_and_the_next_build_works(settings_path, workdir):
    """SIGINT while TensorRT-RTX itself is building (its logger callback swallowed KeyboardInterrupt
    in-process: 'saving engine', exit 0): now exit 130, nothing written, and the next build works."""
    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "ncanvas_tui", "build", "efficientnet_lite0", "--precision",
                                 "fp16", "--backend", "tensorrt-rtx", "--settings", str(settings_path)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    proc = start()
    lines = []
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        lines.append(line)
        if "Building engine" in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + err
    assert "cancelled (Ctrl-C)" in err and "saving engine" not in err and "Traceback" not in err
    engines = workdir / "engines"
    assert not list(engines.glob("*.plan")) and not list(engines.glob(".ncanvas-tmp*"))
    proc = start()
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert len(list(engines.glob("*.plan"))) == 1 and json.loads((next(engines.glob("*.plan.json"))).read_text())


def test_engine_builds_run_in_a_child_process(settings, workdir, caplog, monkeypatch):
    """The build's TensorRT part is handed to ``subproc.call`` (what the child runs is the same code)."""
    from ncanvas_tui.engines import build as build_mod
    from ncanvas_tui.engines import subproc

    calls = []
    monkeypatch.setattr(subproc, "call", lambda fn, *a, **k: calls.append((fn.__name__, k["what"])) or None)
    plan = SimpleNamespace(id="x", source=SimpleNamespace(entry=SimpleNamespace(name="m"), qat=False),
                           backend="tensorrt-rtx", precision="fp32", settings=settings, force=False,
                           path=workdir / "engines" / "nothing.plan")
    build_mod.build(plan)  # type: ignore[arg-type]
    assert calls == [("_tensorrt_in_child", "build")]
    assert np.all(True)


# -- 9. one TensorRT logger per process for every runtime --------------------------------------------

def test_every_runtime_in_a_process_gets_the_same_tensorrt_logger():
    import fake_tensorrt as fake

    from ncanvas_tui.backends.tensorrt import _trt_logger

    trt = fake.module()
    first = _trt_logger(trt)
    first.log(trt.ILogger.Severity.ERROR, "from an earlier load")
    assert _trt_logger(trt) is first and first.errors == ["from an earlier load"]
