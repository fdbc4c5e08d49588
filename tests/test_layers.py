"""Layers written down and checked: import-linter contracts, strict mypy with tensorrt-stubs in
effect, and no reflection between the faces (cli/, tui/) and the core."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _contracts() -> int:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return len(data["tool"]["importlinter"]["contracts"])


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(BIN)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed (pip install import-linter: part of the test extra)")
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(cwd), "PATH": str(BIN)})


def test_import_contracts_are_kept() -> None:
    r = _lint_imports(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Contracts: {_contracts()} kept, 0 broken." in r.stdout, r.stdout


@pytest.mark.slow
def test_a_backend_importing_the_engine_library_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts are in effect: the same tree with one forbidden import fails lint-imports."""
    shutil.copytree(REPO / "ncanvas_tui", tmp_path / "ncanvas_tui", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "ncanvas_tui" / "backends" / "base.py"
    base.write_text(base.read_text(encoding="utf-8") + "\n\ndef _probe() -> None:\n"
                    "    from ncanvas_tui.engines import store  # noqa: F401\n", encoding="utf-8")
    r = _lint_imports(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "never import engines" in r.stdout and "BROKEN" in r.stdout, r.stdout


def _stubs(tmp_path: Path) -> Path:
    """tensorrt-stubs 10.13 ships .pyi files mypy cannot parse (parameters named `in`, a non-default
    after defaults) and no py.typed, so mypy silently treats `tensorrt` as Any. Copy them and fix
    those two things; mypy is pointed at the copy (MYPYPATH)."""
    site = Path(sysconfig.get_paths()["purelib"])
    if not (site / "tensorrt" / "__init__.pyi").is_file():
        pytest.fail("tensorrt-stubs not installed (scripts/dev-setup.sh installs it with --no-deps)")
    stubs = tmp_path / "stubs"
    shutil.copytree(site / "tensorrt", stubs / "tensorrt", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(site / "tensorrt_bindings", stubs / "tensorrt_bindings",
                    ignore=shutil.ignore_patterns("*.py", "*.so", "__pycache__"))
    pyi = stubs / "tensorrt_bindings" / "tensorrt.pyi"
    text = re.sub(r"([(,] *)in: ", r"\1in_: ", pyi.read_text())
    text = re.sub(r"(= None, channel_axis: int)\)", r"\1 = ...)", text)
    pyi.write_text(text)
    return stubs


@pytest.mark.slow
def test_mypy_strict_core_with_tensorrt_stubs_in_effect(tmp_path: Path) -> None:
    """`mypy ncanvas_tui` with pyproject's settings (strict for the core); a probe with a wrong
    TensorRT call must then fail, proving the stubs are in effect."""
    stubs = _stubs(tmp_path)
    env = {"MYPYPATH": str(stubs), "PATH": str(BIN)}
    run = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
           "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run([*run, "ncanvas_tui"], cwd=REPO, capture_output=True, text=True, check=False, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tensorrt as trt\n"
                     "def f(config: 'trt.IBuilderConfig') -> None:\n"
                     "    config.set_memory_pool_limit('workspace', 'big')\n")
    r = subprocess.run([*run, str(probe)], cwd=REPO, capture_output=True, text=True, check=False, env=env)
    assert r.returncode == 1 and "MemoryPoolType" in r.stdout, r.stdout + r.stderr
    untyped = tmp_path / "untyped.py"
    untyped.write_text("def f(x):\n    return x\n")
    core = REPO / "ncanvas_tui" / "engines" / "_strict_probe.py"
    try:  # a function without annotations inside the core is an error (the strict settings apply)
        shutil.copy(untyped, core)
        r = subprocess.run([*run, str(core)], cwd=REPO, capture_output=True, text=True, check=False, env=env)
    finally:
        core.unlink(missing_ok=True)
    assert r.returncode == 1 and "no-untyped-def" in r.stdout, r.stdout + r.stderr


FACES = [REPO / "ncanvas_tui" / "cli", REPO / "ncanvas_tui" / "tui"]
REFLECTION = re.compile(r"importlib|inspect\.signature|import_module|__import__|\bcall_flex\b|\baccepts\(")


def test_no_reflection_between_the_faces_and_the_core() -> None:
    """The faces call the core's typed API directly: no module imported by string, no signature
    inspected to decide what to pass."""
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for face in FACES for p in sorted(face.rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if REFLECTION.search(line)]
    assert not hits, "\n".join(hits)
