#!/usr/bin/env python3
"""int8 Q/DQ vs fp32 on ONNX Runtime (CPU): images/s at batch 8 and top-1 agreement.

Standalone: builds (or reuses) the ONNX Runtime Q/DQ flavour of the model through
ncanvas's own quantization code, then times both models on the same real photos.
Prints one JSON document. Goal: ratio >= 1.7 with top-1 unchanged.

    python bench/bench_int8.py [--model efficientnet_lite0] [--images tests/data/photos]
                               [--calibration DIR] [--batch 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--images", default=str(REPO / "tests" / "data" / "photos"))
    ap.add_argument("--calibration", default=None, help="calibration images (default: --images)")
    ap.add_argument("--calibrator", default="entropy2", choices=("entropy2", "minmax"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per model")
    ap.add_argument("--workdir", default=None, help="where the Q/DQ model is cached (default: a temp dir)")
    args = ap.parse_args()

    import numpy as np

    from ncanvas_tui import api
    from ncanvas_tui import settings as ncs
    from ncanvas_tui.backends.onnxruntime import OnnxRuntimeBackend, default_threads
    from ncanvas_tui.vision import catalog
    from ncanvas_tui.vision.preprocess import Normalizer, is_image_name, load_image

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ncanvas-bench-"))
    (work / "engines").mkdir(parents=True, exist_ok=True)
    calib = Path(args.calibration or args.images).resolve()
    settings = ncs.from_dict({"paths": {"models": str(work / "models"), "engines": str(work / "engines"),
                                        "calibration": str(calib)},
                              "build": {"calibrator": args.calibrator}}, base=work)
    entry = catalog.find(settings, args.model)
    fp32_path = entry.require(settings)
    t0 = time.perf_counter()
    built = api.plan_and_build(settings, api.BuildRequest(entry.name, "int8", backend="onnxruntime")).artefact
    assert built is not None
    q_path = built.path
    quant_s = time.perf_counter() - t0

    files = sorted(p for p in Path(args.images).iterdir() if is_image_name(p.name))
    crops = [load_image(p, entry.preprocess).rgb for p in files]
    x_all = Normalizer(entry.preprocess)(crops)
    reps = -(-args.batch // len(crops))
    x8 = np.concatenate([x_all] * reps)[: args.batch]

    def session(path: Path):
        be = OnnxRuntimeBackend(path, max_batch=args.batch, threads=default_threads())
        be.load()
        for _ in range(3):
            be.infer(x8)
        return be

    # Interleave the two models in short rounds so a noisy (shared) machine hurts both alike.
    b32, b8 = session(fp32_path), session(q_path)
    l32, l8 = b32.infer(x_all), b8.infer(x_all)
    t32: list[float] = []
    t8: list[float] = []
    deadline = time.perf_counter() + 2 * args.seconds
    while time.perf_counter() < deadline or len(t8) < 5:
        for be, times in ((b32, t32), (b8, t8)):
            s = time.perf_counter()
            be.infer(x8)
            times.append(time.perf_counter() - s)
    b32.close()
    b8.close()
    ms32, ms8 = float(np.median(t32)) * 1e3, float(np.median(t8)) * 1e3
    ips32, ips8 = args.batch / ms32 * 1e3, args.batch / ms8 * 1e3
    top32, top8 = l32.argmax(1), l8.argmax(1)
    agree = float((top32 == top8).mean())
    print(json.dumps({
        "model": entry.name, "backend": "onnxruntime", "batch": args.batch, "images": len(files),
        "calibrator": args.calibrator, "quantize_seconds": round(quant_s, 2),
        "fp32": {"path": str(fp32_path), "images_per_s": round(ips32, 1), "p50_ms": round(ms32, 2),
                 "size_mb": round(fp32_path.stat().st_size / 1e6, 2)},
        "int8": {"path": str(q_path), "images_per_s": round(ips8, 1), "p50_ms": round(ms8, 2),
                 "size_mb": round(q_path.stat().st_size / 1e6, 2)},
        "speedup": round(ips8 / ips32, 2), "top1_agreement": agree,
        "per_image": [{"image": p.name, "fp32_top1": int(a), "int8_top1": int(b)}
                      for p, a, b in zip(files, top32, top8)],
        "goal": {"speedup": 1.7, "top1_agreement": 1.0},
    }, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
