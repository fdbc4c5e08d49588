"""``ncanvas doctor [--gpu-selftest] [--json]``."""

from __future__ import annotations

import argparse
import sys

from ncanvas_tui.cli.common import command, load_settings, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "doctor", "what this machine has: TensorRT / RTX / ONNX Runtime, GPU, settings, endpoints",
                run)
    p.add_argument("--gpu-selftest", action="store_true",
                   help="the acceptance run: fp32/fp16/int8 engines of the bundled model built, reloaded, "
                        "checked against ONNX Runtime and Polygraphy, timed, cancelled; non-zero exit unless "
                        "every step passed here (a Markdown copy goes to [paths].output)")
    p.add_argument("--capture-board", metavar="DIR",
                   help="copy the board-state files ncanvas reads (power rails, clocks, temperatures, power mode) "
                        "into the new folder DIR; NCANVAS_SYSROOT=DIR replays them (send it with a bug report)")


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui.doctor import format_report, report

    if args.capture_board:
        from ncanvas_tui.board import capture_board

        cap = capture_board(args.capture_board)
        if args.json:
            print_json(cap)
        else:
            print(f"captured {cap['files']} board-state files into {cap['dir']}; replay with "
                  f"NCANVAS_SYSROOT={cap['dir']}")
        return 0
    settings = load_settings(args)
    rep = report(settings)
    code = 0
    if args.gpu_selftest:
        from ncanvas_tui.engines.acceptance import acceptance_run

        def progress(msg: str) -> None:
            print(f"selftest: {msg}", file=sys.stderr, flush=True)

        rep["selftest"] = acceptance_run(settings, progress)
        code = 0 if rep["selftest"].get("ok") else 1
    if args.json:
        print_json(rep)
    else:
        selftest = rep.pop("selftest", None)
        print(format_report(rep))
        if selftest is not None:
            from ncanvas_tui.engines.acceptance import format_acceptance

            print(format_acceptance(selftest))
    return code
