"""``ncanvas build`` and ``ncanvas engines list``: the engine library from the command line.

``build`` makes what backend B runs at precision P: a TensorRT / TensorRT-RTX engine
(with progress on stderr), or on ONNX Runtime the Q/DQ int8 model (fp32 and fp16
need nothing there: ONNX Runtime on the CPU runs the fp32 ONNX). ``--json`` prints
the result on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ncanvas_tui.cli.common import add_keep_float, command, load_settings, parse_batch, print_json
from ncanvas_tui.settings import BACKENDS, PRECISIONS


class StderrProgress:
    """Progress callback (done, total, message) -> stderr: one line per phase, calibration i/N;
    on a terminal the current line is rewritten in place."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last = ""
        self.last_t = 0.0

    def __call__(self, done: int, total: int, message: str) -> None:
        text = f"[{done}/{total}] {message}" if total else message
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + text[:120])
            if total and done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        if message != self.last or now - self.last_t > 2:  # a new phase (calibration i/N is one each)
            print(text, file=self.stream, flush=True)
            self.last_t = now
        self.last = message


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "build", "build what backend B runs at precision P: a TensorRT engine (or on ONNX "
                "Runtime a quantized model), with progress; reuses timing and calibration caches", run_build)
    p.add_argument("name", metavar="NAME", help="catalog name or ONNX file")
    p.add_argument("--precision", choices=PRECISIONS, required=True)
    p.add_argument("--backend", choices=BACKENDS, help="default: [inference].backend (auto: TensorRT when it "
                   "imports and a GPU is present, else onnxruntime)")
    p.add_argument("--calibrator", choices=("entropy2", "minmax"), help="int8 calibration (default: "
                   "[build].calibrator)")
    p.add_argument("--batch", type=parse_batch, metavar="MIN,OPT,MAX",
                   help="dynamic batch profile, or one size N for a static batch (default: [build].batch)")
    p.add_argument("--opt-level", type=int, choices=range(6), metavar="N",
                   help="builder optimization level 0..5 (default: [build].opt_level)")
    p.add_argument("--sparse", action="store_true", default=None, help="2:4 structured sparse weights")
    p.add_argument("--dla-core", type=int, metavar="N", default=None,
                   help="Jetson Xavier / Orin: build for DLA core N (fp16/int8, one --batch size, GPU fallback; "
                        "default: [build].dla_core)")
    p.add_argument("--strict-int8", action="store_true", default=None,
                   help="int8: layers without an int8 kernel run fp32, not fp16 (default: [build].strict_int8)")
    add_keep_float(p, "int8: keep these layers float (no Q/DQ around them; TensorRT <= 10: fp32 precision "
                   "constraints, obeyed); part of the artefact key")
    p.add_argument("--recover", type=_target, metavar="TARGET", nargs="?", const=-1.0, default=None,
                   help="int8: rank the layers by sensitivity, find by bisection the fewest kept float that reach "
                        "TARGET top-1 agreement with fp32 on the calibration images (e.g. 0.99; no value: "
                        "[build].recover_target), build that artefact and report its speed cost against plain int8")
    p.add_argument("--force", action="store_true", help="rebuild even when an up-to-date engine exists")

    e = sub.add_parser("engines", help="the engine library: built engines with their metadata",
                       description="the engine library in [paths].engines")
    esub = e.add_subparsers(dest="engines_command", metavar="ACTION", required=True)
    lp = command(esub, "list", "built artefacts (engines, quantized models) with their ids and metadata", run_list)
    del lp


def _target(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -2.0
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"a top-1 agreement fraction in (0, 1], e.g. 0.99; got {text!r}")
    return v


def run_build(args: argparse.Namespace) -> int:
    from ncanvas_tui import api
    from ncanvas_tui.progress import CancelToken

    settings = load_settings(args)
    request = api.BuildRequest(
        model=args.name, precision=args.precision, backend=args.backend, calibrator=args.calibrator,
        batch=args.batch, opt_level=args.opt_level, sparse=args.sparse, strict_int8=args.strict_int8,
        dla_core=args.dla_core, keep_float=tuple(args.keep_float), force=args.force)
    if args.recover is not None:
        return _run_recover(args, settings, request)
    plan = api.plan_build(settings, request)
    res = api.build(plan, progress=StderrProgress(), cancel=CancelToken())
    if args.json:
        print_json(res.as_dict())
        return 0
    a = res.artefact
    if a is None:
        print(res.note)
        return 0
    print(a.path)
    size = f"{a.size / 1e6:.1f} MB"
    where = f" for {a.gpu_name}" if a.backend != "onnxruntime" else ""
    print(f"artefact {a.id}: {a.backend} {a.backend_version} {a.precision}"
          + (f" {a.calibrator}" if a.calibrator else "")
          + (f" batch {'-'.join(map(str, a.batch))}" if any(a.batch) else "")
          + f", {size}, " + ("up to date (--force rebuilds)" if res.reused else f"built in {res.seconds:.1f} s")
          + where + (f"; {'; '.join(a.notes)}" if a.notes else ""))
    return 0


def _run_recover(args: argparse.Namespace, settings: Any, request: Any) -> int:
    from ncanvas_tui import api
    from ncanvas_tui.cli.common import run_in_worker
    from ncanvas_tui.engines.recover import format_recover
    from ncanvas_tui.errors import EngineError

    if request.keep_float:
        raise EngineError("--recover chooses the layers kept float itself: give --keep-float or --recover, not both")
    target = settings.build.recover_target if args.recover < 0 else args.recover
    # in the GPU worker: the built artefacts are verified and timed there (TensorRT's CUDA context)
    res = run_in_worker(api.recover, settings, request, target, progress=StderrProgress())
    print_json(res) if args.json else print(format_recover(res))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ncanvas_tui import api

    settings = load_settings(args)
    artefacts = api.list_artefacts(settings)
    root = settings.paths.engines
    if args.json:
        print_json({"engines_dir": str(root), "artefacts": [a.as_dict() for a in artefacts]})
        return 0
    if not artefacts:
        print(f"no artefacts in {root} (build one: ncanvas build NAME --precision int8)")
        return 0
    print(f"{'id':<10} {'model':<22} {'backend':<20} {'prec':<5} {'calibrator':<10} {'batch':<8} "
          f"{'MB':>6}  {'GPU / DLA':<24} status")
    for a in artefacts:
        batch = "-".join(map(str, a.batch)) if any(a.batch) else "dynamic"
        backend = f"{a.backend} {a.backend_version}".strip()
        status = f"UNUSABLE: {a.problem}" if a.problem else "ok"
        device = a.gpu_name if a.dla_core is None else f"DLA{a.dla_core} ({a.gpu_name})"
        print(f"{a.id:<10} {a.model[:22]:<22} {backend[:20]:<20} {a.precision:<5} {a.calibrator or '-':<10} "
              f"{batch:<8} {a.size / 1e6:>6.1f}  {device[:24]:<24} {status}")
    return 0
