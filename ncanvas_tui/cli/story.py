"""``ncanvas story (--labels "a,b" | --images PATH...) [--style S] [--theme T] [--prompt TEXT] [--continue FILE]
[--json]``.

``--images`` classifies the pictures (the settings' model, or ``--artefact ID``) and writes from their
labels (``--labels``, when given too, wins); with ``[llm].vision = true`` the pictures themselves also
go to the model (downscaled JPEG data URLs; the history records only their paths).

Streams the story to stdout as it arrives (stdout carries only the story; notes go
to stderr), saves it under [paths].output/stories/ (its path on stderr, or "path"
in --json) and records it in the history. A guardrail refusal exits 3; an endpoint
failure exits 2 after saving whatever part of the story had arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from ncanvas_tui.cli.common import command, load_settings, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from ncanvas_tui.story.catalog import STYLE_NAMES, THEME_NAMES

    p = command(sub, "story", "write a story from labels with the LLM (guarded), streamed to stdout", run)
    p.add_argument("--labels", metavar="A,B", help="comma-separated labels, e.g. \"daisy,robot\" "
                   "(required without --images; with --continue: default the story's own)")
    p.add_argument("--images", nargs="+", metavar="PATH", help="pictures (or folders) to classify and write "
                   "from; with [llm].vision = true the model also sees them")
    p.add_argument("--artefact", metavar="ID", help="with --images: classify with this built artefact "
                   "(`ncanvas engines list`)")
    p.add_argument("--style", metavar="S", help=f"one of: {', '.join(STYLE_NAMES)} (default: random)")
    p.add_argument("--theme", metavar="T", help=f"one of: {', '.join(THEME_NAMES)} (default: random)")
    p.add_argument("--prompt", metavar="TEXT", help="your own words added to the request")
    p.add_argument("--continue", dest="continue_file", metavar="FILE",
                   help="continue this story file (from `ncanvas story`, or any .txt/.md)")
    p.add_argument("--language", choices=("en", "zh"), help="default: [llm].language (or the story's)")
    p.add_argument("--run", type=int, metavar="ID", help="attach the story to this history run")
    p.add_argument("--no-history", action="store_true", help="do not record the story in the history")


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _write(settings: Any, request: Any, args: argparse.Namespace) -> Any:
    from ncanvas_tui.story import StoryResult, StoryToken, StoryWriter
    from ncanvas_tui.story.record import keep

    debug = bool(getattr(args, "debug", False))
    tty = sys.stderr.isatty()

    def status(note: str) -> None:
        # retry progress is for a person watching: on a terminal only (piped stderr gets the one
        # final line); under --debug the client's own log line says it
        retry = "retrying" in note
        if (retry and tty and not debug) or (debug and not retry):
            _err(f"ncanvas: {note}")

    writer = StoryWriter(settings, on_status=status)
    streamed = False
    piped = True  # False once the reader went away (`| head`): the story is still written and saved

    def out(text: str) -> None:
        nonlocal piped
        if piped:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:
                piped = False
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())  # no second BrokenPipeError at exit

    shown: list[str] = []  # what reached stdout: with guardrails on, only text the output rail passed

    async def consume() -> Any:
        nonlocal streamed
        async for ev in writer.write(request):
            if isinstance(ev, StoryToken):
                shown.append(ev.text)
                if not args.json:
                    out(ev.text)
                    streamed = True
            elif isinstance(ev, StoryResult):
                return ev
        raise AssertionError("the writer ended without a result")

    # Ctrl-C: our own handler, not a cancel of the whole run; a library deep in the guarded stream may
    # swallow one cancellation, and the story would then go on (or be lost) instead of stopping
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        own_sigint = True
    except (NotImplementedError, RuntimeError, ValueError):  # no signal handlers here (Windows, a thread)
        own_sigint = False
    task = asyncio.ensure_future(consume())
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            stopped = not task.done()
        except asyncio.CancelledError:  # asyncio.run's own Ctrl-C handling
            stopped = True
        finally:
            waiter.cancel()
        if not stopped:
            result = task.result()
            if streamed:
                out("\n")
            keep(settings, result, history=not args.no_history, run_id=args.run)
            return result
        await _stop(task, writer)
        return _keep_cut_off(settings, writer, request, shown, args, newline=streamed)
    finally:
        if own_sigint:
            loop.remove_signal_handler(signal.SIGINT)
        await writer.aclose()


async def _stop(task: asyncio.Future, writer: Any, limit_s: float = 3.0) -> None:
    """Cancel the story task until it is gone (a swallowed cancellation is repeated), at most ``limit_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    closed = False
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
        if not task.done() and not closed:
            closed = True
            await writer.aclose()  # closing the LLM client ends its stream
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: the story is being stopped, its late error is moot


