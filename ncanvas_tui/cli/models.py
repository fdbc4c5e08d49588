"""``ncanvas models list|prep``: the catalog and the ONNX files found; Polygraphy cleanup."""

from __future__ import annotations

import argparse

from ncanvas_tui.cli.common import add_common, load_settings, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model catalog; prep (sanitize) an ONNX model",
                       description="the model catalog and the ONNX files found in [paths].models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lp = msub.add_parser("list", help="catalog + ONNX files found: input size, preprocessing, present, sha256")
    add_common(lp, json_flag=True)
    lp.add_argument("--sha", action="store_true", help="also hash the present files (text output)")
    lp.set_defaults(func=run_list)
    pp = msub.add_parser("prep", help="Polygraphy sanitize (fold constants, cleanup, toposort) -> NAME.prep.onnx")
    add_common(pp, json_flag=True)
    pp.add_argument("name", metavar="NAME", help="catalog name or ONNX file")
    pp.set_defaults(func=run_prep)


def _sha(path) -> str | None:
    from ncanvas_tui.vision.catalog import sha256_file

    try:
        return sha256_file(path)
    except OSError:  # unreadable: the listing still shows the rest
        return None


def describe(entry, settings, with_sha: bool) -> dict:
    path = entry.locate(settings)
    pre = entry.preprocess
    return {
        "name": entry.name, "display": entry.display, "file": entry.file,
        "path": str(path) if path else None, "present": path is not None,
        "sha256": _sha(path) if (path and with_sha) else None,
        "size_bytes": path.stat().st_size if path else None,
        "bundled": entry.bundled, "user": entry.user,
        "input_size": pre.input_size, "top1": entry.top1,
        "preprocessing": {"resize": pre.resize, "resize_mode": pre.resize_mode,
                          "interpolation": pre.interpolation, "crop": pre.crop, "mean": list(pre.mean),
                          "std": list(pre.std), "channel_order": pre.channel_order, "scale": pre.scale,
                          "assumed": entry.assumed_preprocess},
        "source": entry.source, "url": entry.url, "notes": entry.notes,
        "usable": not entry.problem, "problem": entry.problem or None,
    }


def run_list(args: argparse.Namespace) -> int:
    from ncanvas_tui.vision.catalog import all_models

    settings = load_settings(args)
    rows = [describe(e, settings, with_sha=args.json or args.sha) for e in all_models(settings)]
    if args.json:
        print_json({"models_dir": str(settings.paths.models), "models": rows})
        return 0
    print(f"{'name':<18} {'here':<5} {'input':<6} {'resize':<14} {'mean/std':<20} {'top1':>6}  file")
    for r in rows:
        p = r["preprocessing"]
        ms = f"{p['mean'][0]:g}/{p['std'][0]:g}" + (" BGR" if p["channel_order"] == "BGR" else "")
        top1 = f"{r['top1']:.1f}" if r["top1"] else "-"
        here = "yes" if r["present"] else "no"
        line = (f"{r['name']:<18} {here:<5} {r['input_size']:<6} {p['resize']}->{p['crop']} {p['interpolation']:<8}"
                f" {ms:<20} {top1:>6}  {r['path'] or r['file']}")
        if r["sha256"]:
            line += f"  sha256:{r['sha256'][:16]}"
        if r["problem"]:
            line += f"  UNUSABLE: {r['problem']}"
        elif p["assumed"]:
            line += "  (preprocessing assumed: add a .onnx.json sidecar)"
        print(line)
    missing = sum(not r["present"] for r in rows)
    if missing:
        print(f"\n{missing} catalog models are not on this machine: put NAME.onnx in {settings.paths.models} "
              f"(`ncanvas models list --json` gives each one's url)")
    return 0


def run_prep(args: argparse.Namespace) -> int:
    from ncanvas_tui.cli.prep_cmd import run_prep as _run

    return _run(args)
