"""``ncanvas doctor --gpu-selftest``: prove the TensorRT path on this machine in one command.

A tiny classifier (Conv 3->8, ReLU, global average pool, Gemm -> 10 classes; 32x32
input, dynamic batch 1..4) is made with ``onnx.helper`` in a temp folder and taken
through the project's own path, each step reported pass / fail / skipped with the
reason:

1. ``onnx``: the tiny model is written and checked;
2. ``onnxruntime``: reference logits for a fixed batch;
3. ``tensorrt``: TensorRT (or TensorRT-RTX) imports;
4. ``gpu``: the GPU worker has a CUDA context (pycuda + a GPU);
5. ``build``: ``build_engine`` builds an fp32 engine into a temp engine library
   (TensorRT-RTX can build without a GPU, so this step runs even on a CPU box);
6. ``run``: the engine is loaded by the runtime backend in the GPU worker (store
   checks, deserialize, pinned buffers) and run at batch 1 and 4;
7. ``compare``: max |logits - ONNX Runtime| within 1e-2.

``ok`` is true only when every step passed. Nothing is written outside the temp folder.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ncanvas_tui.engines.store import atomic_write_bytes
from ncanvas_tui.errors import NcanvasError

if TYPE_CHECKING:
    from ncanvas_tui.settings import Settings

SIZE = 32
CLASSES = 10
TOLERANCE = 1e-2
STEPS = ("onnx", "onnxruntime", "tensorrt", "gpu", "build", "run", "compare")

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


def _reason(e: BaseException) -> str:
    if isinstance(e, NcanvasError):
        return str(e)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def gpu_selftest(settings: Settings, progress: Callable[[str], None] | None = None, *,
                 backend: str | None = None, keep: Path | None = None) -> dict[str, Any]:
    """Run the steps above; returns ``{"ok", "backend", "steps": [{"step", "ok", "detail", "seconds"}], ...}``.

    ``backend``: tensorrt | tensorrt-rtx (default: [inference].backend when it is one of them,
    else tensorrt when it imports, else tensorrt-rtx). ``keep``: build in this folder instead of a temp one."""
    from ncanvas_tui import settings as settings_mod
    from ncanvas_tui.engines import compat

    say = progress or (lambda msg: None)
    steps: list[dict[str, Any]] = []
    out: dict[str, Any] = {"ok": False, "backend": None, "steps": steps}

    def record(step: str, ok: bool | None, detail: str, t0: float) -> bool:
        steps.append({"step": step, "name": step, "ok": ok, "detail": detail,
                      "seconds": round(time.perf_counter() - t0, 3)})
        say(f"{step}: {'pass' if ok else 'FAIL' if ok is False else 'skipped'} - {detail}")
        return bool(ok)

    def skip_rest(after: str, why: str) -> None:
        for s in STEPS[STEPS.index(after) + 1:]:
            if not any(x["step"] == s for x in steps):
                record(s, None, why, time.perf_counter())

    tmp_ctx = tempfile.TemporaryDirectory(prefix="ncanvas-selftest-") if keep is None else None
    root = Path(tmp_ctx.name) if tmp_ctx is not None else Path(str(keep))
    try:
        for d in ("models", "engines"):
            (root / d).mkdir(parents=True, exist_ok=True)
        onnx_path = root / "models" / "ncanvas_selftest.onnx"

        # 1. onnx
        t0 = time.perf_counter()
        try:
            tiny_classifier(onnx_path)
            atomic_write_bytes(onnx_path.parent / (onnx_path.name + ".json"),
                               f'{{"input_size": {SIZE}, "resize": {SIZE}, "crop": {SIZE}}}'.encode())
        except Exception as e:  # noqa: BLE001 - every failure is a reported step
            record("onnx", False, f"cannot make the tiny ONNX model: {_reason(e)}", t0)
            skip_rest("onnx", "needs the ONNX model")
            return out
        record("onnx", True, f"tiny conv classifier [N,3,{SIZE},{SIZE}] -> [N,{CLASSES}]", t0)

        # 2. onnxruntime reference
        t0 = time.perf_counter()
        x = np.random.default_rng(1).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
        try:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            ref = np.asarray(sess.run(["logits"], {"input": x})[0], dtype=np.float32)
        except Exception as e:  # noqa: BLE001
            record("onnxruntime", False, f"ONNX Runtime cannot run it: {_reason(e)}", t0)
            ref = None
        else:
            record("onnxruntime", True, f"reference logits, onnxruntime {ort.__version__}", t0)

        # 3. tensorrt
        t0 = time.perf_counter()
        candidates = [backend] if backend else (
            [settings.inference.backend] if settings.inference.backend in compat.TRT_BACKENDS
            else ["tensorrt", "tensorrt-rtx"])
        trt_mod = None
        errors = []
        for name in candidates:
            try:
                trt_mod = compat.import_trt(name)
                out["backend"] = name
                break
            except NcanvasError as e:
                errors.append(str(e))
        if trt_mod is None:
            record("tensorrt", False, "TensorRT not importable: " + " | ".join(errors), t0)
        else:
            record("tensorrt", True, f"{trt_mod.__name__} {getattr(trt_mod, '__version__', '?')}", t0)
        be_name = out["backend"]

        # 4. gpu (checked even without TensorRT: the report then says both)
        t0 = time.perf_counter()
        from ncanvas_tui.worker import get_worker

        worker = get_worker()
        has_gpu = worker.cuda is not None
        if has_gpu:
            assert worker.cuda is not None
            record("gpu", True, f"{worker.cuda.name} (sm {worker.cuda.sm}), CUDA context in the worker thread", t0)
        else:
            record("gpu", False, f"no GPU: {worker.cuda_error}", t0)
            out["gpu"] = worker.cuda_error
        if trt_mod is None:
            skip_rest("gpu", "needs TensorRT")
            return out

        # 5. build (TensorRT-RTX builds without a GPU; TensorRT needs one)
        t0 = time.perf_counter()
        st = settings_mod.from_dict({
            "paths": {"models": str(root / "models"), "engines": str(root / "engines"),
                      "calibration": str(root / "models")},
            "inference": {"backend": be_name, "precision": "fp32", "model": "ncanvas_selftest"},
            "build": {"batch": [1, 2, 4], "opt_level": 0, "workspace_mib": 256, "timing_cache": False,
                      "sanitize": False},
        }, origin="<selftest>", base=root)
        if not has_gpu and be_name == "tensorrt":
            record("build", None, "TensorRT builds need a GPU (TensorRT-RTX does not)", t0)
            skip_rest("build", "needs a GPU")
            return out
        try:
            from ncanvas_tui.engines.build import BuildRequest, build, plan_build

            plan = plan_build(st, BuildRequest("ncanvas_selftest", "fp32", backend=be_name, force=True))
            rec = worker.run(build, plan).artefact
        except Exception as e:  # noqa: BLE001
            record("build", False, f"build failed: {_reason(e)}", t0)
            skip_rest("build", "needs the engine")
            out["traceback"] = traceback.format_exc(limit=4)
            return out
        record("build", True, f"{Path(rec.path).name}, {rec.size / 1024:.0f} KiB, sidecar written", t0)

        # 6. run
        t0 = time.perf_counter()
        if not has_gpu:
            record("run", None, f"no GPU ({worker.cuda_error})", t0)
            skip_rest("run", "needs a GPU")
            return out
        try:
            from ncanvas_tui.backends import open_backend

            be = open_backend(be_name, rec.path, precision="fp32", max_batch=4)

            def run_it() -> tuple[np.ndarray, np.ndarray, float]:
                be.load()
                try:
                    one = be.infer(x[:1])
                    four = be.infer(x)
                    return one, four, float(getattr(be, "last_gpu_ms", 0.0))
                finally:
                    be.close()

            one, four, gpu_ms = worker.run(run_it)
        except Exception as e:  # noqa: BLE001
            record("run", False, f"cannot run the engine: {_reason(e)}", t0)
            skip_rest("run", "needs a result")
            out["traceback"] = traceback.format_exc(limit=4)
            return out
        record("run", True, f"batch 1 and 4 ran in the GPU worker (GPU compute {gpu_ms:.3f} ms at batch 4)", t0)

        # 7. compare
        t0 = time.perf_counter()
        if ref is None:
            record("compare", None, "no ONNX Runtime reference", t0)
            return out
        diff = float(max(np.abs(one - ref[:1]).max(), np.abs(four - ref).max()))
        out["max_abs_diff"] = round(diff, 6)
        ok = diff <= TOLERANCE and bool((four.argmax(1) == ref.argmax(1)).all())
        record("compare", ok, f"max |TensorRT - ONNX Runtime| = {diff:.2e} (tolerance {TOLERANCE:g})", t0)
        out["ok"] = all(s["ok"] is True for s in steps)
        return out
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()


def format_selftest(rep: dict[str, Any]) -> str:
    lines = [f"GPU self-test ({rep.get('backend') or 'no TensorRT'}): {'PASS' if rep.get('ok') else 'FAIL'}"]
    for s in rep["steps"]:
        mark = "pass" if s["ok"] else "FAIL" if s["ok"] is False else "skip"
        lines.append(f"  {mark:<4} {s['step']:<12} {s['detail']}")
    return "\n".join(lines)
