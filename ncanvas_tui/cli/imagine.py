"""``ncanvas imagine (--story FILE | --prompt TEXT) [--style S] [--negative TEXT] [--seed N] [--steps N]
[--guidance X] [--out PATH] [--json]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ncanvas_tui.cli.common import command, load_settings, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "imagine", "draw a picture from a prompt or a story (saved, never overwriting; prints "
                "its path)", run)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--story", metavar="FILE",
                     help="a story file from `ncanvas story`: the LLM distils it into a picture prompt")
    src.add_argument("--prompt", metavar="TEXT", help="the picture prompt itself")
    p.add_argument("--style", metavar="S", help="a style for the picture, e.g. \"Film noir\"")
    p.add_argument("--negative", metavar="TEXT", help="what the picture must not show (negative prompt; "
                   "default [imagegen].negative)")
    p.add_argument("--seed", type=_seed, metavar="N", help="draw with this seed (default [imagegen].seed; -1 "
                   "there: a new random one); the seed used is in --json and the history")
    p.add_argument("--steps", type=_steps, metavar="N", help="sampling steps (default [imagegen].steps)")
    p.add_argument("--guidance", type=_guidance, metavar="X", help="guidance scale, cfg_scale "
                   "(default [imagegen].guidance)")
    p.add_argument("--out", metavar="PATH", help="a file (.png/.jpg/.webp) or a folder (default: "
                   "[paths].output/images); an existing file is never overwritten (-2, -3... is added)")
    p.add_argument("--run", type=int, metavar="ID", help="attach the picture to this history run")
    p.add_argument("--no-history", action="store_true", help="do not record the picture in the history")


def _ranged(kind: type, lo: float, hi: float, what: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g}, got {text}")
        return value
    return parse


_seed = _ranged(int, 0, 2**32 - 1, "an integer")
_steps = _ranged(int, 1, 500, "an integer")
_guidance = _ranged(float, 0.0, 50.0, "a number")


def display_path(path: str | Path) -> str:
    """Relative to the current folder when it is inside it (output/images/x.png), else absolute."""
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui.imagine.session import imagine

    settings = load_settings(args)
    res = imagine(settings, prompt=args.prompt, story=args.story, negative=args.negative, style=args.style,
                  out=args.out, run_id=args.run, history=not args.no_history, seed=args.seed, steps=args.steps,
                  guidance=args.guidance)
    if res.history_error:
        print(f"ncanvas: warning: picture not saved to history: {res.history_error}", file=sys.stderr)
    out = res.as_dict()
    out["path"] = display_path(res.picture.path)
    out["abs_path"] = res.picture.path
    if args.json:
        print_json(out)
    else:
        print(out["path"])
        if res.source == "story":
            print(f"prompt: {res.picture.prompt}", file=sys.stderr)
    return 0
