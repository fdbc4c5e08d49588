"""A real package: a non-editable install (the wheel `pip install .` builds) in a fresh venv, run from
an empty folder with HOME/XDG in temp folders, classifies the daisy offline; nothing reads tests/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import PHOTOS, REPO

from ncanvas_tui import resources

#: what a source tree needs to build the wheel (a copy: the build never writes into the checkout)
SOURCE = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "settings.toml", "ncanvas_tui", "models",
          "rails", "tests/data/photos"]


def _copy_source(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_data", "*.prep.onnx", "*.int8*.onnx", "*.fp16*.onnx")
    for name in SOURCE:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel built from a copy of the checkout (offline: no build isolation, no index), installed
    with --target; a fresh venv's python runs it with the test venv's dependencies on PYTHONPATH."""
    base = tmp_path_factory.mktemp("pkg")
    _copy_source(base / "src")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "--no-index",
          "-w", str(base / "wheel"), str(base / "src")])
    wheel = next((base / "wheel").glob("ncanvas-*.whl"))
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
          str(base / "site"), str(wheel)])
    _run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")])
    return {"base": base, "site": base / "site", "python": base / "venv" / "bin" / "python"}


def _env(installed: dict[str, Path], home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "NCANVAS_", "PYTHON")) and k not in ("HOME", "VIRTUAL_ENV")}
    # the package from the wheel first; numpy, onnxruntime, Pillow ... from the test venv (its .pth
    # files, the editable install's among them, are not read for PYTHONPATH entries)
    env["PYTHONPATH"] = os.pathsep.join([str(installed["site"]), sysconfig.get_paths()["purelib"]])
    env["HOME"] = str(home)
    return env


def test_installed_package_classifies_a_daisy_from_an_empty_folder(installed, tmp_path: Path) -> None:
    home, empty = tmp_path / "home", tmp_path / "empty"
    home.mkdir()
    empty.mkdir()
    daisy = tmp_path / "daisy.jpg"
    shutil.copy(PHOTOS / "flower.jpg", daisy)
    env = _env(installed, home)
    py = str(installed["python"])

    def ncanvas(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [py, "-m", "ncanvas_tui", *args]
        if check:
            return _run(cmd, cwd=empty, env=env)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=empty, env=env)

    r = _run([py, "-c", ("import ncanvas_tui, ncanvas_tui.resources as r; print(ncanvas_tui.__file__); "
                        "print(r.checkout_root())")], cwd=empty, env=env)
    where, checkout = r.stdout.split()
    assert Path(where).is_relative_to(installed["site"]) and checkout == "None"

    out = json.loads(ncanvas("infer", str(daisy), "--json", "--top", "1").stdout)
    assert out["backend"] == "onnxruntime" and out["model"] == "efficientnet_lite0"
    assert out["results"][0]["top"][0]["label"] == "daisy"

    data = home / ".local" / "share" / "ncanvas"
    rep = json.loads(ncanvas("doctor", "--json").stdout)
    assert rep["settings"]["file"] is None and rep["settings"]["origin"] == "defaults"
    assert rep["paths"]["engines"]["path"] == str(data / "engines")
    assert rep["paths"]["output"]["path"] == str(data / "output")
    assert rep["guardrails"]["config_present"] and Path(rep["guardrails"]["config"]).is_relative_to(installed["site"])
    assert rep["model"]["present"] and Path(rep["model"]["path"]).is_relative_to(installed["site"])
    photos = Path(rep["data"]["sample_photos"])
    assert photos.is_relative_to(installed["site"]) and (photos / "SOURCES.md").is_file()
    assert len(list(photos.glob("*.jpg"))) >= 7
    assert (data / "output" / "history.sqlite3").is_file()  # the infer run was recorded there

    # init writes the XDG file (never twice), which is then the settings in use
    cfg = home / ".config" / "ncanvas" / "settings.toml"
    assert ncanvas("init").stdout.strip() == str(cfg)
    assert ncanvas("init", check=False).returncode == 2
    rep = json.loads(ncanvas("doctor", "--json").stdout)
    assert rep["settings"]["file"] == str(cfg) and rep["settings"]["origin"] == "user"
    assert rep["guardrails"]["config_present"]
    assert list(empty.iterdir()) == []  # nothing written in the folder it ran from


def test_checkout_layout_finds_the_same_files() -> None:
    """In the checkout (editable install) the data is read where the layout keeps it."""
    assert resources.checkout_root() == REPO
    assert resources.bundled_model_dir() == REPO / "models"
    assert resources.bundled_rails() == REPO / "rails"
    assert resources.sample_photos() == PHOTOS
    assert resources.settings_template() == REPO / "settings.toml"
    for name, (src, patterns) in resources.BUNDLE.items():
        for pattern in patterns:
            assert list((REPO / src).glob(pattern)), f"package data {name}: {src}/{pattern} missing"


def test_nothing_at_run_time_reads_tests() -> None:
    """Only resources.py names the photos' place in the checkout."""
    hits = [str(p.relative_to(REPO)) for p in (REPO / "ncanvas_tui").rglob("*.py")
            if '"tests"' in p.read_text(encoding="utf-8") or "tests/data" in p.read_text(encoding="utf-8")]
    assert hits == ["ncanvas_tui/resources.py"]
