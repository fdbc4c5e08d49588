"""The command line: ``ncanvas`` (TUI) and its subcommands.

Each subcommand lives in its own module here with ``register(subparsers)``, which
adds its parser and sets ``func`` to a ``run(args) -> int``. Registration imports
nothing heavy: ``ncanvas --help`` stays fast. Errors the user can fix
(``NcanvasError``) become one line on stderr and exit 2 (3 for a guardrail refusal).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ncanvas_tui import __version__
from ncanvas_tui.cli import (
    bench,
    doctor,
    engines_cmd,
    history,
    imagine,
    infer,
    init,
    models,
    serve,
    story,
    verify,
)
from ncanvas_tui.cli.common import add_common, report_error

#: subcommand modules, in the order ``--help`` lists them
COMMANDS = [init, doctor, models, infer, bench, verify, story, imagine, history, engines_cmd, serve]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit 2, as every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ncanvas",
        description="Narrative Canvas for the terminal: classify images with TensorRT / ONNX Runtime, "
        "write a guarded story from the labels, draw it. With no subcommand: open the app.",
    )
    parser.add_argument("--version", action="version", version=f"ncanvas {__version__}")
    add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def _run_tui(args: argparse.Namespace) -> int:
    from ncanvas_tui.cli.common import load_settings
    from ncanvas_tui.tui.app import run_app

    return run_app(load_settings(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None) or _run_tui
    try:
        return int(func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - the one place errors become exit codes
        return report_error(exc, debug=getattr(args, "debug", False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
