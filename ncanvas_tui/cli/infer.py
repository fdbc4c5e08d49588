"""``ncanvas infer IMAGE...``: classify; more images than the max batch are split into batches."""

from __future__ import annotations

import argparse
import sys

from ncanvas_tui.cli.common import add_model_options, command, load_settings, print_json, selection


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "infer", "classify images (bad files are reported, the rest still classified)", run)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders (folders: their images)")
    add_model_options(p)
    p.add_argument("--top", type=top_k, metavar="K", help="labels per image, 1..1000 (default: [inference].top_k)")
    p.add_argument("--no-history", action="store_true", help="do not record this run in the history")
    add_stream_options(p)
    add_capture_options(p)


def top_k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= k <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1..1000, got {k}")
    return k


def format_text(res: dict) -> str:
    lines = []
    for r in res["results"]:
        lines.append(r["image"])
        for t in r["top"]:
            bar = "█" * max(1, round(t["prob"] * 20)) if t["prob"] >= 0.025 else "·"
            lines.append(f"  {t['prob'] * 100:6.2f}%  {bar:<20}  {t['label']} ({t['index']})")
    for e in res["errors"]:
        lines.append(f"ERROR {e['error']}")
    t = res["timing_ms"]
    lines.append(f"{res['model']} on {res['backend']} {res['precision']}, batches {res.get('batches')}: "
                 f"preprocess {t['preprocess']:.1f} ms, infer {t['infer']:.1f} ms, "
                 f"postprocess {t['postprocess']:.1f} ms")
    lines.extend(f"note: {n}" for n in res.get("notes", []))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui.cli.common import run_in_worker
    from ncanvas_tui.engines.artefacts import select
    from ncanvas_tui.vision.classify import Classifier
    from ncanvas_tui.vision.preprocess import expand_paths

    settings = load_settings(args)
    clf = Classifier(settings, target=select(settings, selection(args)), top=args.top)
    paths, folder_errors = capture_paths(args, settings) or expand_paths(args.images)
    if getattr(args, "jsonl", False):
        return run_jsonl(clf, paths, folder_errors)
    # classified in the GPU worker (it owns the CUDA context TensorRT runs in; ONNX Runtime runs there too)
    with TerminalProgress() as shown:
        res = run_in_worker(clf.classify, paths, progress=shown).as_dict() if paths else None
    if res is None:
        info = clf.load().info
        res = {"model": clf.entry.name, "backend": info.name, "precision": info.precision,
               "artefact": clf.target.id, "results": [],
               "errors": [], "timing_ms": {"preprocess": 0.0, "infer": 0.0, "postprocess": 0.0},
               "batches": [], "notes": []}
    res["errors"] = folder_errors + res["errors"]
    if getattr(args, "capture", None) is not None:
        from ncanvas_tui.capture import describe

        res["capture"] = {"source": describe(args.capture or settings.capture.source), "frames": len(paths)}
    if res["results"] and not args.no_history:
        res["run_id"] = record_history(settings, res)
    if args.json:
        print_json(res)
    else:
        print(format_text(res))
    if not res["results"]:
        print(f"ncanvas: error: no image could be classified ({len(res['errors'])} failed)", file=sys.stderr)
        return 2
    return 0


def record_history(settings, res: dict) -> int | None:
    """Save the run in the history (best effort: a history problem never loses the result)."""
    try:
        from ncanvas_tui.history.store import open_history
    except ImportError:
        return None
    try:
        with open_history(settings) as h:
            return h.record_inference(res)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        print(f"ncanvas: warning: run not saved to history: {' '.join(str(e).split())}", file=sys.stderr)
        return None


# -- streaming: --jsonl and the progress line (issue 15) -------------------------------------------

def add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jsonl", action="store_true",
                   help="print one JSON object per image as it is classified (shaped like one element of "
                        "--json's results or errors), no summary; memory stays flat for any folder; "
                        "not recorded in the history")


class TerminalProgress:
    """``done/total · images/s · ETA`` on one stderr line, only when stderr is a terminal; the line
    is cleared when the run ends, so what is printed after it reads as before."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.on = bool(getattr(self.stream, "isatty", lambda: False)())
        self.shown = False
        self.t0 = 0.0

    def __enter__(self) -> TerminalProgress:  # noqa: PYI034 - Python 3.10 has no typing.Self
        import time

        self.t0 = time.monotonic()
        return self

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if not self.on or total <= 0:
            return
        self.stream.write("\r\033[K" + progress_line(done, total, self._elapsed()))
        self.stream.flush()
        self.shown = True

    def _elapsed(self) -> float:
        import time

        return time.monotonic() - self.t0

    def __exit__(self, *exc: object) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def progress_line(done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    left = f"ETA {eta:.0f} s" if eta is not None else "ETA -"
    return f"classifying {done}/{total} · {rate:.1f} images/s · {left}"


def run_jsonl(clf, paths: list[str], folder_errors: list[dict]) -> int:
    """One line per image, flushed as each batch is classified. Results are never accumulated:
    each batch's dicts are printed and dropped. Ctrl-C between two lines exits 130 (the caller's
    report_error) with every printed line whole."""
    import json

    from ncanvas_tui.cli.common import run_in_worker

    def emit(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    ok = 0
    for e in folder_errors:
        emit(e)
    step = max(1, clf.max_batch)
    with TerminalProgress() as shown:
        for i in range(0, len(paths), step):
            res = run_in_worker(clf.classify, paths[i:i + step])
            for r in res.results:
                emit(r)
            for e in res.errors:
                emit(e)
            ok += len(res.results)
            shown(min(i + step, len(paths)), len(paths))
    if not ok:
        print(f"ncanvas: error: no image could be classified ({len(paths) + len(folder_errors) - ok} failed)",
              file=sys.stderr)
        return 2
    return 0


# -- capture (issue 16): --capture SOURCE [--frames N] -------------------------------------------------
def add_capture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--capture", nargs="?", const="", default=None, metavar="SOURCE",
                   help="classify frames from a camera index, video file, RTSP URL or GStreamer pipeline "
                   "(no SOURCE: [capture].source); the frames are saved under [paths].output/captures/")
    p.add_argument("--frames", type=frame_count, default=None, metavar="N",
                   help="with --capture: frames to grab, 1..8 (default: [capture].frames)")


def frame_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= n <= 8:
        raise argparse.ArgumentTypeError(f"must be 1..8, got {n}")
    return n


def capture_paths(args: argparse.Namespace, settings) -> tuple[list, list] | None:
    """With --capture: grab the frames, save them, and return (their paths, no errors); else None.
    Without --capture and without IMAGE: a one-line usage error."""
    from ncanvas_tui.errors import NcanvasError

    capture = getattr(args, "capture", None)
    if capture is None:
        if args.frames is not None:
            raise NcanvasError("infer: --frames goes with --capture")
        if not args.images:
            raise NcanvasError("infer: the following arguments are required: IMAGE (or --capture SOURCE; "
                               "see ncanvas infer --help)")
        return None
    if args.images:
        raise NcanvasError("infer: give IMAGE... or --capture SOURCE, not both")
    from ncanvas_tui.capture import grab

    frames = args.frames or settings.capture.frames
    saved = grab(settings, capture or settings.capture.source, frames)
    if not args.json:
        print(f"captured {len(saved)} frame(s) into {saved[0].parent}", file=sys.stderr)
    return [str(p) for p in saved], []
