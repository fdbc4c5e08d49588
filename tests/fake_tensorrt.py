"""A TensorRT-shaped test double for ``EngineRunner`` on a machine with CUDA but no TensorRT.

The GPU test machine has pycuda and an H100 but no TensorRT (and TensorRT-RTX refuses
compute capability 9.0), so no real engine can run there. This module speaks the part
of the TensorRT Python API the runner uses -- ``Runtime.deserialize_cuda_engine``,
``ICudaEngine`` named tensors (TRT >= 8.5) or bindings (older), an execution context
with ``set_input_shape``/``set_tensor_address``/``execute_async_v3`` or
``set_binding_shape``/``execute_async_v2`` -- and "runs" a linear classifier by reading
the input from the device pointer the runner gave it and writing logits to the
output pointer with real CUDA copies. So the runner's buffers, pinned/mapped memory,
async copies, shapes, events and output copy are exercised for real; only the maths
is numpy. Real-TensorRT tests are in tests/test_runtime.py (``@pytest.mark.tensorrt``).

An "engine" is JSON: {"classes": K, "chw": [3, H, W], "batch": [1, 4, 8], "seed": S}.
"""

from __future__ import annotations

import json
import types
from enum import Enum
from typing import Any

import numpy as np

__version__ = "0.0-fake"


def weights(engine_bytes: bytes) -> np.ndarray:
    spec = json.loads(engine_bytes)
    d = int(np.prod(spec["chw"]))
    return np.random.default_rng(spec["seed"]).standard_normal((d, spec["classes"])).astype(np.float32)


def engine_bytes(classes: int = 10, chw: tuple[int, int, int] = (3, 8, 8), batch: tuple[int, int, int] = (1, 4, 8),
                 seed: int = 0) -> bytes:
    return json.dumps({"classes": classes, "chw": list(chw), "batch": list(batch), "seed": seed}).encode()


class DataType(Enum):
    FLOAT = 0


class TensorIOMode(Enum):
    INPUT = 1
    OUTPUT = 2


def nptype(dt: DataType) -> type:
    return np.float32


class ILogger:
    class Severity(Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


class _Context:
    def __init__(self, eng: _Engine) -> None:
        self.eng = eng
        self.batch = eng.batch[2]
        self.addr: dict[str, int] = {}

    # named tensors (TRT >= 8.5)
    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if not self.eng.batch[0] <= shape[0] <= self.eng.batch[2]:
            return False
        self.batch = shape[0]
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = int(ptr)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.batch, *self.eng.chw) if name == "input" else (self.batch, self.eng.classes)

    def execute_async_v3(self, stream_handle: int) -> bool:
        return self._run(self.addr["input"], self.addr["logits"])

    def _run(self, src: int, dst: int) -> bool:
        import pycuda.driver as cuda

        cuda.Context.synchronize()        # the runner's async H2D copy is done
        x = np.empty((self.batch, *self.eng.chw), np.float32)
        cuda.memcpy_dtoh(x, src)
        y = np.ascontiguousarray(x.reshape(self.batch, -1) @ self.eng.w)
        cuda.memcpy_htod(dst, y)
        self.eng.runs += 1
        return True


class _BindingContext(_Context):
    """TensorRT < 8.5: bindings only (no execute_async_v3)."""

    execute_async_v3 = None  # type: ignore[assignment]

    def __getattribute__(self, name: str) -> Any:
        if name in ("execute_async_v3", "set_input_shape", "set_tensor_address"):
            raise AttributeError(name)
        return super().__getattribute__(name)

    def set_binding_shape(self, index: int, shape: tuple[int, ...]) -> bool:
        return _Context.set_input_shape(self, "input", shape)

    def get_binding_shape(self, index: int) -> tuple[int, ...]:
        return self.get_tensor_shape("input" if index == 0 else "logits")

    def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
        return self._run(bindings[0], bindings[1])


class _Engine:
    def __init__(self, data: bytes, named: bool) -> None:
        spec = json.loads(data)
        self.classes = spec["classes"]
        self.chw = tuple(spec["chw"])
        self.batch = tuple(spec["batch"])
        self.w = weights(data)
        self.named = named
        self.runs = 0
        if named:
            self.num_io_tensors = 2

    def create_execution_context(self) -> _Context:
        return _Context(self) if self.named else _BindingContext(self)

    # named
    def get_tensor_name(self, i: int) -> str:
        return ("input", "logits")[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, *self.chw) if name == "input" else (-1, self.classes)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [(b, *self.chw) for b in self.batch]

    # bindings
    @property
    def num_bindings(self) -> int:
        return 2

    def binding_is_input(self, i: int) -> bool:
        return i == 0

    def get_binding_name(self, i: int) -> str:
        return self.get_tensor_name(i)

    def get_binding_dtype(self, i: int) -> DataType:
        return DataType.FLOAT

    def get_binding_shape(self, i: int) -> tuple[int, ...]:
        return self.get_tensor_shape(self.get_tensor_name(i))

    def get_profile_shape(self, profile: int, i: int) -> list[tuple[int, ...]]:
        return self.get_tensor_profile_shape("input", profile)


def module(*, named: bool = True) -> types.SimpleNamespace:
    """A fake ``tensorrt`` module; ``named=False`` mimics TensorRT < 8.5 (bindings, execute_async_v2)."""

    events: list[str] = []   # what the runner called, in order (plugins before deserializing)

    def init_libnvinfer_plugins(logger: ILogger, namespace: str) -> bool:
        events.append("init_libnvinfer_plugins")
        return True

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
            events.append(f"deserialize (host code allowed: {self.engine_host_code_allowed})")
            try:
                return _Engine(bytes(data), named)
            except (ValueError, KeyError):
                self.logger.log(ILogger.Severity.ERROR, "Serialization assertion failed: magic tag mismatch")
                return None

    return types.SimpleNamespace(__version__=__version__, Runtime=Runtime, ILogger=ILogger,
                                 TensorIOMode=TensorIOMode, nptype=nptype, DataType=DataType,
                                 init_libnvinfer_plugins=init_libnvinfer_plugins, events=events)
