"""The GPU worker with a real CUDA device (pycuda): run on the GPU machine or a Jetson.

    bash ../shared/device/stage.sh          # then, on the GPU machine:
    bash .device/setup.sh && python3 -m pytest -m gpu -q -rs tests/test_worker_gpu.py

Skipped with a reason where pycuda or a GPU is missing. Imports only numpy, pycuda,
pytest and the ncanvas core (no Textual, no TensorRT).
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time

import numpy as np
import pytest

from ncanvas_tui.errors import CancelledError, EngineError
from ncanvas_tui.progress import CancelToken
from ncanvas_tui.worker import DeviceBuffer, GpuWorker

pytestmark = pytest.mark.gpu

#: pinned host -> device bandwidth measured on the GPU test machine (../shared/device/README.md)
REFERENCE_H2D_GBPS = 55.0


def _cuda_or_skip() -> None:
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        pytest.skip(f"pycuda not importable ({e}): run on the GPU machine (bash .device/setup.sh)")
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            pytest.skip("pycuda imports but there is no CUDA device")
    except cuda.Error as e:
        pytest.skip(f"no usable CUDA driver/GPU: {e}")


def _primary_context_active(ordinal: int = 0) -> bool:
    """cuDevicePrimaryCtxGetState: is the primary context retained by anyone in this process?"""
    lib = ctypes.CDLL("libcuda.so.1")
    dev = ctypes.c_int()
    assert lib.cuDeviceGet(ctypes.byref(dev), ordinal) == 0
    flags, active = ctypes.c_uint(), ctypes.c_int()
    assert lib.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active)) == 0
    return bool(active.value)


@pytest.fixture
def gpu():
    _cuda_or_skip()
    w = GpuWorker(use_cuda=True, name="gpu-test").start()
    yield w
    w.shutdown(timeout=30)


def test_context_is_created_and_current_in_the_worker_thread_only(gpu: GpuWorker) -> None:
    import pycuda.driver as cuda

    assert gpu.cuda is not None and gpu.cuda_error is None
    print(f"\nGPU: {gpu.cuda.as_dict()}")
    assert cuda.Context.get_current() is None           # the main thread has no context

    def inside() -> tuple[str, bool, str]:
        ctx = cuda.Context.get_current()
        return threading.current_thread().name, ctx is not None, ctx.get_device().name() if ctx else ""

    name, has_ctx, dev_name = gpu.run(inside)
    assert name == "gpu-test" and has_ctx and dev_name == gpu.cuda.name
    assert _primary_context_active(gpu.device_ordinal)
    # another plain thread has no context either
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(cuda.Context.get_current()))
    t.start()
    t.join()
    assert seen == [None]


def test_pinned_buffers_and_async_copies_round_trip(gpu: GpuWorker) -> None:
    import pycuda.driver as cuda

    def job() -> tuple[bool, bool, bool]:
        stream = cuda.Stream()
        a = gpu.alloc((64, 3, 224, 224), np.float32)
        b = gpu.alloc((64, 3, 224, 224), np.float32)
        src = np.random.default_rng(1).standard_normal(a.shape).astype(np.float32)
        a.host[:] = src
        a.to_device(stream)
        cuda.memcpy_dtod_async(b.device_ptr, a.device_ptr, a.nbytes, stream)
        b.to_host(stream)
        stream.synchronize()
        plain_ok = np.array_equal(b.host, src)
        # partial copy (a batch of 3 out of 64): only the first rows move
        a.host[:] = 0
        a.to_device(stream)
        b.host[:3] = src[:3]
        b.to_device(stream, nbytes=3 * src[0].nbytes)
        cuda.memcpy_dtod_async(a.device_ptr, b.device_ptr, a.nbytes, stream)
        a.to_host(stream)
        stream.synchronize()
        partial_ok = np.array_equal(a.host[:3], src[:3])
        # mapped pinned memory (what a Jetson uses): the device sees host writes directly
        m = gpu.alloc((1024,), np.float32, mapped=True)
        d = gpu.alloc((1024,), np.float32)
        m.host[:] = np.arange(1024, dtype=np.float32)
        cuda.memcpy_dtod_async(d.device_ptr, m.device_ptr, m.nbytes, stream)
        d.to_host(stream)
        stream.synchronize()
        mapped_ok = m.mapped and np.array_equal(d.host, np.arange(1024, dtype=np.float32))
        for buf in (a, b, m, d):
            buf.free()
        return plain_ok, partial_ok, mapped_ok

    assert gpu.run(job) == (True, True, True)


def test_pinned_host_to_device_bandwidth(gpu: GpuWorker) -> None:
    import pycuda.driver as cuda

    def job() -> float:
        stream = cuda.Stream()
        buf = gpu.alloc((256 << 20,), np.uint8)       # 256 MiB
        buf.host[:] = 1
        start, end = cuda.Event(), cuda.Event()
        buf.to_device(stream)                          # warm up
        stream.synchronize()
        reps = 10
        start.record(stream)
        for _ in range(reps):
            buf.to_device(stream)
        end.record(stream)
        end.synchronize()
        seconds = end.time_since(start) / 1e3
        buf.free()
        return reps * buf.nbytes / seconds / 1e9

    gbps = gpu.run(job)
    print(f"\npinned H2D: {gbps:.1f} GB/s = {gbps / REFERENCE_H2D_GBPS:.0%} of the {REFERENCE_H2D_GBPS:.0f} GB/s "
          f"measured on the GPU machine")
    assert gbps > 1.0


def test_a_running_gpu_job_is_cancelled_and_the_context_still_works(gpu: GpuWorker) -> None:
    import pycuda.driver as cuda

    started = threading.Event()
    loops: list[int] = []

    def busy(*, cancel: CancelToken) -> None:
        stream = cuda.Stream()
        buf = gpu.alloc((1 << 22,), np.float32)
        started.set()
        try:
            for i in range(100000):
                cancel.check("busy")
                buf.to_device(stream)
                stream.synchronize()
                loops.append(i)
        finally:
            buf.free()

    job = gpu.submit(busy, cancel=CancelToken())
    assert started.wait(30)
    time.sleep(0.05)
    queued = gpu.submit(lambda: "never")
    assert queued.cancel() is True
    job.cancel()
    with pytest.raises(CancelledError):
        job.future.result(30)
    assert 0 < len(loops) < 100000
    assert queued.future.cancelled()
    assert gpu.run(lambda: cuda.Context.get_current() is not None) is True


def test_cuda_errors_come_back_as_results_and_the_worker_survives(gpu: GpuWorker) -> None:
    import pycuda.driver as cuda

    too_big = gpu.submit(cuda.mem_alloc, 1 << 50)      # 1 PiB
    err = too_big.future.exception(30)
    assert isinstance(err, (cuda.MemoryError, cuda.Error, MemoryError)), repr(err)

    def alloc_ok() -> int:
        m = cuda.mem_alloc(1 << 20)
        m.free()
        return 1

    assert gpu.run(alloc_ok) == 1
    assert gpu.stats.failed == 1


def test_shutdown_frees_buffers_pops_and_detaches_and_a_second_worker_starts() -> None:
    _cuda_or_skip()
    import pycuda.driver as cuda

    w = GpuWorker(use_cuda=True, name="gpu-first").start()
    bufs: list[DeviceBuffer] = w.run(lambda: [w.alloc((1 << 20,), np.float32),
                                              w.alloc((1 << 10,), np.float32, mapped=True)])
    free_before, _ = w.run(cuda.mem_get_info)
    assert _primary_context_active()
    w.shutdown(timeout=30)
    w.shutdown()                                        # idempotent
    assert not w.alive and all(b.freed for b in bufs)
    assert not _primary_context_active(), "primary context still retained after shutdown"

    with GpuWorker(use_cuda=True, name="gpu-second") as w2:
        assert w2.run(lambda: cuda.Context.get_current() is not None)
        free_after, _ = w2.run(cuda.mem_get_info)
        assert free_after >= free_before                  # nothing leaked from the first worker
    assert not _primary_context_active()


def test_worker_overhead_per_job_with_cuda(gpu: GpuWorker) -> None:
    gpu.run(lambda: None)
    n = 1000
    t0 = time.perf_counter()
    for _ in range(n):
        gpu.submit(int).future.result(5)
    us = (time.perf_counter() - t0) / n * 1e6
    print(f"\nworker round trip with a CUDA context: {us:.0f} us per job (goal < 200 us)")
    assert us < 2000


# ---- the engine runner's CUDA plumbing, with a TensorRT-shaped double ------------------------

@pytest.mark.parametrize("mapped", [False, True], ids=["copies", "mapped"])
def test_engine_runner_buffers_shapes_copies_and_events(gpu: GpuWorker, mapped: bool) -> None:
    import fake_tensorrt as fake

    from ncanvas_tui.backends.tensorrt import EngineRunner

    trt = fake.module()
    data = fake.engine_bytes(classes=10, chw=(3, 8, 8), batch=(1, 4, 8), seed=3)
    w = fake.weights(data)
    runner = EngineRunner(data, trt, label="fake.plan", mapped=mapped)
    gpu.run(runner.load)
    # plugins are registered before deserializing, with host code allowed (as Polygraphy's EngineFromBytes)
    assert trt.events == ["init_libnvinfer_plugins", "deserialize (host code allowed: True)"]
    try:
        assert runner.max_batch == 8 and runner.mapped is mapped
        rng = np.random.default_rng(0)
        for n in (1, 3, 8, 2):
            x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
            y = gpu.run(runner.infer, x)
            assert y.shape == (n, 10) and y.dtype == np.float32
            np.testing.assert_allclose(y, x.reshape(n, -1) @ w, rtol=1e-4, atol=1e-4)
            assert runner.last_gpu_ms >= 0.0 and runner.last_host_ms > 0.0
        # the result is a copy: the next inference does not change it
        x1 = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        y1 = gpu.run(runner.infer, x1)
        keep = y1.copy()
        gpu.run(runner.infer, rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
        np.testing.assert_array_equal(y1, keep)
        with pytest.raises(EngineError, match="batch of 9; this engine takes 1..8"):
            gpu.run(runner.infer, np.zeros((9, 3, 8, 8), np.float32))
        with pytest.raises(EngineError, match="does not fit"):
            gpu.run(runner.infer, np.zeros((1, 3, 9, 9), np.float32))
    finally:
        gpu.run(runner.close)
    assert runner.context is None and all(t.buf is None for t in runner.inputs + runner.outputs)


def test_a_tensorrt_without_named_tensors_is_refused_in_one_line(gpu: GpuWorker) -> None:
    """TensorRT < 8.5 (bindings, execute_async_v2) is not supported: one line, no half-loaded runner."""
    import fake_tensorrt as fake

    from ncanvas_tui.backends.tensorrt import EngineRunner

    data = fake.engine_bytes(classes=10, chw=(3, 8, 8), batch=(1, 4, 8), seed=3)
    runner = EngineRunner(data, fake.module(named=False), label="old.plan")
    with pytest.raises(EngineError, match="old.plan: this TensorRT has no execute_async_v3.*8.6 or newer"):
        gpu.run(runner.load)


def test_engine_runner_reports_a_corrupt_engine(gpu: GpuWorker) -> None:
    import fake_tensorrt as fake

    from ncanvas_tui.backends.tensorrt import EngineRunner

    runner = EngineRunner(b"\x00not an engine", fake.module(), label="broken.plan")
    with pytest.raises(EngineError, match=r"broken.plan: cannot load engine: .*magic tag"):
        gpu.run(runner.load)


def test_engine_runner_outside_the_worker_fails_clearly() -> None:
    _cuda_or_skip()
    import fake_tensorrt as fake

    from ncanvas_tui.backends.tensorrt import EngineRunner
    from ncanvas_tui.errors import BackendError

    with pytest.raises(BackendError, match="no current CUDA context"):
        EngineRunner(fake.engine_bytes(), fake.module()).load()


def test_runner_buffers_are_freed_by_worker_shutdown_if_not_closed() -> None:
    _cuda_or_skip()
    import fake_tensorrt as fake

    from ncanvas_tui.backends.tensorrt import EngineRunner

    w = GpuWorker(use_cuda=True).start()
    runner = EngineRunner(fake.engine_bytes(), fake.module())
    w.run(runner.load)
    bufs = [t.buf for t in runner.inputs + runner.outputs]
    w.shutdown(timeout=30)
    assert all(b is not None and b.freed for b in bufs) and runner.context is None
    assert not _primary_context_active()


# ---- the tensorrt backend end to end (store check -> worker -> runner), TensorRT replaced by the double --

def _library_with_engine(tmp_path, gpu_name: str, sm: str):
    """A settings file whose engine library holds a (double) engine for a tiny user model."""
    import fake_tensorrt as fake

    from ncanvas_tui import settings as settings_mod
    from ncanvas_tui.engines.selftest import tiny_classifier
    from ncanvas_tui.engines.store import Artefact, ArtefactKey, EngineStore
    from ncanvas_tui.vision import catalog

    (tmp_path / "models").mkdir(exist_ok=True)
    onnx_path = tiny_classifier(tmp_path / "models" / "tiny.onnx")
    (tmp_path / "models" / "tiny.onnx.json").write_text('{"input_size": 32, "resize": 32, "crop": 32}')
    st = settings_mod.from_dict({"paths": {"models": "models", "engines": "engines"},
                                 "build": {"batch": [1, 2, 4]}}, base=tmp_path)
    entry = catalog.find(st, "tiny")
    store = EngineStore(st)
    data = fake.engine_bytes(classes=10, chw=(3, 32, 32), batch=(1, 2, 4), seed=5)
    sha = catalog.sha256_file(onnx_path)
    key = ArtefactKey(model="tiny", model_sha256=sha, backend="tensorrt", backend_version=fake.__version__,
                      precision="fp32", batch=(1, 2, 4), gpu=f"{gpu_name} (sm {sm})")
    rec = Artefact(path=store.path_for(key), id=key.id, model="tiny", backend="tensorrt", precision="fp32",
                   batch=[1, 2, 4], backend_version=fake.__version__, model_sha256=sha, gpu_name=gpu_name,
                   compute_capability=sm)
    store.save(rec, data)
    return st, entry, fake.weights(data)


@pytest.fixture
def trt_double(monkeypatch: pytest.MonkeyPatch):
    _cuda_or_skip()
    import fake_tensorrt as fake

    mod = fake.module()
    mod.Builder = object  # what compat.import_trt looks for in a real TensorRT
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    yield mod
    from ncanvas_tui.worker import shutdown_worker

    shutdown_worker()


def test_tensorrt_backend_end_to_end_through_the_shared_worker(trt_double, tmp_path) -> None:
    import pycuda.driver as cuda

    from ncanvas_tui.backends import open_backend
    from ncanvas_tui.engines.artefacts import Selection, select
    from ncanvas_tui.worker import get_worker

    cuda.init()
    dev = cuda.Device(0)
    major, minor = dev.compute_capability()
    st, _entry, w = _library_with_engine(tmp_path, dev.name(), f"{major}.{minor}")
    t = select(st, Selection(model="tiny", backend="tensorrt", precision="fp32"))
    be = open_backend(t.backend, t.path, precision=t.precision, max_batch=t.max_batch)
    be.load()                                    # from the main thread: hops into the shared worker
    assert threading.current_thread() is not get_worker().thread
    assert be.info.version == "0.0-fake" and be.info.max_batch == 4 and be.info.device.startswith("cuda:0")
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    y = be.infer(x)
    np.testing.assert_allclose(y, x.reshape(3, -1) @ w, rtol=1e-4, atol=1e-4)
    assert be.describe()["io"]["api"] == "execute_async_v3"
    runner = be.runner
    # the worker shuts down first (exit, TUI quit): it frees the engine's buffers; close() after
    # that is a no-op and starts no new worker
    from ncanvas_tui import worker as worker_mod

    worker_mod.shutdown_worker()
    assert runner is not None and runner.context is None
    assert all(t.buf is None for t in runner.inputs + runner.outputs)
    be.close()
    assert worker_mod._shared is None


def test_an_engine_from_another_gpu_is_refused_before_deserializing(trt_double, tmp_path) -> None:
    from ncanvas_tui.engines.artefacts import Selection, select

    st, _entry, _ = _library_with_engine(tmp_path, "NVIDIA Jetson AGX Orin", "8.7")
    with pytest.raises(EngineError, match=r"built for GPU NVIDIA Jetson AGX Orin \(sm 8.7\), this is "):
        select(st, Selection(model="tiny", backend="tensorrt", precision="fp32"))


def test_interpreter_exit_with_a_live_cuda_worker_is_clean(tmp_path) -> None:
    """No explicit shutdown: atexit frees the buffers, pops and detaches; the process exits 0 quietly."""
    _cuda_or_skip()
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    script = tmp_path / "exit_cuda.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(repo)!r})\n"
        "import numpy as np\n"
        "from ncanvas_tui.worker import get_worker\n"
        "w = get_worker()\n"
        "assert w.cuda is not None, w.cuda_error\n"
        "buf = w.run(lambda: w.alloc((1 << 20,), np.float32))\n"
        "w.add_cleanup(lambda: print('cleanup-at-exit', buf.nbytes, flush=True))\n"
        "print('ok', flush=True)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "cleanup-at-exit", str(4 << 20)]
    assert "error" not in out.stderr.lower(), out.stderr
