#!/usr/bin/env python3
"""What the power sampler costs a bench run (goal: under 1%), measured in the same run.

The bundled model on ONNX Runtime at batch 1 is benchmarked ``--rounds`` times with the
sampler and as many times without it, alternated (on, off, on, off, ...), each for
``--seconds``. Reported: the sampler's own CPU time against the time it measured (what
``bench --json`` reports as ``power.sampler_cost_pct``), and the throughput with the sampler
over the throughput without it (median of rounds). Power comes from the replayed Orin Nano tree
(tests/data/boards/orin-nano-jp6) unless ``--live`` reads this machine's own board.
Prints one JSON document.

    python bench/bench_power.py [--rounds 5] [--seconds 2] [--hz 20] [--live]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BOARD = REPO / "tests" / "data" / "boards" / "orin-nano-jp6"
PHOTOS = REPO / "tests" / "data" / "photos"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--live", action="store_true", help="this machine's board instead of the replayed Orin Nano")
    args = ap.parse_args()
    if not args.live:
        os.environ["NCANVAS_SYSROOT"] = str(BOARD)

    from ncanvas_tui import settings as ncs
    from ncanvas_tui.bench import bench_batch
    from ncanvas_tui.board import EnergyMeter
    from ncanvas_tui.vision.classify import Classifier

    settings = ncs.from_dict({"paths": {"models": str(REPO / "models")},
                              "inference": {"backend": "onnxruntime", "precision": "fp32"}})
    clf = Classifier(settings)
    images = [str(p) for p in sorted(PHOTOS.glob("*.jpg"))]
    meter = EnergyMeter("cpu", hz=args.hz)
    if meter.source is None:
        print(json.dumps({"error": "no power source readable here (try without --live)"}))
        return 1
    with_s, without_s = [], []
    try:
        bench_batch(clf, images, 1, seconds=0.5)  # warm up
        for _ in range(args.rounds):
            with_s.append(bench_batch(clf, images, 1, seconds=args.seconds, meter=meter)["images_per_s"])
            without_s.append(bench_batch(clf, images, 1, seconds=args.seconds)["images_per_s"])
        rep = meter.report()
    finally:
        meter.close()
        clf.close()
    p = rep["power"] or {}
    out = {
        "cpu_count": os.cpu_count(), "source": p.get("source"), "hz": args.hz, "rounds": args.rounds,
        "samples": p.get("samples"), "seconds_sampled": p.get("seconds"),
        "sampler_cpu_ms": p.get("sampler_cpu_ms"), "sampler_cost_pct": p.get("sampler_cost_pct"),
        "images_per_s_with_sampler": round(statistics.median(with_s), 2),
        "images_per_s_without": round(statistics.median(without_s), 2),
        "throughput_ratio_with_over_without": round(statistics.median(with_s) / statistics.median(without_s), 4),
        "goal_pct": 1.0,
    }
    out["meets_goal"] = out["sampler_cost_pct"] is not None and out["sampler_cost_pct"] < 1.0
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
