"""A tiny dynamic-batch classifier made with ``onnx.helper``: fast engine builds for tests and checks.

(The acceptance run, ``ncanvas doctor --gpu-selftest``, lives in ``engines/acceptance.py`` and uses
the bundled model and the shipped photos.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32
CLASSES = 10


def tiny_classifier(path: Path, *, size: int = SIZE, classes: int = CLASSES, seed: int = 0) -> Path:
    """Write a small dynamic-batch conv classifier [N, 3, size, size] -> [N, classes] to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((classes, 8)) * 0.5).astype(np.float32)
    fcb = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "ncanvas_selftest",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
                     numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(fcb, "fcb")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="ncanvas")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
