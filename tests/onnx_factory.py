"""Tiny ONNX graphs built with onnx.helper, for fast tests (anyone's).

Every model here is an "image classifier" of ``SIZE`` x ``SIZE`` RGB images with
``CLASSES`` outputs, small enough that ONNX Runtime, quantization and a
TensorRT-RTX build take well under a second. ``add_model`` drops one into a
models folder with the preprocessing sidecar the catalog needs.

    from onnx_factory import add_model, tiny_classifier   # tests/ is on sys.path under pytest
    path = add_model(workdir / "models", "tiny", tiny_classifier)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 32
CLASSES = 10
OPSET = 17

#: preprocessing sidecar for a SIZE x SIZE model (catalog keys)
SIDECAR = {"input_size": SIZE, "resize": SIZE, "crop": SIZE, "resize_mode": "short_side",
           "interpolation": "bilinear", "mean": [127.5, 127.5, 127.5], "std": [64.0, 64.0, 64.0]}


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _finish(graph: onnx.GraphProto, opset: int = OPSET, extra_opsets: list | None = None) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *(extra_opsets or [])],
                              producer_name="ncanvas-tests")
    model.ir_version = 8
    return model


def tiny_classifier(*, foldable: bool = True, batch: int | str = "N") -> onnx.ModelProto:
    """input [N,3,32,32] -> Conv 3->8 -> Relu -> Conv 8->16 s2 -> Relu -> GAP -> Flatten -> Gemm -> logits.

    ``foldable``: the first conv's weights are computed by constant nodes (Mul of two
    constants, then Add) and a dead branch hangs off the graph, so Polygraphy sanitize
    has work to do (fewer nodes after)."""
    r = _rng()
    w1 = (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b1 = (r.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (r.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    b2 = (r.standard_normal(16) * 0.1).astype(np.float32)
    wf = (r.standard_normal((CLASSES, 16)) * 0.5).astype(np.float32)
    bf = (r.standard_normal(CLASSES) * 0.1).astype(np.float32)
    nodes = []
    inits = [numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(b2, "b2"), numpy_helper.from_array(wf, "fc.weight"),
             numpy_helper.from_array(bf, "fc.bias")]
    if foldable:
        nodes += [
            helper.make_node("Constant", [], ["w1_half"], name="const_w1",
                             value=numpy_helper.from_array(w1 / 2, "w1_half_v")),
            helper.make_node("Constant", [], ["two"], name="const_two",
                             value=numpy_helper.from_array(np.array(2.0, np.float32), "two_v")),
            helper.make_node("Mul", ["w1_half", "two"], ["w1_pre"], name="fold_mul"),
            helper.make_node("Constant", [], ["zero"], name="const_zero",
                             value=numpy_helper.from_array(np.zeros((), np.float32), "zero_v")),
            helper.make_node("Add", ["w1_pre", "zero"], ["w1"], name="fold_add"),
            # dead branch: its output is used by nothing
            helper.make_node("Relu", ["w1"], ["dead"], name="dead_relu"),
        ]
    else:
        inits.append(numpy_helper.from_array(w1, "w1"))
    nodes += [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])],
        initializer=inits)
    return _finish(graph)


def wrong_rank() -> onnx.ModelProto:
    """A 'classifier' whose input is [N, 3072] (flattened pixels): rank 2, not an image batch."""
    r = _rng()
    w = (r.standard_normal((3 * SIZE * SIZE, CLASSES)) * 0.01).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"], name="mm")], "wrong_rank",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3 * SIZE * SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[numpy_helper.from_array(w, "w")])
    return _finish(graph)


def unsupported_op() -> onnx.ModelProto:
    """A classifier with an op no runtime knows (``Frobnicate`` of domain ``ncanvas.test``)."""
    base = tiny_classifier(foldable=False)
    g = base.graph
    nodes = list(g.node)
    # insert Frobnicate between relu1 and conv2
    for n in nodes:
        if n.name == "conv2":
            n.input[0] = "frob"
    idx = [n.name for n in nodes].index("conv2")
    nodes.insert(idx, helper.make_node("Frobnicate", ["r1"], ["frob"], name="frobnicate", domain="ncanvas.test"))
    graph = helper.make_graph(nodes, "unsupported_op", list(g.input), list(g.output), list(g.initializer))
    return _finish(graph, extra_opsets=[helper.make_opsetid("ncanvas.test", 1)])


def qdq_classifier() -> onnx.ModelProto:
    """A QAT-style model: Q/DQ pairs (int8 symmetric) in front of both convs."""
    base = tiny_classifier(foldable=False)
    g = base.graph
    inits = list(g.initializer) + [
        numpy_helper.from_array(np.array(0.02, np.float32), "s_in"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s_r1"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s_in", "z"], ["input_q"], name="q_in"),
        helper.make_node("DequantizeLinear", ["input_q", "s_in", "z"], ["input_dq"], name="dq_in"),
    ]
    for n in g.node:
        if n.name == "conv1":
            n.input[0] = "input_dq"
        if n.name == "conv2":
            n.input[0] = "r1_dq"
        nodes.append(n)
        if n.name == "relu1":
            nodes += [helper.make_node("QuantizeLinear", ["r1", "s_r1", "z"], ["r1_q"], name="q_r1"),
                      helper.make_node("DequantizeLinear", ["r1_q", "s_r1", "z"], ["r1_dq"], name="dq_r1")]
    graph = helper.make_graph(nodes, "qdq_classifier", list(g.input), list(g.output), inits)
    return _finish(graph)


def not_onnx_bytes() -> bytes:
    return b"this is not an ONNX protobuf \x00\xff\x10 at all"


def add_model(models_dir: Path, name: str, make: Callable[[], onnx.ModelProto] | bytes,
              *, sidecar: dict | None = None) -> Path:
    """Write ``name.onnx`` (+ ``name.onnx.json`` preprocessing sidecar) into ``models_dir``."""
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.onnx"
    if isinstance(make, bytes):
        path.write_bytes(make)
    else:
        onnx.save(make(), str(path))
    (models_dir / f"{name}.onnx.json").write_text(json.dumps(sidecar or SIDECAR), encoding="utf-8")
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    """Run an ONNX file with ONNX Runtime on the CPU (first output)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def outlier_classifier() -> onnx.ModelProto:
    """A classifier that measurably loses top-1 at int8, and only through one layer:

    input -> Conv ``stem`` 3->8 (kept float: first layer) whose channel 0 is an outlier (x1e4)
    -> Conv ``mix`` 8->16 (ignores channel 0: its weights there are 0, so fp32 never sees it)
    -> Relu -> Conv ``conv3`` 16->16 -> Relu -> GAP -> Flatten -> Gemm ``fc`` (head: kept float).

    Quantizing ``mix``'s input puts the outlier into the activation range: the other channels round
    to nothing and top-1 moves. Keeping ``mix`` float brings it back; ``conv3`` is harmless."""
    r = _rng()
    w1 = (r.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32)
    b1 = (r.standard_normal(8) * 0.1).astype(np.float32)
    w1[0] *= 1e4
    b1[0] = 5e4
    w2 = (r.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32)
    w2[:, 0] = 0.0
    b2 = (r.standard_normal(16) * 0.1).astype(np.float32)
    w3 = (r.standard_normal((16, 16, 1, 1)) * 0.3).astype(np.float32)
    b3 = (r.standard_normal(16) * 0.1).astype(np.float32)
    wf = (r.standard_normal((CLASSES, 16)) * 1.0).astype(np.float32)
    bf = np.zeros(CLASSES, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"), (wf, "fc.weight"),
              (bf, "fc.bias"))]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], name="mix", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "outlier_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=inits)
    return _finish(graph)
