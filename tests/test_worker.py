"""The GPU worker without a GPU: the job queue, progress, cancellation, errors, shutdown.

These run everywhere (CUDA disabled); tests/test_worker_gpu.py repeats the CUDA half
on a machine with a GPU.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError as FutureCancelled
from pathlib import Path

import pytest

from ncanvas_tui.errors import BackendError, CancelledError, ImageError
from ncanvas_tui.progress import CancelToken
from ncanvas_tui.worker import GpuWorker, current_worker, get_worker, on_worker, shutdown_worker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker():
    w = GpuWorker(use_cuda=False, name="test-worker").start()
    yield w
    w.shutdown(timeout=10)


def test_jobs_run_in_order_in_the_one_worker_thread(worker: GpuWorker) -> None:
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    jobs = [worker.submit(job, i) for i in range(20)]
    assert [j.future.result(5) for j in jobs] == [i * i for i in range(20)]
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"test-worker"}
    assert worker.cuda is None and "disabled" in (worker.cuda_error or "")
    assert worker.stats.completed == 20


def test_progress_is_called_from_the_worker_thread(worker: GpuWorker) -> None:
    calls: list[tuple[int, int, str, str]] = []

    def on_progress(done: int, total: int, msg: str) -> None:
        calls.append((done, total, msg, threading.current_thread().name))

    def job(*, progress) -> str:  # the job is given its progress callback explicitly
        for i in range(1, 4):
            progress(i, 3, f"step {i}")
        return "ok"

    assert worker.submit(job, progress=on_progress).future.result(5) == "ok"
    assert calls == [(1, 3, "step 1", "test-worker"), (2, 3, "step 2", "test-worker"),
                     (3, 3, "step 3", "test-worker")]


def test_a_failing_progress_callback_does_not_break_the_job(worker: GpuWorker) -> None:
    def bad(*_a: object) -> None:
        raise RuntimeError("widget went away")

    def job(*, progress) -> int:
        progress(1, 1, "x")  # the worker guards the callback: it is logged, the job goes on
        return 7

    assert worker.submit(job, progress=bad).future.result(5) == 7


def test_errors_come_back_as_the_futures_exception_and_the_worker_survives(worker: GpuWorker) -> None:
    def boom() -> None:
        raise ImageError("a.jpg: not an image")

    def crash() -> None:
        raise ZeroDivisionError("bug")

    j1, j2, j3 = worker.submit(boom), worker.submit(crash), worker.submit(lambda: "alive")
    with pytest.raises(ImageError, match="a.jpg: not an image"):
        j1.future.result(5)
    assert isinstance(j2.future.exception(5), ZeroDivisionError)
    assert j3.future.result(5) == "alive"
    assert worker.alive and worker.stats.failed == 2


def test_a_queued_job_cancelled_before_it_starts_never_runs(worker: GpuWorker) -> None:
    gate = threading.Event()
    ran: list[str] = []
    blocker = worker.submit(gate.wait, 5)
    queued = worker.submit(lambda: ran.append("queued"))
    after = worker.submit(lambda: ran.append("after"))
    assert queued.cancel() is True
    gate.set()
    assert blocker.future.result(5) is True
    after.future.result(5)
    assert ran == ["after"]
    assert queued.future.cancelled()
    with pytest.raises(FutureCancelled):
        queued.future.result(1)


def test_a_running_job_sees_cancel_and_stops(worker: GpuWorker) -> None:
    started = threading.Event()
    steps: list[int] = []

    def long_job(*, cancel: CancelToken) -> None:
        started.set()
        for i in range(1000):
            cancel.check("long job")
            steps.append(i)
            time.sleep(0.005)

    job = worker.submit(long_job, cancel=CancelToken())  # the job adopts the token: job.cancel() sets it
    assert started.wait(5)
    time.sleep(0.03)
    assert job.cancel() is False          # already running: cooperative
    with pytest.raises(CancelledError, match="cancelled"):
        job.future.result(5)
    assert 0 < len(steps) < 1000
    assert worker.submit(lambda: "next").future.result(5) == "next"


def test_the_token_is_also_a_callable_for_code_that_polls_one(worker: GpuWorker) -> None:
    """Child processes and calibration loops poll a ``Callable[[], bool]``: the token is one."""
    seen: list[bool] = []
    token = CancelToken()

    def job(*, cancel: CancelToken) -> None:
        seen.append(cancel())
        cancel.cancel()
        seen.append(cancel())

    j = worker.submit(job, cancel=token)
    j.future.exception(5)
    assert seen == [False, True] and j.cancelled and j.token is token


def test_shutdown_cancels_queued_jobs_runs_cleanups_in_the_worker_and_is_idempotent() -> None:
    w = GpuWorker(use_cuda=False, name="test-shutdown").start()
    gate = threading.Event()
    cleanup_threads: list[str] = []
    order: list[int] = []
    w.add_cleanup(lambda: (order.append(1), cleanup_threads.append(threading.current_thread().name)))
    w.add_cleanup(lambda: order.append(2))
    removed = w.add_cleanup(lambda: order.append(99))
    w.remove_cleanup(removed)
    first = w.submit(gate.wait, 5)
    queued = [w.submit(lambda: "never") for _ in range(3)]
    threading.Timer(0.05, gate.set).start()
    w.shutdown(timeout=10)
    assert first.future.result(1) is True
    assert all(j.future.cancelled() for j in queued)
    assert order == [2, 1] and cleanup_threads == ["test-shutdown"]
    assert not w.alive and w.closed
    w.shutdown()                           # idempotent
    with pytest.raises(RuntimeError, match="shut down"):
        w.submit(lambda: 1)


def test_shutdown_without_cancel_drains_the_queue() -> None:
    w = GpuWorker(use_cuda=False).start()
    gate = threading.Event()
    w.submit(gate.wait, 5)
    rest = [w.submit(lambda i=i: i) for i in range(5)]
    threading.Timer(0.05, gate.set).start()
    w.shutdown(cancel_pending=False, timeout=10)
    assert [j.future.result(1) for j in rest] == list(range(5))


def test_shutdown_asks_the_running_job_to_stop() -> None:
    w = GpuWorker(use_cuda=False).start()
    started = threading.Event()

    def polling(*, cancel: CancelToken) -> None:
        started.set()
        while True:
            cancel.check("polling")
            time.sleep(0.002)

    job = w.submit(polling, cancel=CancelToken())
    assert started.wait(5)
    t0 = time.perf_counter()
    w.shutdown(timeout=10)
    assert time.perf_counter() - t0 < 2
    assert isinstance(job.future.exception(1), CancelledError)


def test_cuda_required_but_disabled_fails_at_start_with_a_reason() -> None:
    pytest.importorskip("ncanvas_tui.worker")
    try:
        import pycuda.driver  # noqa: F401
        pytest.skip("pycuda is installed here: see tests/test_worker_gpu.py")
    except ImportError:
        pass
    with pytest.raises(BackendError, match="CUDA required but pycuda not importable"):
        GpuWorker(use_cuda=True).start()


def test_auto_without_pycuda_runs_cpu_only_and_says_why() -> None:
    try:
        import pycuda.driver  # noqa: F401
        pytest.skip("pycuda is installed here")
    except ImportError:
        pass
    with GpuWorker() as w:
        assert w.cuda is None and "pycuda not importable" in (w.cuda_error or "")
        assert w.run(lambda: 41 + 1) == 42


def test_current_worker_and_on_worker_route_into_the_worker_thread(worker: GpuWorker) -> None:
    assert current_worker() is None
    assert worker.run(current_worker) is worker
    # already in a worker: on_worker calls directly (no deadlock waiting on ourselves)
    assert worker.run(lambda: on_worker(threading.current_thread)) is worker.thread
    assert worker.run(lambda: worker.run(lambda: "nested")) == "nested"


def test_shared_worker_is_reused_and_replaced_after_shutdown() -> None:
    a = get_worker(use_cuda=False)
    assert get_worker() is a
    assert on_worker(threading.current_thread) is a.thread
    shutdown_worker()
    assert a.closed
    b = get_worker(use_cuda=False)
    assert b is not a and b.run(lambda: 1) == 1
    shutdown_worker()


def test_worker_overhead_per_job_is_small(worker: GpuWorker) -> None:
    """Goal 0.2 ms (bench/bench_worker.py measures it); asserted loosely for a busy CI box."""
    worker.run(lambda: None)
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        worker.submit(int).future.result(5)
    per_job_ms = (time.perf_counter() - t0) / n * 1e3
    print(f"worker round trip: {per_job_ms * 1000:.0f} us per job")
    assert per_job_ms < 2.0


def test_interpreter_exit_with_a_live_worker_is_clean(tmp_path: Path) -> None:
    """atexit: the shared worker shuts down, cleanups run, the process exits promptly."""
    script = tmp_path / "exit.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from ncanvas_tui.worker import get_worker\n"
        "w = get_worker(use_cuda=False)\n"
        "w.add_cleanup(lambda: print('cleanup ran', flush=True))\n"
        "print(w.run(lambda: 'job ran'), flush=True)\n"
        "w.submit(__import__('time').sleep, 0.2)\n"
        "w.submit(print, 'queued job must not run')\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["job ran", "cleanup ran"]
    assert time.perf_counter() - t0 < 15


def test_classify_through_the_worker_matches_a_direct_call(settings, workdir: Path) -> None:
    """The ONNX Runtime backend runs in the same worker: same answers as calling it directly."""
    from ncanvas_tui.vision.classify import Classifier

    photos = sorted(str(p) for p in (workdir / "pictures").glob("*.jpg"))[:3]
    if not photos or not (REPO / "models" / "efficientnet_lite0.onnx").is_file():
        pytest.skip("bundled model or test photos not present")
    direct = Classifier(settings, backend="onnxruntime", precision="fp32").classify(photos)
    with GpuWorker(use_cuda=False) as w:
        clf = Classifier(settings, backend="onnxruntime", precision="fp32")
        progress: list[tuple[int, int]] = []
        job = w.submit(clf.classify, photos, progress=lambda d, t, m: progress.append((d, t)),
                       cancel=CancelToken())
        res = job.future.result(60)
    assert [r["top"][0]["index"] for r in res.results] == [r["top"][0]["index"] for r in direct.results]
    assert progress and progress[-1] == (len(photos), len(photos))
