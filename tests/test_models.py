"""`ncanvas models list`, the user's own ONNX files, and ONNX files that are not what we need."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
from conftest import DEFAULT_ONNX, PHOTOS
from onnx import TensorProto, helper

SEED_25 = ["vgg11", "inception_v3", "resnet50", "resnext50", "se_resnet50", "shufflenet_v1", "shufflenet_v2",
           "res2net50", "mobilenet_v2", "mobilenet_v3", "regnet", "efficientnet", "efficientnet_v2", "vit",
           "swin", "conformer", "twins", "mobilevit", "clip", "deit", "deit3", "mvitv2", "mobileone", "edgenext",
           "efficientvit"]


def tiny_classifier(path: Path, *, shape: list, classes: int = 10, inputs: int = 1) -> Path:
    """A real ONNX model: GlobalAveragePool -> Flatten -> MatMul, any input shape we ask for."""
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, shape) for i in range(inputs)]
    ch = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else 3
    w = helper.make_tensor("w", TensorProto.FLOAT, [ch, classes], [0.1] * (ch * classes))
    nodes = [helper.make_node("GlobalAveragePool", ["x0"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    if len(shape) != 4:
        nodes = [helper.make_node("ReduceMean", ["x0"], ["f"], axes=[2], keepdims=0),
                 helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                   ["N", classes])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_list_json_has_the_catalog_and_the_bundled_model(cli, settings_path: Path) -> None:
    r = cli("models", "list", "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    models = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert set(SEED_25) <= set(models)
    lite = models["efficientnet_lite0"]
    assert lite["present"] and lite["bundled"] and lite["input_size"] == 224
    assert lite["sha256"] == hashlib.sha256(DEFAULT_ONNX.read_bytes()).hexdigest()
    assert lite["sha256"] == (DEFAULT_ONNX.parent / "efficientnet_lite0.onnx.sha256").read_text().split()[0]
    assert lite["preprocessing"]["mean"] == [127.0] * 3 and lite["preprocessing"]["std"] == [128.0] * 3
    for name in SEED_25:
        m = models[name]
        assert not m["present"] and m["url"].startswith("http") and m["top1"] > 50
        assert m["preprocessing"]["crop"] == m["input_size"]
    assert models["regnet"]["preprocessing"]["channel_order"] == "BGR"


def test_text_list_says_what_is_missing(cli, settings_path: Path) -> None:
    r = cli("models", "list", "--settings", str(settings_path))
    assert r.returncode == 0
    assert "efficientnet_lite0" in r.stdout and "yes" in r.stdout
    assert "25 catalog models are not on this machine" in r.stdout


def test_user_onnx_with_sidecar_is_listed_and_runs(cli, settings_path: Path, workdir: Path) -> None:
    shutil.copy(DEFAULT_ONNX, workdir / "models" / "my_lite.onnx")
    (workdir / "models" / "my_lite.onnx.json").write_text(json.dumps({
        "display": "My Lite", "resize": 256, "crop": 224, "input_size": 224, "interpolation": "bicubic",
        "mean": [127, 127, 127], "std": [128, 128, 128]}))
    shutil.copy(DEFAULT_ONNX, workdir / "models" / "nosidecar.onnx")
    r = cli("models", "list", "--json", "--settings", str(settings_path))
    models = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert models["my_lite"]["user"] and not models["my_lite"]["preprocessing"]["assumed"]
    assert models["nosidecar"]["preprocessing"]["assumed"]
    r = cli("infer", str(PHOTOS / "coffee.jpg"), "--model", "my_lite", "--json", "--settings", str(settings_path))
    assert json.loads(r.stdout)["results"][0]["top"][0]["label"] == "espresso"


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("make, why", [
    (lambda p: p.write_text('{"mean": [1, 2]}'), "odd.onnx.json: bad preprocessing"),
    (lambda p: p.write_bytes(b"\xff\xfe not json"), "odd.onnx.json: not a readable JSON"),
    (lambda p: p.mkdir(), "odd.onnx.json: is a directory"),
    (_fifo, "odd.onnx.json: is a FIFO (named pipe), not a regular file"),
])
def test_broken_sidecar_makes_only_its_own_model_unusable(cli, settings_path: Path, workdir: Path,
                                                          make, why: str) -> None:
    shutil.copy(DEFAULT_ONNX, workdir / "models" / "odd.onnx")
    make(workdir / "models" / "odd.onnx.json")
    # the default model, the listing and doctor still work (they all exited 2 before) ...
    r = cli("infer", str(PHOTOS / "coffee.jpg"), "--json", "--settings", str(settings_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["top"][0]["label"] == "espresso"
    r = cli("models", "list", "--json", "--settings", str(settings_path), timeout=60)
    assert r.returncode == 0, r.stderr
    odd = {m["name"]: m for m in json.loads(r.stdout)["models"]}["odd"]
    assert odd["usable"] is False and why in odd["problem"]
    r = cli("models", "list", "--settings", str(settings_path), timeout=60)
    assert r.returncode == 0 and "UNUSABLE" in r.stdout and why in r.stdout
    r = cli("doctor", "--json", "--settings", str(settings_path), timeout=60)
    assert r.returncode == 0, r.stderr
    # ... and asking for that model is one line naming the sidecar and why
    r = cli("infer", str(PHOTOS / "coffee.jpg"), "--model", "odd", "--settings", str(settings_path), timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and why in r.stderr, r.stderr


@pytest.mark.parametrize("case, expected", [
    ("rank3", "has rank 3"),
    ("gray", "has 1 channels"),
    ("two_inputs", "has 2 inputs"),
    ("garbage", "ONNX Runtime cannot load this model"),
    ("wrong_size", "is 299x299 but the catalog says 224x224"),
])
def test_onnx_with_unexpected_input_is_one_line(cli, settings_path: Path, workdir: Path, case: str,
                                                expected: str) -> None:
    path = workdir / "models" / f"{case}.onnx"
    if case == "rank3":
        tiny_classifier(path, shape=["N", 3, 224])
    elif case == "gray":
        tiny_classifier(path, shape=["N", 1, 224, 224])
    elif case == "two_inputs":
        tiny_classifier(path, shape=["N", 3, 224, 224], inputs=2)
    elif case == "wrong_size":
        tiny_classifier(path, shape=["N", 3, 299, 299])
    else:
        path.write_bytes(b"\x08\x07this is not protobuf at all" * 10)
    r = cli("infer", str(PHOTOS / "coffee.jpg"), "--model", case, "--settings", str(settings_path))
    assert r.returncode == 2, r.stdout
    assert str(path) in r.stderr and expected in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


def test_static_batch_model_is_split_into_its_batch(settings, workdir: Path) -> None:
    from ncanvas_tui.vision.classify import Classifier

    tiny_classifier(workdir / "models" / "static2.onnx", shape=[2, 3, 224, 224])
    res = Classifier(settings, model="static2").classify([str(PHOTOS / "coffee.jpg")] * 5)
    assert res.batches == [2, 2, 1] and len(res.results) == 5
    assert all(r["top"][0]["label"].startswith("class ") for r in res.results)  # 10 classes: no ImageNet names
