"""Every Makefile target works: what it runs exists, and `make run` installs only when pyproject.toml
changed (it reinstalled on every start: 5.6 s instead of 1.0 s)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
TARGETS = ["run", "test", "setup", "setup-dev", "lint", "typecheck", "bench", "clean"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the files make looks at, with a set-up venv (a stand-in python) whose stamps are fresh."""
    for name in ("Makefile", "pyproject.toml", "setup.py", "scripts/dev-setup.sh"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
    later = time.time() + 5
    for stamp in (".installed-run", ".installed-dev"):
        (tmp_path / ".venv" / stamp).touch()
        os.utime(tmp_path / ".venv" / stamp, (later, later))
    return tmp_path


def dry_run(project: Path, target: str) -> str:
    # run from `make test` too: a nested make would print "make[1]: Entering directory" first
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    r = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=project, capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_make_run_installs_only_when_pyproject_changed(project: Path) -> None:
    assert dry_run(project, "run").split("\n")[0] == ".venv/bin/ncanvas"
    assert "pip install" not in dry_run(project, "run")
    assert "dev-setup.sh" not in dry_run(project, "test")
    later = time.time() + 60
    os.utime(project / "pyproject.toml", (later, later))
    out = dry_run(project, "run")
    assert "pip install -q -e '.[story,engines]'" in out and out.rstrip().endswith(".venv/bin/ncanvas")
    assert "bash scripts/dev-setup.sh .venv" in dry_run(project, "test")


@pytest.mark.parametrize("target", TARGETS)
def test_every_file_a_target_runs_exists(project: Path, target: str) -> None:
    out = dry_run(project, target)
    if target == "bench":  # the loop is one shell line: make -n prints it, the names are in it
        out = " ".join(re.findall(r"bench/\S+?\.py", out))
    for path in re.findall(r"(?<![\w./-])((?:bench|scripts|tests|ncanvas_tui)/[\w./-]+\.(?:py|sh))", out):
        assert (REPO / path).is_file(), f"make {target} runs {path}, which does not exist"
    assert "run_all.py" not in out
