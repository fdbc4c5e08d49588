"""What every subcommand shares: --settings/--debug/--json, settings loading, output."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import TYPE_CHECKING, Any

from ncanvas_tui.errors import NcanvasError
from ncanvas_tui.settings import BACKENDS, PRECISIONS, Settings

if TYPE_CHECKING:
    from ncanvas_tui.engines.artefacts import Selection


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = False) -> None:
    """--settings / --debug on every parser (SUPPRESS so a subcommand does not reset the top level)."""
    parser.add_argument("--settings", metavar="PATH", default=argparse.SUPPRESS,
                        help="settings file (default: $NCANVAS_SETTINGS, else the checkout's settings.toml, "
                        "else ~/.config/ncanvas/settings.toml, else built-in defaults)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_model_options(parser: argparse.ArgumentParser, *, model_flag: bool = True) -> None:
    """How a command chooses what runs: ``--artefact ID``, or model + backend + precision + calibrator."""
    if model_flag:
        parser.add_argument("--model", metavar="NAME",
                            help="catalog name or ONNX file (default: [inference].model)")
    parser.add_argument("--backend", choices=BACKENDS, help="default: [inference].backend")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: [inference].precision")
    parser.add_argument("--calibrator", choices=("entropy2", "minmax"),
                        help="the int8 artefact calibrated with this calibrator")
    add_keep_float(parser, "the int8 artefact built with exactly these layers kept float (default: none)")
    parser.add_argument("--artefact", metavar="ID",
                        help="the artefact with this id (`ncanvas engines list`); overrides the options above")


def add_keep_float(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--keep-float", metavar="NAME,...", type=_keep_float, default=(),
                        help=help + " (ONNX node names, as `verify --layers` lists them)")


def _keep_float(text: str) -> tuple[str, ...]:
    from ncanvas_tui.engines.plan import parse_keep_float

    return parse_keep_float(text)


def selection(args: argparse.Namespace, model: str | None = None) -> Selection:
    """The artefact ``args`` choose (see ``add_model_options``)."""
    from ncanvas_tui.engines.artefacts import Selection

    return Selection(model=model if model is not None else getattr(args, "model", None),
                     backend=args.backend, precision=args.precision, calibrator=args.calibrator,
                     keep_float=tuple(getattr(args, "keep_float", ()) or ()), artefact=args.artefact)


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


def parse_batch(text: str) -> tuple[int, int, int]:
    """``--batch`` of build: '1,4,8' -> (1, 4, 8); one size '8' -> (8, 8, 8) (the one rule: ``profile``)."""
    from ncanvas_tui.profile import batch_profile

    try:
        return batch_profile(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_sizes(text: str) -> list[int]:
    """``--batch`` of bench: the batch sizes to measure, '1,4,8' -> [1, 4, 8]."""
    from ncanvas_tui.profile import MAX_BATCH

    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 1 or s > MAX_BATCH for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be 1..{MAX_BATCH}, got {text!r}")
    return sizes


def run_in_worker(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, cancel=token, **kwargs)`` in the GPU worker, waiting for it; Ctrl-C cancels the job
    (its token is set, its child process is terminated) and is raised again here."""
    from ncanvas_tui.progress import CancelToken
    from ncanvas_tui.worker import get_worker

    token = CancelToken()
    job = get_worker().submit(fn, *args, cancel=token, **kwargs)
    try:
        return job.future.result()
    except KeyboardInterrupt:
        job.cancel()
        raise


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
