"""docs/cli.md is the JSON contract the README cites: its shapes are checked against the real
`--json` output of the commands that run offline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import PHOTOS, REPO

DOC = REPO / "docs" / "cli.md"
#: heading command -> how the test runs it (IMAGE/BAD are filled in)
OFFLINE = {
    "ncanvas infer --json": ["infer", "IMAGE", "BAD", "--json"],
    "ncanvas models list --json": ["models", "list", "--json"],
    "ncanvas engines list --json": ["engines", "list", "--json"],
    "ncanvas doctor --json": ["doctor", "--json"],
    "ncanvas history list --json": ["history", "list", "--json"],
}


def documented() -> dict[str, Any]:
    """Heading ``### `ncanvas ... --json` `` -> the first JSON block under it."""
    out: dict[str, Any] = {}
    heading, block = None, None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if block is not None:
            if line.startswith("```"):
                if heading and heading not in out:
                    out[heading] = json.loads("\n".join(block))
                block = None
            else:
                block.append(line)
        elif line.startswith("#"):
            m = re.fullmatch(r"### `([^`]+)`", line)
            heading = m.group(1) if m else None
        elif line.startswith("```json"):
            block = []
    return out


def kind(v: Any) -> str:
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "text", list: "list", dict: "object"}.get(type(v), type(v).__name__)


def mismatches(doc: Any, real: Any, where: str = "") -> list[str]:
    if doc is None:
        return []
    if kind(doc) != kind(real):
        return [f"{where or '.'}: documented {kind(doc)}, got {kind(real)} {real!r:.60}"]
    out: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k not in real:
                out.append(f"{where}.{k}: documented, missing from the output")
            else:
                out += mismatches(v, real[k], f"{where}.{k}")
    elif isinstance(doc, list) and doc and real:
        for i, item in enumerate(real):
            out += mismatches(doc[0], item, f"{where}[{i}]")
    return out


def test_every_documented_block_parses_and_the_readme_cites_this_file() -> None:
    shapes = documented()
    assert set(OFFLINE) <= set(shapes), sorted(shapes)
    assert {"ncanvas story --json", "ncanvas imagine --json", "ncanvas verify --json",
            "ncanvas bench --json"} <= set(shapes)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/cli.md" in readme and "SPEC.md" not in readme


@pytest.mark.parametrize("command", list(OFFLINE))
def test_real_output_has_the_documented_shape(cli, settings_path: Path, workdir: Path, command: str) -> None:
    bad = workdir / "bad.jpg"
    bad.write_text("not an image")
    args = [str(PHOTOS / "flower.jpg") if a == "IMAGE" else str(bad) if a == "BAD" else a
            for a in OFFLINE[command]]
    if command.startswith("ncanvas history"):  # a run to list
        assert cli("infer", str(PHOTOS / "flower.jpg"), "--settings", str(settings_path)).returncode == 0
    if command.startswith("ncanvas engines"):  # an artefact to list
        from onnx_factory import add_model, tiny_classifier

        add_model(workdir / "models", "tiny", tiny_classifier)
        r = cli("build", "tiny", "--precision", "int8", "--backend", "onnxruntime", "--settings", str(settings_path))
        assert r.returncode == 0, r.stderr
    r = cli(*args, "--settings", str(settings_path), timeout=120)
    assert r.returncode == 0, r.stderr
    real = json.loads(r.stdout)
    doc = documented()[command]
    assert mismatches(doc, real) == []
    if command == "ncanvas infer --json":
        assert real["results"] and real["errors"]  # both lists were checked element by element


def test_a_wrong_shape_is_caught() -> None:
    doc = documented()["ncanvas infer --json"]
    assert mismatches(doc, {**doc, "results": [{"image": "a.jpg", "top": [{"index": "985"}]}]})
    assert mismatches(doc, {k: v for k, v in doc.items() if k != "timing_ms"})
