"""The command line as a script sees it: help without heavy imports, doctor, bench, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

HEAVY = ["tensorrt", "tensorrt_rtx", "onnxruntime", "openai", "nemoguardrails", "torch", "pycuda", "polygraphy",
         "textual"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_help_imports_nothing_heavy() -> None:
    code = ("import contextlib, io\nfrom ncanvas_tui.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()): main(['--help'])")
    mods = _modules_after(code)
    assert not {m.split(".")[0] for m in mods} & set(HEAVY)


def test_every_subcommand_help_works(cli) -> None:
    from ncanvas_tui.cli import COMMANDS

    r = cli("--help")
    assert r.returncode == 0
    for name in ("doctor", "models", "infer", "bench"):
        assert name in r.stdout
    for mod in COMMANDS:
        assert mod  # every registered module has a parser reachable from --help
    assert cli("infer", "--help").returncode == 0 and "--json" in cli("infer", "--help").stdout


def test_core_imports_without_ui_or_gpu_libraries() -> None:
    """The core must import on a machine without textual, tensorrt, pycuda, nemoguardrails or openai."""
    code = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {['textual', 'tensorrt', 'tensorrt_rtx', 'pycuda', 'nemoguardrails', 'openai', 'torch']!r}:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import ncanvas_tui
for m in pkgutil.walk_packages(ncanvas_tui.__path__, 'ncanvas_tui.'):
    if m.name.startswith('ncanvas_tui.tui') or m.name.endswith('__main__'):
        continue
    importlib.import_module(m.name)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


def test_doctor_json_reports_without_leaking_keys(cli, settings_path: Path) -> None:
    r = cli("doctor", "--json", "--settings", str(settings_path), env={"OPENAI_API_KEY": "sk-doctor-secret-1"})
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["onnxruntime"]["available"] and "CPUExecutionProvider" in rep["onnxruntime"]["providers"]
    assert rep["settings"]["file"] == str(settings_path)
    assert rep["backend"]["auto_resolves_to"] in ("onnxruntime", "tensorrt")
    assert rep["model"]["present"] is True
    assert rep["llm"]["api_key_env"] == "OPENAI_API_KEY" and rep["llm"]["key_present"] is True
    assert "sk-doctor-secret-1" not in r.stdout + r.stderr
    text = cli("doctor", "--settings", str(settings_path))
    assert "onnxruntime" in text.stdout and "key $OPENAI_API_KEY NOT SET" in text.stdout


def test_bench_json_shape_and_baseline(cli, settings_path: Path) -> None:
    r = cli("bench", "--json", "--batch", "1,2", "--seconds", "0.2", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "efficientnet_lite0" and out["backend"] == "onnxruntime"
    assert [x["batch"] for x in out["results"]] == [1, 2]
    for x in out["results"]:
        for k in ("p50_ms", "p90_ms", "p99_ms", "images_per_s", "preprocess_ms", "infer_ms", "postprocess_ms",
                  "raw_infer_ms"):
            assert x[k] > 0, k
        assert x["p50_ms"] <= x["p90_ms"] <= x["p99_ms"]


def test_bad_arguments_are_one_line_exit_2(cli) -> None:
    for args, expected in [(("infer",), "the following arguments are required: IMAGE"),
                           (("bench", "--batch", "0,x"), "--batch: must be comma-separated integers"),
                           (("infer", "a.jpg", "--top", "0"), "--top: must be 1..1000, got 0"),
                           (("models", "list", "--bogus"), "unrecognized arguments: --bogus"),
                           (("frobnicate",), "invalid choice: 'frobnicate'")]:
        r = cli(*args)
        assert r.returncode == 2, args
        assert r.stderr.count("\n") == 1 and expected in r.stderr, (args, r.stderr)
        assert "usage:" not in r.stderr


def test_doctor_works_without_the_story_extra(settings_path) -> None:
    """The core runs without openai: doctor says the endpoints were not tried, and exits 0."""
    import json
    import subprocess
    import sys

    settings_path.write_text(settings_path.read_text() + '\n[llm]\nbase_url = "http://127.0.0.1:9/v1"\n'
                             'api_key_env = ""\n', encoding="utf-8")  # a local endpoint: it would be tried
    code = ("import sys; sys.modules['openai'] = None\n"
            "from ncanvas_tui.cli import main\n"
            f"sys.exit(main(['doctor', '--json', '--settings', {str(settings_path)!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["llm"]["reachable"] is None and "openai client is not installed" in data["llm"]["detail"]
