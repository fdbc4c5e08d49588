"""Shared fixtures. Every test runs against its own settings file and folders,
never the user's settings.toml, ~/Pictures or the repo's engines/."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "tests" / "data" / "photos"
DEFAULT_ONNX = REPO / "models" / "efficientnet_lite0.onnx"


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# The GPU machine has no Textual, no pytest-asyncio: test modules that import them at the top are not
# collected there (they would fail to import), so `pytest -m gpu tests` collects; everywhere else
# (CI, a Jetson with the test extra) they run.
_NEEDS = {"test_tui_*.py": "textual", "tui_helpers.py": "textual", "test_guardrails.py": "pytest_asyncio"}
collect_ignore_glob = [glob for glob, module in _NEEDS.items() if not _importable(module)]


def has_cuda() -> bool:
    """A CUDA device that pycuda can see (the GPU machine, a Jetson)."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:  # noqa: BLE001 - no pycuda, no driver, no device: all mean "no"
        return False


def write_settings(path: Path, text: str = "") -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the user's environment: settings, keys, telemetry."""
    monkeypatch.delenv("NCANVAS_SETTINGS", raising=False)
    monkeypatch.delenv("NCANVAS_SYSROOT", raising=False)  # board state: the real one unless a test replays a tree
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.setenv("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
    # never the user's ~/.config/ncanvas/settings.toml nor ~/.local/share/ncanvas
    xdg = tmp_path_factory.getbasetemp() / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A project folder: models/ (empty: the bundled model is found in the repo), engines/,
    output/, calibdata/ with a few real photos, pictures/ with the test photos."""
    for d in ("models", "engines", "output", "calibdata", "pictures"):
        (tmp_path / d).mkdir()
    if PHOTOS.is_dir():
        for p in sorted(PHOTOS.glob("*.jpg")):
            shutil.copy(p, tmp_path / "pictures" / p.name)
            shutil.copy(p, tmp_path / "calibdata" / p.name)
    return tmp_path


@pytest.fixture
def settings_path(workdir: Path) -> Path:
    """A settings file whose paths all point inside ``workdir``; backend onnxruntime, fp32."""
    return write_settings(workdir / "settings.toml", """
[paths]
models = "models"
engines = "engines"
images = "pictures"
calibration = "calibdata"
output = "output"

[inference]
backend = "onnxruntime"
precision = "fp32"

[guardrails]
enabled = false
""")


@pytest.fixture
def settings(settings_path: Path):
    from ncanvas_tui import settings as s

    return s.load(settings_path)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run the real ``ncanvas`` entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ncanvas_tui", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
