"""``ncanvas verify NAME --precision P``: engine / quantized model vs fp32 ONNX Runtime."""

from __future__ import annotations

import argparse
import sys

from ncanvas_tui.cli.common import add_model_options, command, load_settings, print_json, selection


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "verify", "compare an engine (or quantized model) with fp32 ONNX Runtime on the same "
                "images: top-1 agreement, top-5 overlap, max abs diff", run)
    p.add_argument("model", metavar="NAME", nargs="?", help="catalog name or ONNX file (not needed with --artefact)")
    add_model_options(p, model_flag=False)
    p.add_argument("--images", nargs="+", metavar="PATH",
                   help="images or folders (default: the calibration folder, [paths].calibration)")
    p.add_argument("--no-save", action="store_true", help="do not store the result beside the engine")
    p.add_argument("--layers", action="store_true",
                   help="also rank the quantizable layers by how much quantizing each alone moves the logits on "
                        "the calibration images (computed on ONNX Runtime for every backend), most sensitive first")


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui import api
    from ncanvas_tui.cli.common import run_in_worker
    from ncanvas_tui.engines.verify import format_text

    settings = load_settings(args)
    if not args.model and not args.artefact:
        from ncanvas_tui.errors import ModelError

        raise ModelError("verify: name a model (NAME) or an artefact (--artefact ID; `ncanvas engines list`)")
    tty = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int, msg: str) -> None:
        if tty:
            print(f"\rverify: {done}/{total} images ({msg})", end="", file=sys.stderr, flush=True)

    # The comparison runs in the GPU worker (TensorRT needs its CUDA context; ONNX Runtime runs there too).
    try:
        res = run_in_worker(api.verify, settings, selection(args, args.model), args.images, progress=progress,
                            store=not args.no_save, layers=args.layers)
    finally:
        if tty:
            print(file=sys.stderr)
    data = res.as_dict()
    if args.json:
        print_json(data)
    else:
        print(format_text(data))
    return 0
