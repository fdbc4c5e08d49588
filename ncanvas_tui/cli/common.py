"""What every subcommand shares: --settings/--debug/--json, settings loading, output."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import Any

from ncanvas_tui.errors import NcanvasError
from ncanvas_tui.settings import BACKENDS, PRECISIONS, Settings


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = False) -> None:
    """--settings / --debug on every parser (SUPPRESS so a subcommand does not reset the top level)."""
    parser.add_argument("--settings", metavar="PATH", default=argparse.SUPPRESS,
                        help="settings file (default: $NCANVAS_SETTINGS, else the checkout's settings.toml, "
                        "else ~/.config/ncanvas/settings.toml, else built-in defaults)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_model_options(parser: argparse.ArgumentParser, *, precision_required: bool = False) -> None:
    parser.add_argument("--model", metavar="NAME", help="catalog name or ONNX file (default: [inference].model)")
    parser.add_argument("--backend", choices=BACKENDS, help="default: [inference].backend")
    parser.add_argument("--precision", choices=PRECISIONS, required=precision_required,
                        help="default: [inference].precision")


def command(sub: Any, name: str, help: str, func: Any, *, json_flag: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    add_common(p, json_flag=json_flag)
    p.set_defaults(func=func)
    return p


def load_settings(args: argparse.Namespace) -> Settings:
    from ncanvas_tui import settings

    level = logging.DEBUG if getattr(args, "debug", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return settings.load(getattr(args, "settings", None))


def parse_batch(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8] (also a single size '8' -> [8])."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 1 or s > 64 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be 1..64, got {text!r}")
    return sizes


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def report_error(exc: BaseException, *, debug: bool) -> int:
    """Turn an exception into the CLI contract: one stderr line + exit code."""
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, KeyboardInterrupt):
        print("ncanvas: cancelled (Ctrl-C); nothing half-written was left behind", file=sys.stderr)
        return 130
    if isinstance(exc, BrokenPipeError):
        return 0
    if isinstance(exc, NcanvasError):
        if debug:
            traceback.print_exception(exc)
        print(f"ncanvas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if debug:
        traceback.print_exception(exc)
    print(f"ncanvas: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
          "(this is a bug; run with --debug for the traceback)", file=sys.stderr)
    return 1
