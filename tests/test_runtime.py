"""The TensorRT runtime backend: finding, refusing and running engines.

- everywhere: a missing engine names the build command;
- ``rtx`` (tensorrt-rtx-cu13 installed, no GPU needed): a real engine built by the
  project's ``build`` is refused by the artefact selection when stale (changed ONNX),
  corrupt or from another TensorRT version, and by the backend when there is no GPU,
  each with a one-line reason, before anything deserializes it;
- ``tensorrt`` (a Jetson / GPU box with TensorRT): the default model is built and
  run through the backend and compared with ONNX Runtime on real photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import has_cuda

from ncanvas_tui.backends import open_backend
from ncanvas_tui.backends.tensorrt import EngineRunner, TensorRTBackend, uses_named_tensors
from ncanvas_tui.engines import compat
from ncanvas_tui.engines.artefacts import Selection, select
from ncanvas_tui.engines.build import BuildRequest, build, plan_build
from ncanvas_tui.errors import BackendError, EngineError

REPO = Path(__file__).resolve().parent.parent
has_rtx = compat.available("tensorrt-rtx")
has_trt = compat.available("tensorrt")




def test_missing_engine_names_the_build_command(settings) -> None:
    with pytest.raises(EngineError) as e:
        select(settings, Selection(model="efficientnet_lite0", backend="tensorrt", precision="int8"))
    msg = str(e.value)
    assert "no tensorrt int8 artefact of efficientnet_lite0" in msg and str(settings.paths.engines) in msg
    assert "`ncanvas build efficientnet_lite0 --precision int8 --backend tensorrt`" in msg
    with pytest.raises(BackendError, match="unknown TensorRT backend"):
        TensorRTBackend("onnxruntime", Path("x.plan"), precision="fp32", max_batch=8)


def test_feature_detection_picks_the_execution_api() -> None:
    class V3:
        def execute_async_v3(self, stream: int) -> bool:
            return True

    class V2:
        def execute_async_v2(self, bindings: list[int], stream: int) -> bool:
            return True

    assert uses_named_tensors(V3()) is True
    assert uses_named_tensors(V2()) is False


# ---- real TensorRT-RTX engines (built without a GPU) ------------------------------------------

@pytest.fixture
def tiny_engine(tmp_path: Path):
    """A real TensorRT-RTX engine of the tiny self-test model, in its own engine library."""
    if not has_rtx:
        pytest.skip("tensorrt-rtx-cu13 not installed")
    from ncanvas_tui import settings as settings_mod
    from ncanvas_tui.engines.selftest import tiny_classifier
    from ncanvas_tui.vision import catalog

    (tmp_path / "models").mkdir()
    onnx_path = tiny_classifier(tmp_path / "models" / "tiny.onnx")
    (tmp_path / "models" / "tiny.onnx.json").write_text('{"input_size": 32, "resize": 32, "crop": 32}')
    st = settings_mod.from_dict({"paths": {"models": "models", "engines": "engines"},
                                 "build": {"batch": [1, 2, 4], "opt_level": 0, "timing_cache": False,
                                           "sanitize": False}}, base=tmp_path)
    entry = catalog.find(st, "tiny")
    rec = build(plan_build(st, BuildRequest("tiny", "fp32", backend="tensorrt-rtx"))).artefact
    return st, entry, rec, onnx_path


RTX_TINY = Selection(model="tiny", backend="tensorrt-rtx", precision="fp32")


@pytest.mark.rtx
def test_engine_is_found_and_without_a_gpu_load_says_why(tiny_engine) -> None:
    st, _entry, rec, _ = tiny_engine
    t = select(st, RTX_TINY)
    assert t.path == rec.path and t.id == rec.id and t.max_batch == 4
    assert select(st, Selection(artefact=rec.id)).path == rec.path
    be = open_backend(t.backend, t.path, precision=t.precision, max_batch=t.max_batch)
    assert isinstance(be, TensorRTBackend) and be.info.max_batch == 4
    if has_cuda():
        pytest.skip("a GPU is present: see the tensorrt-marked tests")
    from ncanvas_tui.worker import shutdown_worker

    shutdown_worker()
    with pytest.raises(BackendError, match="tensorrt-rtx: cannot run engines here: .*pycuda"):
        be.load()
    shutdown_worker()


@pytest.mark.rtx
def test_a_stale_engine_is_refused_before_deserializing(tiny_engine) -> None:
    st, _entry, _rec, onnx_path = tiny_engine
    from ncanvas_tui.engines.selftest import tiny_classifier

    tiny_classifier(onnx_path, seed=7)                 # the ONNX changed after the build
    with pytest.raises(EngineError, match=r"changed ONNX.*rebuild with `ncanvas build tiny --precision fp32"):
        select(st, RTX_TINY)
    with pytest.raises(EngineError, match=r"changed ONNX"):
        select(st, Selection(artefact=_rec.id))


@pytest.mark.rtx
def test_a_corrupt_engine_is_refused_before_deserializing(tiny_engine) -> None:
    st, _entry, rec, _ = tiny_engine
    data = bytearray(rec.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rec.path.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="corrupt"):
        select(st, RTX_TINY)


@pytest.mark.rtx
def test_an_engine_from_another_tensorrt_version_is_refused(tiny_engine) -> None:
    st, _entry, rec, _ = tiny_engine
    sidecar = rec.path.with_name(rec.path.name + ".json")
    meta = json.loads(sidecar.read_text())
    meta["backend_version"] = "0.9.0"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(EngineError, match="built for TensorRT 0.9.0"):
        select(st, RTX_TINY)


# ---- a machine with TensorRT and a GPU (Jetson) -----------------------------------------------

needs_trt_gpu = pytest.mark.skipif(not (has_trt and has_cuda()),
                                   reason="needs TensorRT and a GPU (a Jetson with JetPack, or a GPU box)")


@pytest.mark.tensorrt
@pytest.mark.slow
@needs_trt_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_default_model_engine_matches_onnxruntime(settings, workdir: Path, precision: str) -> None:
    from ncanvas_tui import api
    from ncanvas_tui.vision.classify import Classifier
    from ncanvas_tui.worker import get_worker

    get_worker().run(api.plan_and_build, settings, BuildRequest("efficientnet_lite0", precision, backend="tensorrt"))
    photos = sorted(str(p) for p in (workdir / "pictures").glob("*.jpg"))
    ref = Classifier(settings, backend="onnxruntime", precision="fp32")
    trt = Classifier(settings, backend="tensorrt", precision=precision)
    be = trt.load()
    assert be.info.name == "tensorrt" and be.info.max_batch == 8
    r = ref.classify(photos)
    t = trt.classify(photos)
    assert [x["top"][0]["index"] for x in t.results] == [x["top"][0]["index"] for x in r.results]
    # every batch size of the profile, directly on the backend
    x = ref.normalize([ref.load_images(photos[:1])[0].rgb] * 8)  # type: ignore[union-attr]
    want = ref.load().infer(x)
    tol = 1e-2 if precision == "fp32" else 0.3
    for n in (1, 3, 8):
        got = be.infer(x[:n])
        assert got.shape == want[:n].shape
        assert float(np.abs(got - want[:n]).max()) < tol
    assert be.last_gpu_ms > 0  # type: ignore[attr-defined]
    trt.close()


@pytest.mark.tensorrt
@needs_trt_gpu
def test_engine_runner_on_real_tensorrt_returns_copies(tmp_path: Path) -> None:
    """The runner straight on a real engine: results are copies, batch limits enforced."""
    from ncanvas_tui.engines.selftest import tiny_classifier
    from ncanvas_tui.worker import GpuWorker

    trt = compat.import_trt("tensorrt")
    pg = compat.use_polygraphy("tensorrt")
    onnx_path = tiny_classifier(tmp_path / "tiny.onnx")
    with GpuWorker(use_cuda=True) as w:
        profile = pg.Profile().add("input", min=(1, 3, 32, 32), opt=(2, 3, 32, 32), max=(4, 3, 32, 32))
        data = w.run(lambda: pg.EngineBytesFromNetwork(pg.NetworkFromOnnxPath(str(onnx_path)),
                                                       config=pg.CreateConfig(profiles=[profile]))())
        runner = EngineRunner(bytes(data), trt, label="tiny")
        w.run(runner.load)
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        a = w.run(runner.infer, x[:2])
        keep = a.copy()
        w.run(runner.infer, x[2:])
        np.testing.assert_array_equal(a, keep)
        with pytest.raises(EngineError, match="takes 1..4"):
            w.run(runner.infer, np.zeros((5, 3, 32, 32), np.float32))
        w.run(runner.close)


def test_core_import_does_not_pull_heavy_modules() -> None:
    import subprocess
    import sys

    code = ("import sys; import ncanvas_tui.worker, ncanvas_tui.backends.tensorrt, ncanvas_tui.engines.verify, "
            "ncanvas_tui.engines.selftest, ncanvas_tui.cli.verify; "
            "bad = [m for m in ('tensorrt', 'tensorrt_rtx', 'pycuda', 'textual', 'onnxruntime', 'polygraphy') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
