"""``ncanvas models prep NAME``: Polygraphy sanitize + proof that outputs did not change.

``run_prep(args)`` is called by ``ncanvas_tui/cli/models.py`` (args: name, json, settings, debug).
"""

from __future__ import annotations

import argparse

from ncanvas_tui.cli.common import load_settings, print_json


def run_prep(args: argparse.Namespace) -> int:
    from ncanvas_tui import api
    from ncanvas_tui.cli.engines_cmd import StderrProgress
    from ncanvas_tui.progress import CancelToken, no_progress

    settings = load_settings(args)
    result = api.prep(settings, args.name, progress=no_progress if getattr(args, "json", False) else StderrProgress(),
                      cancel=CancelToken())
    if getattr(args, "json", False):
        print_json(result.as_dict())
        return 0
    print(f"{result.output}")
    print(f"nodes: {result.nodes_before} -> {result.nodes_after}, max abs diff {result.max_abs_diff:.3g} "
          f"(ONNX Runtime, {result.compared_on}), {result.seconds:.1f} s")
    return 0
