"""DLA engines (Jetson Xavier / Orin): the request's rules, the refusals, the key, the builder configuration.

Nothing here has a DLA. What is tested: validation and refusals through the real planner and CLI; the
artefact key; the configuration handed to the builder (Polygraphy's CreateConfig object and our
PostprocessConfig step, on a stand-in builder config and network); the DLA core as detected from a
stand-in builder (``num_DLA_cores``). What needs a Jetson (marked ``tensorrt``): building, GPU-fallback
counts from the real ``can_run_on_DLA``, running and benching a DLA engine.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from onnx_factory import add_model, tiny_classifier

from ncanvas_tui.engines import compat
from ncanvas_tui.engines.build import DlaSetup, _config_kwargs
from ncanvas_tui.engines.plan import BuildRequest, plan_build
from ncanvas_tui.errors import EngineError


def _fake_trt(dla_cores: int) -> SimpleNamespace:
    """A TensorRT 10-shaped module: builder flags, calibrators, and a Builder with ``num_DLA_cores``."""
    class Logger:
        ERROR = 0

        def __init__(self, severity: int) -> None:
            pass

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.num_DLA_cores = dla_cores

    return SimpleNamespace(__name__="tensorrt", __version__="10.3.0", Builder=Builder, Logger=Logger,
                           BuilderFlag=SimpleNamespace(FP16=1, INT8=2, SPARSE_WEIGHTS=3),
                           NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
                           IBuilderConfig=SimpleNamespace(builder_optimization_level=3, create_timing_cache=None),
                           MemoryPoolType=SimpleNamespace(WORKSPACE=0), IInt8EntropyCalibrator2=object,
                           IInt8MinMaxCalibrator=object, IProgressMonitor=object)


@pytest.fixture
def jetson(monkeypatch, settings, workdir):
    """A planner that sees a TensorRT 10 on an Orin with ``cores`` DLA cores (set by the test)."""
    add_model(workdir / "models", "tiny", tiny_classifier)
    state = {"cores": 2}
    monkeypatch.setattr(compat, "import_trt", lambda backend: _fake_trt(state["cores"]))
    monkeypatch.setattr(compat, "gpu_info", lambda: compat.GpuInfo("Orin", "8.7"))
    return state


def _plan(settings, **kw):
    return plan_build(settings, BuildRequest("tiny", kw.pop("precision", "fp16"), backend=kw.pop("backend",
                                                                                                "tensorrt"), **kw))


def test_a_dla_build_is_one_static_batch_and_keyed_by_its_core(settings, jetson):
    p0 = _plan(settings, dla_core=0)
    p1 = _plan(settings, dla_core=1)
    gpu = _plan(settings)
    assert p0.batch == (1, 1, 1) and p0.dla_core == 0 and p0.key.dla_core == 0
    assert len({p0.id, p1.id, gpu.id}) == 3 and gpu.dla_core is None and gpu.batch == (1, 4, 8)
    assert _plan(settings, dla_core=0, batch=(4,)).batch == (4, 4, 4)
    assert any("DLA core 0" in n for n in p0.notes)
    # [build].dla_core is the default; -1 there means the GPU
    assert plan_build(settings.replace("build", dla_core=1), BuildRequest("tiny", "int8", backend="tensorrt")
                      ).dla_core == 1


@pytest.mark.parametrize("kw, words", [
    ({"precision": "fp32", "dla_core": 0}, "DLA runs fp16 or int8, not fp32"),
    ({"batch": (1, 4, 8), "dla_core": 0}, "DLA has no dynamic shapes; give --batch as one number"),
    ({"backend": "tensorrt-rtx", "dla_core": 0}, "backend tensorrt-rtx has no DLA"),
    ({"backend": "onnxruntime", "dla_core": 0}, "backend onnxruntime has no DLA"),
    ({"dla_core": 2}, "this machine has 2 DLA core(s) (0..1)"),
])
def test_impossible_dla_builds_are_refused_in_one_line(settings, jetson, kw, words):
    with pytest.raises(EngineError) as ei:
        _plan(settings, **kw)
    assert words in str(ei.value) and "\n" not in str(ei.value)


def test_no_dla_is_detected_from_the_builder_not_the_board_name(settings, jetson):
    jetson["cores"] = 0  # a desktop GPU, an Orin Nano, TensorRT 11.0-11.3
    with pytest.raises(EngineError, match="--dla-core 0: this machine has no DLA .*TensorRT 10.3.0 on Orin"):
        _plan(settings, dla_core=0)


def test_cli_refuses_a_dla_build_without_tensorrt_in_one_line(cli, settings_path, workdir):
    add_model(workdir / "models", "tiny", tiny_classifier)
    r = cli("build", "tiny", "--precision", "fp16", "--backend", "tensorrt-rtx", "--dla-core", "0",
            "--settings", str(settings_path))
    assert r.returncode == 2 and "has no DLA" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_builder_gets_dla_with_gpu_fallback_and_the_core_asked_for(settings, jetson):
    plan = _plan(settings, dla_core=1, precision="int8")
    kw = _config_kwargs(plan, "profile", SimpleNamespace(MemoryPoolType=SimpleNamespace(WORKSPACE=0)), [])
    assert kw["use_dla"] and kw["allow_gpu_fallback"] and kw["int8"]
    pytest.importorskip("polygraphy")
    from polygraphy import config as pg_config
    from polygraphy.backend.trt import CreateConfig

    if not pg_config.USE_TENSORRT_RTX:  # (a Polygraphy bound to TensorRT-RTX refuses DLA: right, RTX has none)
        cfg = CreateConfig(**{k: v for k, v in kw.items() if k in ("use_dla", "allow_gpu_fallback")})
        assert cfg.use_dla is True and cfg.allow_gpu_fallback is True
    # the PostprocessConfig step: core 1 (Polygraphy sets 0), and the layers DLA cannot run counted
    layers = [SimpleNamespace(name=n) for n in ("conv1", "relu1", "topk", "softmax")]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    config = SimpleNamespace(DLA_core=0, can_run_on_DLA=lambda layer: layer.name not in ("topk", "softmax"))
    step = DlaSetup(plan.dla_core)  # type: ignore[arg-type]
    step(None, network, config)
    assert config.DLA_core == 1 and step.gpu_layers == 2
    assert step.summary == "DLA core 1: 2 of 4 layers on DLA, 2 fall back to the GPU (topk, softmax)"


def test_dla_artefacts_are_listed_with_their_core(settings, cli, settings_path):
    from ncanvas_tui.engines.store import Artefact, ArtefactKey, EngineStore

    st = EngineStore(settings)
    key = ArtefactKey(model="tiny", model_sha256="0" * 64, backend="tensorrt", backend_version="10.3.0",
                      precision="fp16", batch=(1, 1, 1), gpu="Orin (sm 8.7)", dla_core=0)
    st.save(Artefact(path=st.path_for(key), id=key.id, model="tiny", backend="tensorrt", precision="fp16",
                     batch=[1, 1, 1], dla_core=0, gpu_fallback_layers=2, gpu_name="Orin"), b"x")
    r = cli("engines", "list", "--settings", str(settings_path))
    assert "DLA0 (Orin)" in r.stdout and key.id in r.stdout
    import json

    rows = json.loads(cli("engines", "list", "--json", "--settings", str(settings_path)).stdout)["artefacts"]
    assert rows[0]["dla_core"] == 0 and rows[0]["gpu_fallback_layers"] == 2


@pytest.mark.tensorrt
@pytest.mark.skipif(not compat.available("tensorrt"), reason="needs TensorRT on a Jetson with DLA")
def test_a_real_dla_build_benches(settings, workdir):
    """On a Jetson Xavier / Orin (AGX, NX): build on DLA core 0, bench it next to the GPU engine."""
    from ncanvas_tui import api

    trt = compat.import_trt("tensorrt")
    if compat.dla_cores(trt) == 0:
        pytest.skip("this device has no DLA")
    a = api.plan_and_build(settings, BuildRequest("efficientnet_lite0", "fp16", backend="tensorrt",
                                                  dla_core=0)).artefact
    assert a is not None and a.dla_core == 0 and a.gpu_fallback_layers is not None
    b = api.bench(settings, api.Selection(artefact=a.id), batches=(1,), seconds=0.5)
    assert b["results"][0]["p50_ms"] > 0


def test_bench_all_puts_dla_and_gpu_artefacts_side_by_side():
    from ncanvas_tui.bench import format_bench_all

    rows = [{"model": "m", "backend": "tensorrt", "precision": "fp16", "top1": 75.0, "latency_ms": 2.0,
             "images_per_s": 500.0, "pareto": True, "dla_core": None, "id": "a"},
            {"model": "m", "backend": "tensorrt", "precision": "fp16", "top1": 75.0, "latency_ms": 5.0,
             "images_per_s": 200.0, "pareto": False, "dla_core": 0, "id": "b"}]
    text = format_bench_all({"batch": 1, "rows": rows, "budget_ms": None})
    lines = [ln for ln in text.splitlines() if " m " in ln]
    assert len(lines) == 2 and "DLA core 0" in lines[1] and "DLA" not in lines[0]
