"""``ncanvas bench``: latency p50/p90/p99 and images/s per batch size, pre/infer/post split."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ncanvas_tui.cli.common import (
    add_model_options,
    command,
    load_settings,
    parse_sizes,
    print_json,
    selection,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "bench", "latency percentiles and images/s per batch size, with the raw backend "
                "call measured in the same run as baseline", run)
    add_model_options(p)
    p.add_argument("--batch", type=parse_sizes, default=[1, 4, 8], metavar="1,4,8", help="batch sizes")
    p.add_argument("--images", nargs="+", metavar="PATH", help="images to use (default: [paths].calibration)")
    p.add_argument("--seconds", type=float, default=None,
                   help="time budget per batch size (default 2; 1 per candidate with --all)")
    p.add_argument("--layers", action="store_true",
                   help="also per-layer times at the smallest batch size, named after the model's nodes, slowest first")
    p.add_argument("--all", action="store_true",
                   help="every model/precision runnable here: accuracy-vs-latency table with its Pareto front")
    p.add_argument("--budget-ms", type=_positive("--budget-ms", "milliseconds"), metavar="X",
                   help="name the most accurate model/precision whose batch-1 latency fits X ms (implies --all)")
    p.add_argument("--budget-mj", type=_positive("--budget-mj", "millijoules"), metavar="X",
                   help="name the most accurate model/precision whose energy per image fits X mJ (implies --all; "
                        "needs a power source: Jetson rails, NVML or RAPL)")


def _positive(flag: str, unit: str) -> Callable[[str], float]:
    """An argparse type: a positive number, else one line naming ``flag`` and ``unit``."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = -1.0
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number of {unit}, got {text!r}")
        return v

    return parse


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui import api
    from ncanvas_tui.bench import format_bench, format_bench_all
    from ncanvas_tui.cli.common import run_in_worker

    settings = load_settings(args)

    def say(done: int, total: int, m: str) -> None:
        print(f"bench: [{done}/{total}] {m}" if total else f"bench: {m}", file=sys.stderr, flush=True)

    # Measured in the GPU worker: TensorRT needs its CUDA context there, and every backend is timed alike.
    if args.all or args.budget_ms is not None or args.budget_mj is not None:
        res = run_in_worker(api.bench_all, settings, budget_ms=args.budget_ms, images=args.images,
                            seconds=args.seconds if args.seconds is not None else 1.0,
                            batch=min(args.batch), progress=say, budget_mj=args.budget_mj)
        print_json(res) if args.json else print(format_bench_all(res))
        _warn(res)
        return 0
    res = run_in_worker(api.bench, settings, selection(args), batches=args.batch, images=args.images,
                        seconds=args.seconds if args.seconds is not None else 2.0, progress=say,
                        layers=args.layers)
    print_json(res) if args.json else print(format_bench(res))
    _warn(res)
    return 0


def _warn(res: dict) -> None:
    """Run conditions that make the figures not reproduce (clocks not locked, throttling): on stderr."""
    for w in res.get("warnings") or []:
        print(f"bench: warning: {w}", file=sys.stderr, flush=True)
