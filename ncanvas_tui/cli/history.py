"""``ncanvas history list | show ID | export ID [--format md|json] | delete ID``: saved runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ncanvas_tui.cli.common import add_common, command, load_settings, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "history", "saved runs: images, labels, story, prompt, picture", run, json_flag=False)
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    lp = acts.add_parser("list", help="the newest runs", description="the newest runs, newest first")
    add_common(lp, json_flag=True)
    lp.add_argument("--limit", type=int, default=20, metavar="N", help="how many runs (default 20)")

    sp = acts.add_parser("show", help="one run in full", description="one run in full (Markdown, or --json)")
    add_common(sp, json_flag=True)
    sp.add_argument("id", type=int, metavar="ID")

    ep = acts.add_parser("export", help="one run as Markdown or JSON",
                         description="one run as Markdown (images, top-5 tables, story, prompt, picture) "
                         "or JSON")
    add_common(ep)
    ep.add_argument("id", type=int, metavar="ID")
    ep.add_argument("--format", choices=("md", "json"), default="md", help="md (default) or json")
    ep.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout (a new file: never overwrites)")

    dp = acts.add_parser("delete", help="forget one run (its picture files are kept)",
                         description="forget one run (its picture files are kept)")
    add_common(dp, json_flag=True)
    dp.add_argument("id", type=int, metavar="ID")


def _clip(text: Any, width: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_list(runs: list[dict[str, Any]], path: Path) -> str:
    if not runs:
        return f"no runs yet (history: {path})"
    lines = [f"{'ID':>4}  {'WHEN (UTC)':<16}  {'IMAGES':>6}  {'LABELS':<24}  STORY / PROMPT"]
    for r in runs:
        when = r["created"].replace("T", " ")[:16]
        text = r.get("story") or (f"prompt: {r['prompt']}" if r.get("prompt") else "")
        lines.append(f"{r['id']:>4}  {when:<16}  {r['images']:>6}  {_clip(', '.join(r['labels']), 24):<24}  "
                     f"{_clip(text, 60)}")
        if r.get("picture"):
            lines.append(f"{'':>4}  {'':<16}  {'':>6}  {'':<24}  picture: {r['picture']}")
        elif r.get("picture_error"):
            lines.append(f"{'':>4}  {'':<16}  {'':>6}  {'':<24}  not drawn: {_clip(r['picture_error'], 70)}")
    return "\n".join(lines)


def _write(path: str, text: str) -> Path:
    """Write the export whole (temp file, fsync, then linked to the name) and never over an existing
    file: ``--out EXISTING`` is an error naming it. Returns the path written."""
    from ncanvas_tui.errors import NcanvasError
    from ncanvas_tui.files import write_new_file

    target = Path(path).expanduser()
    if target.exists() or target.is_symlink():
        raise NcanvasError(f"{target}: already exists; the export never overwrites a file "
                           "(choose another --out, or leave it out for stdout)")
    try:
        return write_new_file(target.parent, target.stem, target.suffix, text.encode("utf-8"), limit=1)
    except FileExistsError:
        raise NcanvasError(f"{target}: already exists; the export never overwrites a file "
                           "(choose another --out, or leave it out for stdout)") from None
    except OSError as e:
        raise NcanvasError(f"{target}: cannot write the export: {e.strerror or e}") from None


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui.errors import NcanvasError
    from ncanvas_tui.history.store import open_history

    settings = load_settings(args)
    h = open_history(settings)
    if args.action == "list":
        if args.limit < 1:
            raise NcanvasError("--limit must be 1 or more")
        runs = h.list_runs(args.limit)
        if args.json:
            print_json({"history": str(h.path), "runs": runs})
        else:
            print(format_list(runs, h.path))
    elif args.action == "show":
        if args.json:
            print_json(h.get_run(args.id))
        else:
            sys.stdout.write(h.export(args.id, "md"))
    elif args.action == "export":
        text = h.export(args.id, args.format)
        if args.out:
            print(_write(args.out, text))
        else:
            sys.stdout.write(text)
    elif args.action == "delete":
        h.delete_run(args.id)
        if args.json:
            print_json({"deleted": args.id})
        else:
            print(f"run {args.id} deleted")
    return 0