def _keep_cut_off(settings: Any, writer: Any, request: Any, shown: list[str], args: argparse.Namespace,
                  *, newline: bool) -> Any:
    """Ctrl-C: keep exactly the text that was shown (with guardrails on, only text that passed the
    output rail; anything unchecked is dropped) as a partial story."""
    from ncanvas_tui.story.model import StoryResult
    from ncanvas_tui.story.record import keep
    from ncanvas_tui.story.writer import join_story

    result = writer.last_result
    if result is None:  # stopped before the request was even prepared
        result = StoryResult(labels=list(request.labels or []), guardrails=writer.guard is not None)
    text = "".join(shown).rstrip()
    prior = request.continue_from.text if request.continue_from else ""
    result.blocked, result.cancelled, result.partial = False, True, bool(text)
    result.error, result.exc = None, None
    result.text = text
    result.story = join_story(prior, text, result.language) if text else prior
    if newline:
        sys.stdout.write("\n")
        sys.stdout.flush()
    if text.strip():
        keep(settings, result, history=not args.no_history, run_id=args.run)
    return result


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui.errors import NcanvasError
    from ncanvas_tui.story import StoryRequest, load_story
    from ncanvas_tui.story.catalog import parse_labels

    settings = load_settings(args)
    prior = load_story(args.continue_file) if args.continue_file else None
    labels = parse_labels(args.labels or "")
    images: list[str] = []
    if args.artefact and not args.images:
        raise NcanvasError("--artefact picks the classifier for --images: give --images PATH... too")
    if args.images:
        from ncanvas_tui.story.images import labels_from_images

        found, images = labels_from_images(settings, args.images, args.artefact)
        if not labels:
            labels = found
            _err(f"ncanvas: labels from the pictures: {', '.join(labels)}")
    request = StoryRequest(labels=labels, style=args.style, theme=args.theme, prompt=args.prompt,
                           continue_from=prior, language=args.language, images=images or None)
    result = asyncio.run(_write(settings, request, args))
    if args.json:
        print_json(result.to_json())
    if result.cancelled:
        checked = " (only text that passed the output rail)" if result.guardrails else ""
        if result.path is not None:
            _err(f"ncanvas: cancelled (Ctrl-C); the partial story was saved to {result.path}{checked}")
        elif result.guardrails:
            _err("ncanvas: cancelled before any text passed the output rail; nothing saved")
        else:
            _err("ncanvas: cancelled (Ctrl-C) before any text arrived; nothing saved")
        return 130
    if result.blocked:
        _err(f"ncanvas: refused by the {result.rail} rail: {result.message}")
        return 3
    if result.error is not None:
        where = f"; the partial story was saved to {result.path}" if result.path else ""
        _err(f"ncanvas: error: {result.error}{where}")
        return result.exc.exit_code if result.exc is not None else 2
    if result.stats.get("cut_at_chars"):
        _err(f"ncanvas: the story reached [llm].max_story_chars ({result.stats['cut_at_chars']} characters); "
             "kept what came as a partial story")
    if result.path is not None:
        _err(f"ncanvas: saved {result.path}")
    return 0
