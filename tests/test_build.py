"""Engine builds: real TensorRT-RTX engines (CPU-only build), bad input, cancel, disk full, caches.

``rtx`` tests need tensorrt-rtx-cu13 + polygraphy (CI installs them; they build, run nothing).
``tensorrt`` tests need the full TensorRT and a GPU (a Jetson with JetPack): they cover the
TensorRT 8.6-10 builder-flag and implicit-calibration path and run through the CLI in a
subprocess (Polygraphy binds to one TensorRT flavour per process).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from onnx_factory import add_model, not_onnx_bytes, tiny_classifier, unsupported_op, wrong_rank

from ncanvas_tui import files as files_mod
from ncanvas_tui.engines import compat
from ncanvas_tui.engines import store as store_mod
from ncanvas_tui.engines.store import NO_GPU, EngineStore
from ncanvas_tui.errors import CancelledError, EngineError, ModelError
from ncanvas_tui.files import WriteError
from ncanvas_tui.vision import catalog

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ONNX = catalog.BUNDLED_DIR / "efficientnet_lite0.onnx"


def _has_rtx() -> str | None:
    if not compat.available("tensorrt-rtx"):
        return "tensorrt_rtx is not installed (pip install tensorrt-rtx-cu13)"
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        return "polygraphy is not installed"
    if "polygraphy.backend.trt" in sys.modules:
        from polygraphy import config

        if not config.USE_TENSORRT_RTX:
            return "Polygraphy in this process is already bound to tensorrt (run the rtx tests alone)"
    return None


def _has_tensorrt() -> str | None:
    from ncanvas_tui.backends.base import gpu_present

    if not compat.available("tensorrt"):
        return "the full TensorRT is not importable (only on a Jetson / a GPU machine)"
    if not gpu_present():
        return "no NVIDIA GPU here"
    return None


rtx = pytest.mark.rtx
tensorrt = pytest.mark.tensorrt


@pytest.fixture
def need_rtx():
    why = _has_rtx()
    if why:
        pytest.skip(why)


def rtx_build(settings, model: str, precision: str, **kw):
    """``build(plan_build(...))`` for TensorRT-RTX: the artefact (progress=, cancel= go to build)."""
    from ncanvas_tui.engines.build import BuildRequest, build, plan_build

    run = {k: kw.pop(k) for k in ("progress", "cancel") if k in kw}
    res = build(plan_build(settings, BuildRequest(model, precision, backend="tensorrt-rtx", **kw)), **run)
    return res.artefact, res


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".plan", ".plan.json"))
                  or p.name.startswith(store_mod.TEMP_PREFIX))


# -- feature detection (no TensorRT needed) -----------------------------------------------------

def _fake_trt(*, fp16: bool, int8: bool, calibrators: bool, monitor: bool, typed: bool, name="tensorrt"):
    flags = SimpleNamespace(**({"FP16": 1} if fp16 else {}), **({"INT8": 2} if int8 else {}), SPARSE_WEIGHTS=3)
    mod = SimpleNamespace(__name__=name, __version__="x", BuilderFlag=flags,
                          NetworkDefinitionCreationFlag=SimpleNamespace(**({"STRONGLY_TYPED": 1} if typed else {})),
                          IBuilderConfig=SimpleNamespace(builder_optimization_level=3, create_timing_cache=None),
                          MemoryPoolType=SimpleNamespace(WORKSPACE=0))
    if calibrators:
        mod.IInt8EntropyCalibrator2 = mod.IInt8MinMaxCalibrator = object
    if monitor:
        mod.IProgressMonitor = object
    return mod


def test_feature_detection_per_tensorrt_generation():
    trt86 = compat.features(_fake_trt(fp16=True, int8=True, calibrators=True, monitor=False, typed=False))
    trt10 = compat.features(_fake_trt(fp16=True, int8=True, calibrators=True, monitor=True, typed=True))
    trt11 = compat.features(_fake_trt(fp16=False, int8=False, calibrators=False, monitor=True, typed=True))
    assert (trt86.precision_mode("fp16"), trt86.precision_mode("int8")) == ("flags", "flags")
    assert not trt86.progress_monitor and trt86.implicit_int8_calibrators and trt86.timing_cache
    assert (trt10.precision_mode("fp16"), trt10.strongly_typed_only) == ("flags", False)
    assert trt11.strongly_typed_only and trt11.precision_mode("fp16") == "typed"
    assert trt11.precision_mode("int8") == "typed" and not trt11.implicit_int8_calibrators
    with pytest.raises(EngineError, match="needs a Q/DQ ONNX"):
        compat.calibrator_base(_fake_trt(fp16=False, int8=False, calibrators=False, monitor=True, typed=True),
                               "entropy2")
    assert compat.memory_pool_limits(_fake_trt(fp16=True, int8=True, calibrators=True, monitor=False,
                                               typed=False), 512) == {0: 512 << 20}


@rtx
def test_rtx_features_are_strongly_typed(need_rtx):
    f = compat.features(compat.import_trt("tensorrt-rtx"))
    assert f.rtx and f.strongly_typed_only and f.progress_monitor and not f.timing_cache
    assert {f.precision_mode(p) for p in ("fp32", "fp16", "int8")} == {"typed"}


def test_type_stubs_only_tensorrt_is_not_tensorrt():
    # tensorrt-stubs installs a `tensorrt` folder of .pyi files: importable, but not TensorRT
    if compat.available("tensorrt"):
        pytest.skip("the real TensorRT is installed here")
    with pytest.raises(Exception, match="tensorrt"):
        compat.import_trt("tensorrt")


# -- timing cache ------------------------------------------------------------------------------

# -- real TensorRT-RTX builds --------------------------------------------------------------------

@rtx
@pytest.mark.slow
def test_rtx_builds_default_model_in_every_precision(settings, workdir, need_rtx):
    if not DEFAULT_ONNX.is_file():
        pytest.skip("bundled model not present")
    settings = settings.replace("build", calibrator="minmax")  # entropy2 is covered in test_quantize; faster
    sizes, ids = {}, {}
    for precision in ("fp32", "fp16", "int8"):
        seen: list[str] = []
        rec, _ = rtx_build(settings, "efficientnet_lite0", precision,
                           progress=lambda d, t, m, seen=seen: seen.append(m))
        ids[precision] = rec.id
        assert rec.path == workdir / "engines" / f"efficientnet_lite0.tensorrt-rtx.{precision}.{rec.id}.plan"
        side = json.loads(rec.sidecar.read_text())
        assert side["backend"] == "tensorrt-rtx" and side["precision"] == precision
        assert side["backend_version"] == compat.import_trt("tensorrt-rtx").__version__
        assert side["gpu_name"] == NO_GPU and side["batch"] == [1, 4, 8] and side["opt_level"] == 3
        assert side["model_sha256"] == catalog.sha256_file(DEFAULT_ONNX)
        assert side["size"] == rec.path.stat().st_size > 1_000_000 and side["id"] == rec.id
        assert any("Building engine" in m for m in seen)  # TensorRT's progress monitor
        sizes[precision] = side["size"]
        EngineStore(settings).check(rec, trt_version=side["backend_version"], gpu_name="NVIDIA RTX A6000",
                                    compute_capability="8.6", model_sha256=side["model_sha256"])
    assert side["calibrator"] == "minmax" and side["quantization"] == "explicit"
    # fp16 halves the weights; int8 quantizes all but the first conv and the classifier head
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.8 * sizes["fp32"]
    assert side["calibration_set"] and side["calibration_images"] >= 4  # the image set is part of the key
    # reused while up to date; --force rebuilds
    store = EngineStore(settings)
    rec = store.get(ids["fp16"])
    mtime = rec.path.stat().st_mtime_ns
    again, res = rtx_build(settings, "efficientnet_lite0", "fp16")
    assert again.path.stat().st_mtime_ns == mtime and res.reused and again.id == ids["fp16"]
    forced, res = rtx_build(settings, "efficientnet_lite0", "fp16", force=True)
    assert forced.path.stat().st_mtime_ns != mtime and not res.reused and forced.id == ids["fp16"]
    assert len(store.list()) == 3 and all(r.problem is None for r in store.list())


@rtx
def test_rtx_build_cli_json_and_progress(settings_path, workdir, cli, need_rtx):
    add_model(workdir / "models", "tiny", tiny_classifier)
    r = cli("build", "tiny", "--precision", "fp16", "--backend", "tensorrt-rtx", "--batch", "1,2,4",
            "--opt-level", "1", "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # stdout is the JSON alone
    a = data["artefact"]
    assert a["file"] == f"tiny.tensorrt-rtx.fp16.{data['id']}.plan" and a["opt_level"] == 1
    assert a["batch"] == [1, 2, 4] and Path(data["path"]).is_file()
    assert "preparing ONNX" in r.stderr and "Building engine" in r.stderr
    import re

    assert "saved tiny.tensorrt-rtx.fp16." in r.stderr   # one build, one duration (in its result), not two
    assert not re.search(r"built \S+ in [0-9.]+ s", r.stderr), r.stderr
    r = cli("engines", "list", "--json", "--settings", str(settings_path))
    assert [e["id"] for e in json.loads(r.stdout)["artefacts"]] == [data["id"]]


@rtx
def test_cancel_mid_build_leaves_nothing_behind(settings, workdir, need_rtx):
    from ncanvas_tui.progress import CancelToken

    add_model(workdir / "models", "tiny", tiny_classifier)
    seen: list[str] = []
    token = CancelToken()

    def progress(d, t, m) -> None:  # Esc pressed once TensorRT is building
        seen.append(m)
        if "Building engine" in m:
            token.cancel()

    with pytest.raises(CancelledError):
        rtx_build(settings, "tiny", "fp32", progress=progress, cancel=token)
    assert any("Building engine" in m for m in seen)
    assert _leftovers(workdir / "engines") == []


@rtx
def test_disk_full_while_saving_the_engine_leaves_nothing(settings, workdir, need_rtx, monkeypatch):
    add_model(workdir / "models", "tiny", tiny_classifier)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def no_child(self):  # the build runs in this process (its fallback), where the full disk is injected
        raise OSError(11, "Resource temporarily unavailable")

    import multiprocessing.context

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", no_child)
    monkeypatch.setattr(files_mod, "_os_write", full)
    with pytest.raises(WriteError, match="No space left on device"):
        rtx_build(settings, "tiny", "fp32")
    assert _leftovers(workdir / "engines") == []


@rtx
def test_a_garbage_timing_cache_never_breaks_an_rtx_build(settings, workdir, need_rtx, caplog):
    add_model(workdir / "models", "tiny", tiny_classifier)
    version = compat.import_trt("tensorrt-rtx").__version__
    cache = EngineStore(settings).timing_cache_path("tensorrt-rtx", version, NO_GPU)
    cache.write_bytes(b"\x00garbage timing cache\xff" * 10)
    with caplog.at_level(logging.WARNING, logger="ncanvas.engines"):
        rec, _ = rtx_build(settings, "tiny", "fp32")
    assert rec.path.is_file()  # TensorRT-RTX has no timing cache: the file is not read, the build goes on
    assert any("no timing cache" in n for n in rec.notes)
    # (a TensorRT that has one checks it first: test_trt_trust.py::test_a_timing_cache_tensorrt_refuses...)


@rtx
@pytest.mark.parametrize("make, exc, words", [
    (not_onnx_bytes(), ModelError, "not a valid ONNX file"),
    (wrong_rank, ModelError, "rank 2"),
    (unsupported_op, ModelError, "TensorRT's ONNX parser failed"),
])
def test_bad_onnx_is_refused_before_building(settings, workdir, need_rtx, make, exc, words):
    src = add_model(workdir / "models", "bad", make)
    settings = settings.replace("build", sanitize=False)  # the parser, not the sanitizer, meets the op
    with pytest.raises(exc) as ei:
        rtx_build(settings, "bad", "fp32")
    msg = str(ei.value)
    assert words in msg and str(src) in msg and "\n" not in msg
    if make is unsupported_op:
        assert "Frobnicate" in msg  # the parser's own error is shown
    assert _leftovers(workdir / "engines") == []


@rtx
def test_int8_needs_real_calibration_images(settings, workdir, need_rtx):
    add_model(workdir / "models", "tiny", tiny_classifier)
    photos = sorted((workdir / "calibdata").iterdir())
    for p in photos[2:]:
        p.unlink()
    with pytest.raises(EngineError, match="fewer than the OPT batch of 4"):
        rtx_build(settings, "tiny", "int8")
    for p in photos[:2]:
        p.unlink()
    with pytest.raises(EngineError, match="calibration folder has no images"):
        rtx_build(settings, "tiny", "int8")
    assert _leftovers(workdir / "engines") == []


def test_build_auto_without_tensorrt_uses_onnxruntime(settings_path, workdir, cli):
    if _has_tensorrt() is None:
        pytest.skip("TensorRT and a GPU are here: auto picks tensorrt")
    add_model(workdir / "models", "tiny", tiny_classifier)
    text = settings_path.read_text().replace('backend = "onnxruntime"', 'backend = "auto"')
    settings_path.write_text(text)
    r = cli("build", "tiny", "--precision", "fp32", "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backend"] == "onnxruntime"


def test_core_engine_modules_import_without_heavy_libraries():
    code = ("import sys; import ncanvas_tui.engines.build, ncanvas_tui.engines.store, ncanvas_tui.engines.prep, "
            "ncanvas_tui.engines.quantize, ncanvas_tui.engines.compat, ncanvas_tui.engines.calibrate, "
            "ncanvas_tui.cli.engines_cmd, ncanvas_tui.cli.prep_cmd; "
            "bad = [m for m in ('tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnxruntime', 'textual', 'onnx_graphsurgeon')"
            " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run(check=False, args=[sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- full TensorRT on a GPU (Jetson): builder flags + implicit calibration ------------------------

@tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builder_flag_builds(settings_path, workdir, cli, precision):
    why = _has_tensorrt()
    if why:
        pytest.skip(why)
    add_model(workdir / "models", "tiny", tiny_classifier)
    r = cli("build", "tiny", "--precision", precision, "--backend", "tensorrt", "--json",
            "--settings", str(settings_path), timeout=900)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    a = data["artefact"]
    assert data["precision"] == precision and a["gpu_name"] != NO_GPU and a["compute_capability"]
    assert Path(data["path"]).is_file()
    caches = list((workdir / "engines").glob("*.timing.cache"))
    assert caches, "timing cache saved"


@tensorrt
@pytest.mark.parametrize("calibrator", ["entropy2", "minmax"])
def test_tensorrt_int8_implicit_calibration_and_cache_reuse(settings_path, workdir, cli, calibrator):
    why = _has_tensorrt()
    if why:
        pytest.skip(why)
    trt = compat.import_trt("tensorrt")
    if not compat.features(trt).implicit_int8_calibrators:
        pytest.skip("this TensorRT has no implicit calibrators (11.x: explicit Q/DQ only)")
    add_model(workdir / "models", "tiny", tiny_classifier)
    args = ("build", "tiny", "--precision", "int8", "--backend", "tensorrt", "--calibrator", calibrator,
            "--batch", "1,2,4", "--json", "--settings", str(settings_path))
    r = cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)["artefact"]
    assert data["quantization"] == "implicit" and data["calibrator"] == calibrator
    assert "calibration batch 1/" in r.stderr
    caches = list((workdir / "engines").glob(f"tiny.*.{calibrator}.b2.trt{trt.__version__}.*.calib.cache"))
    assert len(caches) == 1 and caches[0].read_bytes().startswith(b"TRT-")
    r = cli(*args, "--force", timeout=900)
    assert r.returncode == 0, r.stderr
    assert "calibration batch" not in r.stderr  # the calibration cache was reused
    assert any("calibration cache reused" in n for n in json.loads(r.stdout)["artefact"]["notes"])


@tensorrt
def test_tensorrt_engine_from_another_version_is_refused(settings, workdir):
    why = _has_tensorrt()
    if why:
        pytest.skip(why)
    st = EngineStore(settings)
    key = store_mod.ArtefactKey(model="tiny", model_sha256="0" * 64, backend="tensorrt", backend_version="0.0.1",
                                precision="fp16", batch=(1, 4, 8), gpu="x")
    rec = st.save(store_mod.Artefact(path=st.path_for(key), id=key.id, model="tiny", backend="tensorrt",
                                     precision="fp16", batch=[1, 4, 8], backend_version="0.0.1", gpu_name="x"), b"x")
    trt = compat.import_trt("tensorrt")
    gpu = compat.gpu_info()
    with pytest.raises(EngineError, match="TensorRT 0.0.1"):
        st.check(rec, trt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                 model_sha256=None)
    assert os.path.exists(rec.path)


@rtx
@pytest.mark.slow
def test_ctrl_c_during_a_cli_build_leaves_nothing_half_written(settings_path, workdir, need_rtx):
    """A real SIGINT to `ncanvas build` while it calibrates: exit 130, one line, no partial files."""
    import signal
    import time

    if not DEFAULT_ONNX.is_file():
        pytest.skip("bundled model not present")
    for i in range(3):  # more images: calibration lasts long enough to be interrupted
        for p in sorted((workdir / "pictures").glob("*.jpg")):
            (workdir / "calibdata" / f"{i}_{p.name}").write_bytes(p.read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "ncanvas_tui", "build", "efficientnet_lite0", "--precision",
                             "int8", "--backend", "tensorrt-rtx", "--settings", str(settings_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 120
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "calibration image 3/" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + err
    assert "cancelled (Ctrl-C)" in err and "Traceback" not in err
    engines = workdir / "engines"
    assert _leftovers(engines) == []
    assert not list(engines.glob("*.int8-trt.*.onnx"))  # the Q/DQ model was not half-written either
