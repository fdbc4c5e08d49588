"""Layer profiles and int8 accuracy recovery (issue 14): --keep-float, verify --layers, build --recover,
bench --layers.

The bundled model keeps top-1 at int8 on our photos, so recovery is shown on ``outlier_classifier``
(onnx_factory): its ``mix`` layer loses every top-1 when its input is quantized (an outlier channel
in the activation range). On the bundled model, keeping its most sensitive layers float lowers the
mean logit error. TensorRT: keep-float reaches the network as fp32 precision constraints (a real
TensorRT-RTX build checks the strongly typed path: no Q/DQ around the kept layers); per-layer times
of a real engine need a GPU (``tensorrt`` mark)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx_factory import add_model, outlier_classifier, tiny_classifier

from ncanvas_tui import api
from ncanvas_tui.engines.artefacts import Selection, select
from ncanvas_tui.engines.build import BuildRequest, _config_kwargs, build, keep_layers_float, plan_build
from ncanvas_tui.engines.plan import parse_keep_float
from ncanvas_tui.errors import EngineError


@pytest.fixture
def outlier(workdir: Path) -> str:
    add_model(workdir / "models", "outlier", outlier_classifier)
    return "outlier"


def _ort_int8(settings, model, keep=()):
    res = build(plan_build(settings, BuildRequest(model, "int8", backend="onnxruntime", keep_float=tuple(keep))))
    assert res.artefact is not None
    return res.artefact


def _quantized_inputs(path: Path) -> set[str]:
    """Names of the nodes that read a DequantizeLinear output (activations or weights): quantized nodes."""
    g = onnx.load(str(path)).graph
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    dq |= {o for n in g.node if n.op_type == "Cast" and dq & set(n.input) for o in n.output}  # fp16 outside Q/DQ
    return {n.name for n in g.node if n.op_type not in ("QuantizeLinear", "Cast") and dq & set(n.input)}


# -- --keep-float -----------------------------------------------------------------------------------

def test_keep_float_is_part_of_the_key_and_leaves_the_layer_unquantized(settings, outlier):
    plain = _ort_int8(settings, outlier)
    kept = _ort_int8(settings, outlier, keep=["mix"])
    assert kept.id != plain.id and kept.path != plain.path
    assert kept.keep_float == ["mix"] and plain.keep_float == []
    assert "mix" in _quantized_inputs(plain.path)
    assert "mix" not in _quantized_inputs(kept.path) and "conv3" in _quantized_inputs(kept.path)
    # verify / bench / infer choose by the same set; no --keep-float: the plain one
    assert select(settings, Selection(model=outlier, backend="onnxruntime", precision="int8",
                                      keep_float=("mix",))).id == kept.id
    assert select(settings, Selection(model=outlier, backend="onnxruntime", precision="int8",
                                      keep_float=())).id == plain.id
    with pytest.raises(EngineError, match="no onnxruntime int8 artefact"):
        select(settings, Selection(model=outlier, backend="onnxruntime", precision="int8", keep_float=("conv3",)))


def test_keep_float_restores_top1_on_the_outlier_model(settings, outlier):
    plain = api.verify(settings, Selection(artefact=_ort_int8(settings, outlier).id), store=False)
    kept = api.verify(settings, Selection(artefact=_ort_int8(settings, outlier, keep=["mix"]).id), store=False)
    assert plain.top1_agreement < 0.5       # the model really loses accuracy at int8
    assert kept.top1_agreement == 1.0


def test_keep_float_bad_input_is_one_clear_line(settings, outlier):
    with pytest.raises(EngineError, match="has no node named 'nope'"):
        plan_build(settings, BuildRequest(outlier, "int8", backend="onnxruntime", keep_float=("nope",)))
    with pytest.raises(EngineError, match="--keep-float is for int8"):
        plan_build(settings, BuildRequest(outlier, "fp16", backend="onnxruntime", keep_float=("mix",)))
    assert parse_keep_float(" mix,conv3,,mix ") == ("conv3", "mix")
    # the order given does not change the artefact
    a = plan_build(settings, BuildRequest(outlier, "int8", backend="onnxruntime", keep_float=("mix", "conv3")))
    b = plan_build(settings, BuildRequest(outlier, "int8", backend="onnxruntime", keep_float=("conv3", "mix")))
    assert a.id == b.id


# -- sensitivity ------------------------------------------------------------------------------------

def test_sensitivity_ranks_the_outlier_layer_first_from_cached_ranges(settings, outlier, workdir):
    _ort_int8(settings, outlier)  # calibrates once: the ranges are cached
    caches = sorted((workdir / "engines").glob("*.ort-calib.json"))
    assert len(caches) == 1
    before = caches[0].stat().st_mtime_ns
    r = api.layer_sensitivity(settings, outlier)
    assert [x["name"] for x in r["layers"]] == ["mix", "conv3"]   # stem and fc are float already
    assert all(set(x) == {"name", "op", "sensitivity"} for x in r["layers"])
    assert r["layers"][0]["sensitivity"] > 10 * r["layers"][1]["sensitivity"]
    assert r["computed_on"] == "onnxruntime" and "for every backend" in r["note"]
    assert caches[0].stat().st_mtime_ns == before          # reused, not recalibrated
    assert sorted((workdir / "engines").glob("*.ort-calib.json")) == caches


def test_verify_layers_cli_json(cli, settings_path, outlier):
    p = cli("build", outlier, "--precision", "int8", "--backend", "onnxruntime", "--settings", str(settings_path))
    assert p.returncode == 0, p.stderr
    p = cli("verify", outlier, "--precision", "int8", "--backend", "onnxruntime", "--layers", "--json",
            "--settings", str(settings_path))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert [x["name"] for x in d["layers"]] == ["mix", "conv3"]
    assert [set(x) for x in d["layers"]] == [{"name", "op", "sensitivity"}] * 2
    assert "ONNX Runtime" in d["layers_note"]
    p = cli("verify", outlier, "--precision", "int8", "--backend", "onnxruntime", "--layers",
            "--settings", str(settings_path))
    assert p.returncode == 0 and "mix" in p.stdout and "sensitivity" in p.stdout


# -- recover ----------------------------------------------------------------------------------------

def test_recover_finds_the_layer_and_restores_agreement(settings, outlier):
    r = api.recover(settings, BuildRequest(outlier, "int8", backend="onnxruntime"), 0.99)
    assert r["keep_float"] == ["mix"]
    assert r["int8_agreement"] < 0.5 and r["agreement"] == 1.0 and r["reached"]
    sp = r["speed"]
    assert sp["int8_ms"] > 0 and sp["recovered_ms"] > 0 and sp["cost"] == pytest.approx(
        sp["recovered_ms"] / sp["int8_ms"], rel=0.01)
    kept = select(settings, Selection(artefact=r["id"]))
    assert kept.artefact is not None and kept.artefact.keep_float == ["mix"]
    assert r["int8_id"] != r["id"]


def test_recover_cli_and_target_from_settings(cli, settings_path, outlier):
    p = cli("build", outlier, "--precision", "int8", "--backend", "onnxruntime", "--recover", "--json",
            "--settings", str(settings_path))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["target"] == 0.99 and d["keep_float"] == ["mix"] and d["speed"]["cost"] is not None
    p = cli("build", outlier, "--precision", "int8", "--backend", "onnxruntime", "--recover", "1.5",
            "--settings", str(settings_path))
    assert p.returncode == 2 and "agreement fraction" in p.stderr
    p = cli("build", outlier, "--precision", "int8", "--backend", "onnxruntime", "--recover", "0.9",
            "--settings", str(settings_path))
    assert p.returncode == 0, p.stderr
    assert "1 layer(s) float: mix" in p.stdout and "speed cost" in p.stdout


def test_recover_when_int8_already_meets_the_target_keeps_nothing(settings, workdir):
    add_model(workdir / "models", "tiny", lambda: tiny_classifier(foldable=False))
    r = api.recover(settings, BuildRequest("tiny", "int8", backend="onnxruntime"), 0.5)
    assert r["keep_float"] == [] and r["id"] == r["int8_id"] and r["agreement"] >= 0.5


@pytest.mark.slow
def test_keeping_the_most_sensitive_layers_float_lowers_the_bundled_models_error(settings):
    r = api.layer_sensitivity(settings, "efficientnet_lite0")
    assert len(r["layers"]) > 20 and all(x["op"] == "Conv" for x in r["layers"])
    top = [x["name"] for x in r["layers"][:3]]
    plain = api.verify(settings, Selection(artefact=_ort_int8(settings, "efficientnet_lite0").id), store=False)
    kept = api.verify(settings, Selection(artefact=_ort_int8(settings, "efficientnet_lite0", keep=top).id),
                      store=False)
    assert kept.mean_abs_diff < plain.mean_abs_diff


# -- bench --layers ---------------------------------------------------------------------------------

def test_bench_layers_names_real_nodes_slowest_first(cli, settings_path, outlier, workdir):
    p = cli("bench", "--model", outlier, "--backend", "onnxruntime", "--precision", "fp32", "--layers",
            "--batch", "1", "--seconds", "0.2", "--json", "--settings", str(settings_path))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    layers = d["layers"]
    assert [set(x) for x in layers] == [{"name", "op", "ms"}] * len(layers)
    assert [x["ms"] for x in layers] == sorted((x["ms"] for x in layers), reverse=True)
    nodes = {n.name for n in onnx.load(str(workdir / "models" / "outlier.onnx")).graph.node}
    named = {part for x in layers for part in x["name"].split(" + ")}
    assert {"stem", "mix", "conv3", "fc"} <= named   # ORT's fused/re-laid-out nodes named after the ONNX
    assert named - nodes <= {"ReorderInput", "ReorderOutput", "Transpose"}   # layout nodes ORT adds itself
    assert "mix + relu2" in {x["name"] for x in layers}    # a fused Conv+Relu lists both nodes


# -- TensorRT: configured for every flavour ---------------------------------------------------------

class _Layer:
    def __init__(self, name: str) -> None:
        self.name, self.precision, self.num_outputs, self.out = name, None, 2, {}

    def set_output_type(self, i: int, t: object) -> None:
        self.out[i] = t


class _Network:
    def __init__(self, names: list[str]) -> None:
        self.layers = [_Layer(n) for n in names]
        self.num_layers = len(names)

    def get_layer(self, i: int) -> _Layer:
        return self.layers[i]


def test_tensorrt_implicit_int8_keeps_layers_fp32_with_obeyed_constraints(settings, outlier):
    class Trt:
        float32 = "fp32"

    net = _Network(["stem", "mix", "conv3"])
    assert keep_layers_float(net, Trt, ("mix", "gone")) == ["gone"]
    mix = net.layers[1]
    assert mix.precision == "fp32" and mix.out == {0: "fp32", 1: "fp32"}
    assert net.layers[0].precision is None and net.layers[2].precision is None

    from dataclasses import replace

    from ncanvas_tui.engines.compat import Features

    plan = plan_build(settings, BuildRequest(outlier, "int8", backend="onnxruntime", keep_float=("mix",)))
    feats = Features(module="tensorrt", version="10.3.0", rtx=False, builder_flag_fp16=True, builder_flag_int8=True,
                     implicit_int8_calibrators=True, progress_monitor=True, strongly_typed_flag=True,
                     strongly_typed_only=False, optimization_level=True, memory_pool=True, timing_cache=True,
                     sparse_weights=True)
    trt_plan = replace(plan, backend="tensorrt", features=feats)
    assert trt_plan.quantization == "implicit"
    kw = _config_kwargs(trt_plan, object(), Trt, [])
    assert kw["precision_constraints"] == "obey" and kw["int8"]
    assert "precision_constraints" not in _config_kwargs(replace(trt_plan, keep_float=()), object(), Trt, [])


@pytest.mark.rtx
def test_rtx_strongly_typed_keep_float_builds_without_qdq_around_the_layer(settings, outlier, workdir):
    """A real TensorRT-RTX build (strongly typed: int8 from the Q/DQ ONNX): the kept layer has no Q/DQ
    in the ONNX it parsed, the set is in the key, and the engine builds."""
    from test_build import _has_rtx

    why = _has_rtx()
    if why:
        pytest.skip(why)
    settings = settings.replace("build", calibrator="minmax")
    res = build(plan_build(settings, BuildRequest(outlier, "int8", backend="tensorrt-rtx", keep_float=("mix",))))
    plain = build(plan_build(settings, BuildRequest(outlier, "int8", backend="tensorrt-rtx")))
    a, p = res.artefact, plain.artefact
    assert a is not None and p is not None and a.id != p.id
    assert a.keep_float == ["mix"] and a.quantization == "explicit" and a.path.stat().st_size > 0
    assert "mix" not in _quantized_inputs(Path(a.source_onnx)) and "conv3" in _quantized_inputs(Path(a.source_onnx))
    assert "mix" in _quantized_inputs(Path(p.source_onnx))
    assert any("kept float" in n for n in a.notes)


def test_no_keep_float_choice_prefers_the_plain_artefact(settings, outlier):
    """The TUI's catalog rows choose with keep_float None ("any"): plain int8 wins over a kept-float one."""
    plain = _ort_int8(settings, outlier)
    _ort_int8(settings, outlier, keep=["mix"])
    assert select(settings, Selection(model=outlier, backend="onnxruntime", precision="int8")).id == plain.id
