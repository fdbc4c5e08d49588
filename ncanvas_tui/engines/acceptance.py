"""``ncanvas doctor --gpu-selftest``: the Jetson acceptance run, one command that proves what a user relies on.

With the bundled model and the shipped photos, in a temp engine library:

==================  ===========================================================================
step                proves
==================  ===========================================================================
onnxruntime         the fp32 reference: ONNX Runtime's top-1 on every photo
tensorrt            TensorRT (or TensorRT-RTX) imports; which features it has
gpu                 the GPU worker has a CUDA context
build fp32/fp16     both build (in the child process every build uses)
build int8          calibrated on the photos (implicit on TensorRT <= 10, Q/DQ elsewhere)
int8 cache reuse    a second int8 build calibrates nothing (calibration cache / Q/DQ model reused)
int8 foreign cache  a calibration cache stamped with another TensorRT version is moved aside and the
                    build recovers (TensorRT <= 10; n/a where int8 is explicit)
timing cache        a rebuild with the timing cache: its build time against the first (a ratio)
second process      each engine deserializes in a fresh process (what `ncanvas infer` will do)
vs onnxruntime      each engine's top-1 on the photos against ONNX Runtime fp32
vs polygraphy       each engine through Polygraphy's TrtRunner (an independent runner): same top-1
latency             p50 at batch 1 of each engine
dla                 where the device has a DLA: an fp16 engine on core 0 (GPU fallback counted), its
                    top-1 and latency (n/a elsewhere)
cancel              a build cancelled by its token, and one stopped by SIGINT, leave nothing behind
==================  ===========================================================================

Each step passes, fails (with the reason) or says "not run here" and why (no GPU, no TensorRT):
``ok`` is true only when every step passed, so the command's exit is non-zero on a machine that
could not prove everything. The report is also written as Markdown (for bug reports) under
``[paths].output``. Nothing else outside the temp folder is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ncanvas_tui.errors import CancelledError, NcanvasError
from ncanvas_tui.progress import CancelToken

if TYPE_CHECKING:
    from ncanvas_tui.engines.store import Artefact
    from ncanvas_tui.settings import Settings

MODEL = "efficientnet_lite0"
PRECISIONS = ("fp32", "fp16", "int8")
#: top-1 agreement with ONNX Runtime fp32 that an engine must reach (int8 may flip a near tie)
AGREEMENT = {"fp32": 1.0, "fp16": 1.0, "int8": 0.8}


class NotHere(Exception):
    """A step that cannot run on this machine (no GPU, no TensorRT): reported, not failed."""


@dataclass
class Step:
    step: str
    ok: bool | None          # None: not run here
    detail: str
    seconds: float = 0.0


@dataclass
class Report:
    ok: bool = False
    backend: str | None = None
    steps: list[Step] = field(default_factory=list)
    artefacts: dict[str, str] = field(default_factory=dict)   # precision -> id
    markdown: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reason(e: BaseException) -> str:
    if isinstance(e, NcanvasError):
        return str(e)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


class Acceptance:
    """The run (see the module doc). ``photos``: the images to calibrate and compare on."""

    def __init__(self, settings: Settings, root: Path, photos: Path, backend: str | None,
                 say: Callable[[str], None]) -> None:
        from ncanvas_tui import settings as settings_mod

        self.user_settings = settings
        self.root = root
        self.photos = photos
        self.say = say
        self.report = Report()
        self.backend = backend
        self.settings = settings_mod.from_dict({
            "paths": {"models": str(settings.paths.models), "engines": str(root / "engines"),
                      "calibration": str(photos), "output": str(root / "output")},
            "inference": {"model": MODEL},
            "build": {"batch": [1, 4, 8], "timing_cache": True, "calibrator": settings.build.calibrator},
        }, origin="<selftest>", base=root)
        self.built: dict[str, Artefact] = {}
        self.reference: list[int] = []
        self.gpu = False

    # -- bookkeeping --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Run a step: its body appends the detail; NotHere -> not run here; any error -> FAIL."""
        detail: list[str] = []
        t0 = time.perf_counter()
        ok: bool | None = True
        try:
            yield detail
        except NotHere as e:
            ok, detail[:] = None, [f"not run here: {e}"]
        except Exception as e:  # noqa: BLE001 - every failure is a reported step
            ok, detail[:] = False, [_reason(e)]
            self.say(traceback.format_exc(limit=3).strip().splitlines()[-1])
        s = Step(name, ok, "; ".join(detail) or "ok", round(time.perf_counter() - t0, 3))
        self.report.steps.append(s)
        self.say(f"{name}: {'pass' if ok else 'FAIL' if ok is False else 'not run here'} - {s.detail}")

    def needs_gpu(self) -> None:
        if not self.gpu:
            raise NotHere("no GPU with a CUDA context here (see the gpu step)")

    def needs(self, precision: str) -> Artefact:
        if precision not in self.built:
            raise NotHere(f"no {precision} engine was built (see its build step)")
        return self.built[precision]

    # -- the steps ----------------------------------------------------------------------------------
    def run(self) -> Report:
        from ncanvas_tui.engines import compat

        with self.step("onnxruntime") as d:
            res = self._classify(None)
            self.reference = [r["top"][0]["index"] for r in res["results"]]
            d.append(f"fp32 reference on {len(self.reference)} photos ({self.photos})")
        with self.step("tensorrt") as d:
            names = [self.backend] if self.backend else ["tensorrt", "tensorrt-rtx"]
            errors = []
            for name in names:
                try:
                    feats = compat.features(compat.import_trt(name))
                except NcanvasError as e:
                    errors.append(str(e))
                    continue
                self.backend = self.report.backend = name
                d.append(f"{feats.module} {feats.version}: " + ("strongly typed (precision from the ONNX)"
                         if feats.strongly_typed_only else "builder flags, implicit int8 calibration"))
                break
            else:
                raise NotHere("TensorRT not importable: " + " | ".join(errors))
        with self.step("gpu") as d:
            from ncanvas_tui.worker import get_worker

            w = get_worker()
            if w.cuda is None:
                raise NotHere(str(w.cuda_error))
            self.gpu = True
            d.append(f"{w.cuda.name} (sm {w.cuda.sm}), CUDA context in the worker thread")
        for precision in PRECISIONS:
            with self.step(f"build {precision}") as d:
                self._need_backend()
                a, seconds, _ = self._build(precision)
                d.append(f"{a.path.name}, {a.size / 1e6:.1f} MB in {seconds:.1f} s" +
                         (f", {a.calibrator} on {a.calibration_images} photos" if a.calibrator else ""))
        with self.step("int8 cache reuse") as d:
            self.needs("int8")
            a, _, said = self._build("int8", force=True)
            calibrated = [m for m in said if m.startswith("calibration ")]
            if calibrated:
                raise AssertionError(f"the second int8 build calibrated again ({calibrated[-1]})")
            d.append("the second int8 build calibrated nothing" +
                     ("; " + next(n for n in a.notes if "cache reused" in n) if any(
                         "cache reused" in n for n in a.notes) else " (Q/DQ model reused)"))
        with self.step("int8 foreign cache") as d:
            self.needs("int8")
            self._foreign_cache(d)
        with self.step("timing cache") as d:
            self.needs("fp16")
            self._timing_cache(d)
        with self.step("second process") as d:
            self.needs_gpu()
            for precision, a in self.built.items():
                self._load_elsewhere(a)
            d.append(f"{len(self.built)} engine(s) deserialized in a fresh process")
        with self.step("vs onnxruntime") as d:
            self.needs_gpu()
            for precision, a in self.built.items():
                got = [r["top"][0]["index"] for r in self._classify(a.id)["results"]]
                agree = sum(x == y for x, y in zip(got, self.reference)) / max(1, len(got))
                d.append(f"{precision} top-1 agreement {agree:.0%}")
                if agree < AGREEMENT[precision]:
                    raise AssertionError(f"{precision}: top-1 agreement {agree:.0%} with ONNX Runtime fp32")
        with self.step("vs polygraphy") as d:
            self.needs_gpu()
            for precision, a in self.built.items():
                d.append(f"{precision} {self._polygraphy_agrees(a)}")
        with self.step("latency") as d:
            self.needs_gpu()
            from ncanvas_tui import api

            for precision, a in self.built.items():
                b = api.bench(self.settings, api.Selection(artefact=a.id), batches=(1,), seconds=0.5)
                d.append(f"{precision} p50 {b['results'][0]['p50_ms']:.2f} ms at batch 1")
        with self.step("dla") as d:
            self._need_backend()
            self._dla(d)
        with self.step("cancel") as d:
            self._need_backend()
            self._cancel(d)
        self.report.ok = all(s.ok is True for s in self.report.steps)
        self.report.artefacts = {p: a.id for p, a in self.built.items()}
        return self.report

    # -- helpers ------------------------------------------------------------------------------------
    def _need_backend(self) -> None:
        if self.backend is None:
            raise NotHere("no TensorRT flavour imports here (see the tensorrt step)")
        if self.backend == "tensorrt" and not self.gpu:
            raise NotHere("TensorRT builds need a GPU (TensorRT-RTX builds without one)")

    def _images(self) -> list[str]:
        from ncanvas_tui.vision.preprocess import expand_paths

        paths, _ = expand_paths([str(self.photos)])
        return paths

    def _classify(self, artefact: str | None) -> dict[str, Any]:
        from ncanvas_tui.vision.classify import Classifier
        from ncanvas_tui.worker import get_worker

        clf = (Classifier(self.settings, artefact=artefact) if artefact else
               Classifier(self.settings, MODEL, backend="onnxruntime", precision="fp32"))
        try:
            res: dict[str, Any] = get_worker().run(clf.classify, self._images()).as_dict()
        finally:
            clf.close()
        return res

    def _build(self, precision: str, *, force: bool = False,
               cancel: CancelToken | None = None) -> tuple[Artefact, float, list[str]]:
        from ncanvas_tui import api

        said: list[str] = []
        t0 = time.perf_counter()
        res = api.plan_and_build(self.settings, api.BuildRequest(MODEL, precision, backend=self.backend,
                                                                 force=force),
                                 progress=lambda d, t, m: said.append(m), cancel=cancel or CancelToken())
        assert res.artefact is not None, res.note
        self.built[precision] = res.artefact
        return res.artefact, time.perf_counter() - t0, said

    def _foreign_cache(self, d: list[str]) -> None:
        engines = Path(self.settings.paths.engines)
        caches = sorted(engines.glob("*.calib.cache"))
        if not caches:
            d.append("n/a: int8 here is explicit (a Q/DQ ONNX), TensorRT keeps no calibration cache")
            return
        cache = caches[0]
        text = cache.read_bytes()
        head, _, rest = text.partition(b"\n")
        cache.write_bytes(b"TRT-1-" + head.split(b"-", 2)[-1] + b"\n" + rest)  # stamped by "TensorRT 0.0.1"
        a, _, said = self._build("int8", force=True)
        aside = list(engines.glob(cache.name + ".corrupt-*"))
        if not aside or not any(m.startswith("calibration ") for m in said):
            raise AssertionError("a foreign calibration cache was neither moved aside nor recalibrated")
        d.append(f"moved aside ({aside[0].name}) and calibrated again: {a.path.name}")

    def _timing_cache(self, d: list[str]) -> None:
        from ncanvas_tui.engines import compat

        assert self.backend is not None
        if not compat.features(compat.import_trt(self.backend)).timing_cache:
            d.append("n/a: TensorRT-RTX compiles kernels at load time (no timing cache)")
            return
        first = self.built["fp16"].build_seconds
        a, _, _ = self._build("fp16", force=True)
        ratio = a.build_seconds / first if first else float("nan")
        d.append(f"rebuild {a.build_seconds:.1f} s vs {first:.1f} s without it: ratio {ratio:.2f}")

    def _load_elsewhere(self, a: Artefact) -> None:
        code = ("import sys; from ncanvas_tui.backends.trtlib import import_trt\n"
                "trt = import_trt(sys.argv[1]); import pycuda.autoinit  # noqa\n"
                "rt = trt.Runtime(trt.Logger(trt.Logger.WARNING)); trt.init_libnvinfer_plugins(None, '')\n"
                "e = rt.deserialize_cuda_engine(open(sys.argv[2], 'rb').read())\n"
                "sys.exit(0 if e is not None and e.create_execution_context() is not None else 3)\n")
        r = subprocess.run([sys.executable, "-c", code, a.backend, str(a.path)], capture_output=True, text=True,
                           timeout=300, check=False)
        if r.returncode != 0:
            raise AssertionError(f"{a.path.name} does not load in a second process: "
                                 f"{(r.stderr.strip().splitlines() or ['exit ' + str(r.returncode)])[-1]}")

    def _polygraphy_agrees(self, a: Artefact) -> str:
        import numpy as np
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        from ncanvas_tui.vision.classify import Classifier
        from ncanvas_tui.worker import get_worker

        clf = Classifier(self.settings, artefact=a.id)
        images = self._images()[:4]
        loaded = [x for x in clf.load_images(images) if not isinstance(x, Exception)]
        batch = clf.normalize([x.rgb for x in loaded])

        def run() -> tuple[Any, Any]:
            ours = clf.load().infer(batch)
            with TrtRunner(EngineFromBytes(a.path.read_bytes())) as runner:
                name = runner.get_input_metadata().keys()
                outputs = runner.infer({next(iter(name)): batch})
            return ours, next(iter(outputs.values()))

        try:
            ours, theirs = get_worker().run(run)
        finally:
            clf.close()
        same = np.argmax(ours, 1) == np.argmax(np.asarray(theirs).reshape(len(batch), -1), 1)
        if not same.all():
            raise AssertionError(f"{a.precision}: our runner and Polygraphy's TrtRunner disagree on top-1")
        return f"same top-1 as Polygraphy's TrtRunner on {len(batch)} photos"

    def _dla(self, d: list[str]) -> None:
        """Where the device has a DLA (Xavier, Orin AGX/NX): an fp16 engine on core 0, checked and timed."""
        from ncanvas_tui import api
        from ncanvas_tui.engines import compat

        assert self.backend is not None
        cores = compat.dla_cores(compat.import_trt(self.backend)) if self.backend == "tensorrt" else 0
        if cores == 0:
            d.append(f"n/a: no DLA on this device ({self.backend})")
            return
        res = api.plan_and_build(self.settings, api.BuildRequest(MODEL, "fp16", backend=self.backend, dla_core=0))
        a = res.artefact
        assert a is not None
        d.append(next((n for n in a.notes if n.startswith("DLA core")), f"DLA core 0: {a.path.name}"))
        got = [r["top"][0]["index"] for r in self._classify(a.id)["results"]]
        agree = sum(x == y for x, y in zip(got, self.reference)) / max(1, len(got))
        b = api.bench(self.settings, api.Selection(artefact=a.id), batches=(1,), seconds=0.5)
        d.append(f"top-1 agreement {agree:.0%}, p50 {b['results'][0]['p50_ms']:.2f} ms at batch 1")
        if agree < AGREEMENT["fp16"] - 0.2:
            raise AssertionError(f"DLA fp16: top-1 agreement {agree:.0%} with ONNX Runtime fp32")

    def _cancel(self, d: list[str]) -> None:
        engines = Path(self.settings.paths.engines)

        def plans() -> set[str]:
            return {p.name for p in engines.iterdir() if p.name.endswith((".plan", ".plan.json"))
                    or p.name.startswith(".ncanvas-tmp")}

        before = plans()
        token = CancelToken()
        from ncanvas_tui import api

        try:
            api.plan_and_build(self.settings, api.BuildRequest(MODEL, "fp32", backend=self.backend, force=True,
                                                               opt_level=0),
                               progress=lambda done, total, m: token.cancel() if "building" in m.lower() else None,
                               cancel=token)
        except CancelledError:
            pass
        else:
            raise AssertionError("a build whose token was cancelled finished anyway")
        if plans() != before:
            raise AssertionError(f"the cancelled build left {sorted(plans() - before)}")
        d.append("token: stopped, nothing written")
        settings_file = self.root / "selftest.toml"
        settings_file.write_text(
            f'[paths]\nmodels = "{self.settings.paths.models}"\nengines = "{engines}"\n'
            f'calibration = "{self.photos}"\noutput = "{self.root / "output"}"\n', encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", "ncanvas_tui", "build", MODEL, "--precision", "fp16",
                                 "--backend", str(self.backend), "--force", "--opt-level", "1", "--settings",
                                 str(settings_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if "building" in line.lower():
                break
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 130:
            raise AssertionError(f"SIGINT to a build: exit {proc.returncode}, not 130 ({err.strip()[-200:]})")
        if plans() != before:
            raise AssertionError(f"the interrupted build left {sorted(plans() - before)}")
        d.append("SIGINT: exit 130, nothing written")

    # -- the report ---------------------------------------------------------------------------------
    def markdown(self) -> str:
        r = self.report
        lines = [f"# ncanvas GPU self-test: {'PASS' if r.ok else 'NOT PROVEN'}", "",
                 f"- backend: {r.backend or 'none'}", f"- python: {sys.version.split()[0]}",
                 f"- created: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", "",
                 "| step | result | detail | s |", "|---|---|---|---|"]
        for s in r.steps:
            mark = "pass" if s.ok else "FAIL" if s.ok is False else "not run here"
            lines.append(f"| {s.step} | {mark} | {s.detail.replace('|', '/')} | {s.seconds:.1f} |")
        return "\n".join(lines) + "\n"


def sample_photos() -> Path:
    """The ordinary photos the self-test calibrates and compares on."""
    from ncanvas_tui.resources import sample_photos as photos

    return photos()


def acceptance_run(settings: Settings, progress: Callable[[str], None] | None = None, *,
                   backend: str | None = None, keep: Path | None = None,
                   photos: Path | None = None) -> dict[str, Any]:
    """The acceptance run (module doc); ``{"ok", "backend", "steps": [...], "markdown", ...}``."""
    from ncanvas_tui.files import write_new_file

    say = progress or (lambda msg: None)
    tmp = tempfile.TemporaryDirectory(prefix="ncanvas-selftest-") if keep is None else None
    root = Path(tmp.name) if tmp is not None else Path(str(keep))
    try:
        (root / "engines").mkdir(parents=True, exist_ok=True)
        run = Acceptance(settings, root, photos or sample_photos(), backend, say)
        rep = run.run()
        try:
            path = write_new_file(Path(settings.paths.output), "selftest", ".md", run.markdown().encode())
            rep.markdown = str(path)
        except OSError as e:
            say(f"report not written: {e}")
        return rep.as_dict()
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_acceptance(rep: dict[str, Any]) -> str:
    lines = [(f"GPU self-test ({rep.get('backend') or 'no TensorRT'}): "
             f"{'PASS' if rep.get('ok') else 'NOT PROVEN (see the steps)'}")]
    for s in rep["steps"]:
        mark = "pass" if s["ok"] else "FAIL" if s["ok"] is False else "----"
        lines.append(f"  {mark:<4} {s['step']:<18} {s['detail']}")
    if rep.get("markdown"):
        lines.append(f"report: {rep['markdown']}")
    return "\n".join(lines)


def as_json(rep: dict[str, Any]) -> str:
    return json.dumps(rep, indent=2)
