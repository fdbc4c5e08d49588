"""Story latency benchmark (not a test): time to first streamed token through our
client vs the raw ``openai`` stream against the same local server, guardrails off
and on, and the guardrails' cost per turn in LLM calls and milliseconds.

    .venv/bin/python bench/bench_story.py [--runs 30] [--words 300] [--gap-ms 0] [--check-ms 0]
    .venv/bin/python bench/bench_story.py --runs 5 --gap-ms 5 --check-ms 300   # model-like pacing

Runs against tests/fakeopenai.py (a real HTTP server on 127.0.0.1), so it
measures our overhead, not a model: with ``--gap-ms 0`` the server streams as fast
as it can. Prints one JSON document.

What "guardrails on" adds per story: one input self-check call, one embeddings call
when the user typed their own words (dialog flows), and one output self-check call
per ``rails.output.streaming.chunk_size`` tokens; with a real model the first
checked text is released after the first chunk has been generated AND checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"

from fakeopenai import FakeOpenAI, Reply, default_chat, default_embeddings, is_self_check, story_settings_text

from ncanvas_tui import settings as settings_mod
from ncanvas_tui.story import StoryRequest, StoryResult, StoryToken, StoryWriter
from ncanvas_tui.story.llm import LlmClient

MESSAGES = [{"role": "user", "content": "Write a story about a daisy."}]


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"p50_ms": round(statistics.median(xs), 3), "p90_ms": round(xs[int(0.9 * (len(xs) - 1))], 3),
            "min_ms": round(xs[0], 3), "n": len(xs)}


async def raw_openai_ttft(client) -> float:
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True,
                                                  max_tokens=800, temperature=0.8)
    ttft = None
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = (time.perf_counter() - t0) * 1000
    assert ttft is not None
    return ttft


async def our_client_ttft(client: LlmClient) -> float:
    t0 = time.perf_counter()
    ttft = None
    async for _ in client.stream(MESSAGES):
        if ttft is None:
            ttft = (time.perf_counter() - t0) * 1000
    assert ttft is not None
    return ttft


async def writer_turn(writer: StoryWriter, prompt: str | None) -> tuple[float, float, StoryResult]:
    t0 = time.perf_counter()
    ttft = None
    result = None
    async for ev in writer.write(StoryRequest(labels=["daisy", "robot"], style="Fantasy",
                                              theme="A Chance Encounter", prompt=prompt)):
        if isinstance(ev, StoryToken) and ttft is None:
            ttft = (time.perf_counter() - t0) * 1000
        elif isinstance(ev, StoryResult):
            result = ev
    total = (time.perf_counter() - t0) * 1000
    assert result is not None and result.ok, result
    return ttft or total, total, result


async def main(args: argparse.Namespace) -> dict:
    story = " ".join(["word"] * args.words)
    out: dict = {"runs": args.runs, "story_words": args.words, "server_gap_ms_per_token": args.gap_ms,
                 "server_check_delay_ms": args.check_ms}
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp:
        def answer(body: dict) -> object:
            if not is_self_check(body):
                return Reply(story, gap=args.gap_ms / 1000)
            check = default_chat(body)
            check.delay = args.check_ms / 1000  # a real model takes a while to answer a check
            return check

        fake.chat.default = answer

        def load(guard: bool, speculative: bool = True) -> settings_mod.Settings:
            p = Path(tmp) / f"s{int(guard)}{int(speculative)}.toml"
            p.write_text(story_settings_text(fake.url, guardrails=guard,
                                             extra=f"speculative = {str(speculative).lower()}"), encoding="utf-8")
            return settings_mod.load(p)

        off, on, on_seq = load(False), load(True), load(True, speculative=False)
        # interleave raw and ours so drift (CPU frequency, GC) hits both alike
        # both clients long-lived, as in the app (creating one costs ~20 ms of TLS setup)
        import openai

        raw_client = openai.AsyncOpenAI(base_url=fake.url, api_key="not-needed", max_retries=0,
                                        timeout=off.llm.timeout_s)
        our_client = LlmClient(off)
        raw: list[float] = []
        ours: list[float] = []
        for i in range(args.runs + 3):
            r, o = await raw_openai_ttft(raw_client), await our_client_ttft(our_client)
            if i >= 3:  # warm-up
                raw.append(r)
                ours.append(o)
        await raw_client.close()
        await our_client.aclose()
        out["ttft_raw_openai"] = summary(raw)
        out["ttft_our_client"] = summary(ours)
        out["ttft_client_overhead_p50_ms"] = round(statistics.median(ours) - statistics.median(raw), 3)

        for name, settings in (("guardrails_off", off), ("guardrails_on", on),
                               ("guardrails_on_not_speculative", on_seq)):
            writer = StoryWriter(settings)
            t0 = time.perf_counter()
            await writer_turn(writer, None)  # first turn builds the rails and the intent index
            first_turn_ms = (time.perf_counter() - t0) * 1000
            for prompt_kind, prompt in (("labels_only", None), ("with_user_prompt", "make it gentle")):
                ttfts, totals = [], []
                fake.reset()
                for _ in range(args.runs):
                    ttft, total, _ = await writer_turn(writer, prompt)
                    ttfts.append(ttft)
                    totals.append(total)
                n = args.runs
                out[f"{name}_{prompt_kind}"] = {
                    "ttft": summary(ttfts), "total": summary(totals),
                    "llm_calls_per_turn": round(len(fake.calls()) / n, 2),
                    "story_calls_per_turn": round(len(fake.story_calls()) / n, 2),
                    "input_checks_per_turn": round(len(fake.check_calls("input")) / n, 2),
                    "output_checks_per_turn": round(len(fake.check_calls("output")) / n, 2),
                    "embedding_calls_per_turn": round(len(fake.calls("/embeddings")) / n, 2),
                }
            out[f"{name}_first_turn_ms"] = round(first_turn_ms, 1)
            await writer.aclose()
        for kind in ("labels_only", "with_user_prompt"):
            out[f"guardrails_overhead_{kind}_p50_ms"] = {
                "ttft": round(out[f"guardrails_on_{kind}"]["ttft"]["p50_ms"]
                              - out[f"guardrails_off_{kind}"]["ttft"]["p50_ms"], 2),
                "total": round(out[f"guardrails_on_{kind}"]["total"]["p50_ms"]
                               - out[f"guardrails_off_{kind}"]["total"]["p50_ms"], 2)}
    return out


# ----------------------------------------------------------------------------- first text, paced server
PACE = {"story_delay_s": 0.3, "words_per_s": 40.0, "check_delay_s": 0.3, "embeddings_delay_s": 0.15}
CLI_ARGS = ["story", "--labels", "daisy,robot", "--style", "Fantasy", "--theme", "A Chance Encounter",
            "--no-history"]


def paced_server(fake, words: int) -> None:
    """Make the fake server answer like a hosted model: the story after 300 ms at 40 words/s, each
    self-check after 300 ms, embeddings after 150 ms."""
    story = " ".join(["word"] * words) + "."

    def answer(body: dict) -> object:
        if not is_self_check(body):
            return Reply(story, delay=PACE["story_delay_s"], gap=1.0 / PACE["words_per_s"])
        check = default_chat(body)
        check.delay = PACE["check_delay_s"]
        return check

    def embed(body: dict) -> object:
        time.sleep(PACE["embeddings_delay_s"])
        return default_embeddings(body)

    fake.chat.default = answer
    fake.embeddings.default = embed


def counts(fake, since: int) -> dict[str, int]:
    reqs = fake.requests[since:]
    chat = [r for r in reqs if r.path.endswith("/chat/completions") and isinstance(r.body, dict)]
    return {"story_calls": sum(1 for r in chat if not is_self_check(r.body)),
            "input_checks": sum(1 for r in chat if is_self_check(r.body) == "input"),
            "output_checks": sum(1 for r in chat if is_self_check(r.body) == "output"),
            "embedding_calls": sum(1 for r in reqs if r.path.endswith("/embeddings"))}


def cli_first_text(settings_path: Path, extra: list[str]) -> tuple[float, float, int]:
    """Spawn ``ncanvas story``; seconds from spawn to its first story byte on stdout, total, exit code."""
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY": ""}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ncanvas_tui", *CLI_ARGS, *extra, "--settings",
                             str(settings_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=str(REPO))
    first = None
    assert proc.stdout is not None
    while True:
        b = os.read(proc.stdout.fileno(), 65536)
        if not b:
            break
        if first is None and b.strip():
            first = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    rc = proc.wait()
    total = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"ncanvas story failed ({rc}): {err[-1500:]}")
    return (first if first is not None else total), total, rc


def _agg(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"p50_s": round(statistics.median(xs), 3), "min_s": round(xs[0], 3), "max_s": round(xs[-1], 3),
            "n": len(xs)}


def first_text(args: argparse.Namespace) -> dict:
    out: dict = {"pace": PACE, "story_words": args.words, "runs": args.runs}
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp:
        paced_server(fake, args.words)
        paths = {}
        for guard in (False, True):
            p = Path(tmp) / f"s{int(guard)}.toml"
            p.write_text(story_settings_text(fake.url, guardrails=guard, api_key_env=""), encoding="utf-8")
            paths[guard] = p
        # -- CLI, cold: a new process per story, runs interleaved so drift hits both alike
        for kind, extra in (("labels_only", []), ("with_user_prompt", ["--prompt", "make it gentle"])):
            ttft: dict[bool, list[float]] = {False: [], True: []}
            calls: dict[bool, list[dict]] = {False: [], True: []}
            for _ in range(args.runs):
                for guard in (False, True):
                    n0 = len(fake.requests)
                    first, _total, _ = cli_first_text(paths[guard], extra)
                    ttft[guard].append(first)
                    calls[guard].append(counts(fake, n0))
            off, on = _agg(ttft[False]), _agg(ttft[True])
            out[f"cli_cold_{kind}"] = {
                "guardrails_off_first_text": off, "guardrails_on_first_text": on,
                "guarded_minus_unguarded_p50_s": round(on["p50_s"] - off["p50_s"], 3),
                "goal_s": 1.5, "meets_goal": on["p50_s"] - off["p50_s"] <= 1.5,
                "calls_per_story_guarded": calls[True][-1]}
        # -- TUI, warm: the app's StoryRunner, rails built once in the background before the first story
        out["tui_warm"] = asyncio.run(_tui_warm(fake, paths, args.runs))
    return out


async def _tui_warm(fake, paths: dict, runs: int) -> dict:
    from ncanvas_tui.story.runner import StoryRunner

    res: dict = {}
    runners = {g: StoryRunner(settings_mod.load(paths[g])) for g in (False, True)}
    try:
        for r in runners.values():
            warm = getattr(r, "warm", None)
            if warm is not None:
                await asyncio.wrap_future(warm())
        for kind, prompt in (("labels_only", None), ("with_user_prompt", "make it gentle")):
            ttft: dict[bool, list[float]] = {False: [], True: []}
            calls: dict[bool, list[dict]] = {False: [], True: []}
            for i in range(runs + 1):
                for guard in (False, True):
                    n0 = len(fake.requests)
                    first: list[float] = []
                    t0 = time.perf_counter()

                    def on_event(ev, first=first, t0=t0) -> None:
                        if isinstance(ev, StoryToken) and not first:
                            first.append(time.perf_counter() - t0)

                    req = StoryRequest(labels=["daisy", "robot"], style="Fantasy", theme="A Chance Encounter",
                                       prompt=prompt)
                    result = await asyncio.wrap_future(runners[guard].submit(req, on_event))
                    assert result.ok, result
                    if i > 0:  # the first story of a runner is its warm-up when it has no warm()
                        ttft[guard].append(first[0])
                        calls[guard].append(counts(fake, n0))
            off, on = _agg(ttft[False]), _agg(ttft[True])
            res[kind] = {"guardrails_off_first_text": off, "guardrails_on_first_text": on,
                         "guarded_minus_unguarded_p50_s": round(on["p50_s"] - off["p50_s"], 3),
                         "goal_s": 1.5, "meets_goal": on["p50_s"] - off["p50_s"] <= 1.5,
                         "calls_per_story_guarded": calls[True][-1]}
    finally:
        for r in runners.values():
            r.close()
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--words", type=int, default=300, help="story length streamed by the fake server")
    ap.add_argument("--gap-ms", type=float, default=0.0, help="server delay between streamed tokens")
    ap.add_argument("--check-ms", type=float, default=0.0, help="server delay before a self-check answer")
    ap.add_argument("--first-text", action="store_true",
                    help="first story text against a server paced like a hosted model (300 ms, then 40 words/s; "
                         "checks 300 ms): CLI cold and TUI warm, guardrails on vs off in the same run")
    a = ap.parse_args()
    print(json.dumps(first_text(a) if a.first_text else asyncio.run(main(a)), indent=2))
