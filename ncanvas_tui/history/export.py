"""Export one run (``HistoryStore.get_run``) as Markdown that reads well, or as JSON."""

from __future__ import annotations

import json
from typing import Any


def to_json(run: dict[str, Any]) -> str:
    return json.dumps(run, indent=2, ensure_ascii=False) + "\n"


def _cell(text: Any) -> str:
    """Safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _link(path: str) -> str:
    """A link target that survives spaces and parentheses."""
    return f"<{path}>" if any(c in path for c in " ()<>") else path


def _when(stamp: str) -> str:
    return stamp.replace("T", " ").replace("Z", " UTC") if stamp else "?"


def _inference(lines: list[str], inf: dict[str, Any], n: int, total: int) -> None:
    title = "Images" if total == 1 else f"Images ({n} of {total})"
    lines += [f"## {title}", ""]
    batches = f", batches {inf['batches']}" if inf.get("batches") else ""
    lines.append(f"{_cell(inf.get('model', '?'))} on {_cell(inf.get('backend', '?'))} "
                 f"{_cell(inf.get('precision', '?'))}{batches}")
    lines.append("")
    for r in inf.get("results") or []:
        image = str(r.get("image", "?"))
        name = image.rsplit("/", 1)[-1]
        lines += [f"### {name}", "", f"![{_cell(name)}]({_link(image)})", "",
                  "| # | label | class | probability |", "|--:|---|--:|--:|"]
        for i, t in enumerate(r.get("top") or [], 1):
            prob = t.get("prob")
            p = f"{prob * 100:.2f}%" if isinstance(prob, (int, float)) else "?"
            lines.append(f"| {i} | {_cell(t.get('label', '?'))} | {t.get('index', '?')} | {p} |")
        lines.append("")
    errors = inf.get("errors") or []
    if errors:
        lines += ["Not classified:", ""]
        lines += [f"- `{_cell(e.get('image', '?'))}`: {_cell(e.get('error', '?'))}" for e in errors]
        lines.append("")
    t = inf.get("timing_ms") or {}
    if t:
        parts = [f"{k} {v:.1f} ms" for k, v in t.items() if isinstance(v, (int, float))]
        lines += ["Timing: " + ", ".join(parts), ""]
    cond = inf.get("conditions")
    if isinstance(cond, dict) and any(v not in (None, {}) for v in cond.values()):  # the board's, when known
        from ncanvas_tui.board import describe_conditions

        lines += ["Conditions: " + _cell(describe_conditions(cond)), ""]


def _story(lines: list[str], st: dict[str, Any], n: int, total: int) -> None:
    lines += ["## Story" if total == 1 else f"## Story ({n} of {total})", ""]
    meta = []
    for key in ("style", "theme", "language"):
        if st.get(key):
            meta.append(f"{key}: {_cell(st[key])}")
    if st.get("labels"):
        meta.append("labels: " + ", ".join(_cell(x) for x in st["labels"]))
    if meta:
        lines += ["*" + " · ".join(meta) + "*", ""]
    if st.get("blocked"):
        lines += [f"> Refused by the {st.get('rail') or '?'} rail: {_cell(st.get('message', ''))}", ""]
    text = st.get("story") or st.get("text") or ""
    if text:
        lines += [str(text).strip(), ""]


def _picture(lines: list[str], pic: dict[str, Any], n: int, total: int) -> None:
    lines += ["## Picture" if total == 1 else f"## Picture ({n} of {total})", ""]
    if pic.get("prompt"):
        lines += ["**Prompt:**", "", "> " + "\n> ".join(str(pic["prompt"]).strip().splitlines()), ""]
    if pic.get("negative"):
        lines += [f"**Negative prompt:** {_cell(pic['negative'])}", ""]
    if pic.get("path"):
        path = str(pic["path"])
        lines += [f"![picture]({_link(path)})", "", f"Saved as `{path}`", ""]
    if pic.get("error"):
        lines += [f"**Not drawn:** {_cell(pic['error'])}", ""]
    meta = [f"{k}: {_cell(pic[k])}" for k in ("provider", "model", "size", "seed", "steps")
            if pic.get(k) not in (None, "")]
    if pic.get("elapsed_s") is not None:
        meta.append(f"took {pic['elapsed_s']:.1f} s")
    if meta:
        lines += ["*" + " · ".join(meta) + "*", ""]


def to_markdown(run: dict[str, Any]) -> str:
    lines = [f"# ncanvas run {run['id']}", "", f"*{_when(run.get('created', ''))}*", ""]
    for key, fn in (("inferences", _inference), ("stories", _story), ("pictures", _picture)):
        items = run.get(key) or []
        for i, item in enumerate(items, 1):
            fn(lines, item, i, len(items))
    if not any(run.get(k) for k in ("inferences", "stories", "pictures")):
        lines += ["(nothing recorded in this run)", ""]
    return "\n".join(lines).rstrip() + "\n"
