#!/usr/bin/env python3
"""The sensitivity pass (``verify --layers``) on the bundled model: seconds, against one int8 build.

Standalone: calibrates once through an ordinary ONNX Runtime int8 build (its time is the baseline,
measured in the same run), then ranks every quantizable layer from the cached ranges and reports the
pass's seconds, its ratio to the build, and how much keeping the top 3 / 10 float lowers the mean
logit error. Prints one JSON document. Goal: the pass well under a minute on a 2-core machine.

    python bench/bench_sensitivity.py [--model efficientnet_lite0] [--images tests/data/photos]
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
    args = ap.parse_args()

    from ncanvas_tui import api
    from ncanvas_tui import settings as ncs

    work = Path(tempfile.mkdtemp(prefix="ncanvas-bench-"))
    try:
        (work / "engines").mkdir()
        settings = ncs.from_dict({"paths": {"models": str(work / "models"), "engines": str(work / "engines"),
                                            "calibration": str(Path(args.images).resolve())}}, base=work)

        def build(keep: tuple[str, ...] = ()) -> str:
            a = api.plan_and_build(settings, api.BuildRequest(args.model, "int8", backend="onnxruntime",
                                                              keep_float=keep)).artefact
            assert a is not None
            return a.id

        t0 = time.perf_counter()
        plain = build()
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ranked = api.layer_sensitivity(settings, args.model)
        pass_s = time.perf_counter() - t0
        names = [x["name"] for x in ranked["layers"]]
        err = {}
        for k in (0, 3, 10):
            v = api.verify(settings, api.Selection(artefact=build(tuple(names[:k])) if k else plain), store=False)
            err[k] = {"mean_abs_diff": v.mean_abs_diff, "top1_agreement": v.top1_agreement}
        print(json.dumps({
            "model": args.model, "layers": len(names), "images": ranked["images"],
            "sensitivity_seconds": round(pass_s, 2), "int8_build_seconds": round(build_s, 2),
            "ratio_to_build": round(pass_s / build_s, 2), "top": ranked["layers"][:5],
            "error_with_top_k_float": err, "goal": {"sensitivity_seconds_below": 60},
        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
