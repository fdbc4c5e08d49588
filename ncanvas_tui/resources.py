"""Where ncanvas's own data files are: the bundled model, rails, sample photos, settings template.

Two layouts, one answer. In a checkout (``git clone`` + ``pip install -e .``) the files are
at the top level of the checkout (``models/``, ``rails/``, ``settings.toml``) and
``tests/data/photos/``. In an installed package (``pip install .``, ``pipx install``) the
build copies the same files into ``ncanvas_tui/_data/`` (see ``setup.py``), so nothing at
run time reads ``tests/`` or needs a checkout. Labels and the catalog live in
``ncanvas_tui/vision/`` in both layouts.

Settings defaults: with a checkout, relative ``[paths]`` default under the checkout; without
one, under ``$XDG_DATA_HOME/ncanvas`` (default ``~/.local/share/ncanvas``). The user's own
settings file is ``$XDG_CONFIG_HOME/ncanvas/settings.toml`` (default ``~/.config/...``).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: what the build copies into the package (``setup.py`` reads this list)
DATA_DIR = PACKAGE_DIR / "_data"
#: folder in DATA_DIR -> its source in the checkout (files only; ``*`` globs)
BUNDLE = {
    "models": ("models", ["efficientnet_lite0.onnx", "efficientnet_lite0.onnx.sha256", "README.md"]),
    "rails": ("rails", ["*.yml", "*.co"]),
    "photos": ("tests/data/photos", ["*.jpg", "SOURCES.md"]),
    "settings": (".", ["settings.toml"]),
}


def checkout_root() -> Path | None:
    """The root of the source checkout this package runs from (editable install), else None."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "ncanvas_tui").is_dir() and (root / "models").is_dir():
        return root
    return None


def _data(name: str, checkout_rel: str) -> Path:
    inside = DATA_DIR / name
    if inside.is_dir():
        return inside
    root = checkout_root()
    if root is not None:
        return root / checkout_rel
    return inside  # absent: callers report the missing file by this path


def bundled_model_dir() -> Path:
    """The folder holding the bundled default model (``efficientnet_lite0.onnx``)."""
    return _data("models", "models")


def bundled_rails() -> Path:
    """The default NeMo Guardrails config folder (``config.yml``, prompts, flows)."""
    return _data("rails", "rails")


def sample_photos() -> Path:
    """A few ordinary photos with their licences (``SOURCES.md``): self-tests, first calibration."""
    return _data("photos", "tests/data/photos")


def settings_template() -> Path:
    """The documented settings file (every key with its default and a comment)."""
    inside = DATA_DIR / "settings" / "settings.toml"
    root = checkout_root()
    if not inside.is_file() and root is not None:
        return root / "settings.toml"
    return inside


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    # the XDG spec: a relative path in these variables is invalid and ignored
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def user_config_file() -> Path:
    """``$XDG_CONFIG_HOME/ncanvas/settings.toml`` (default ``~/.config/ncanvas/settings.toml``)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "ncanvas" / "settings.toml"


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/ncanvas`` (default ``~/.local/share/ncanvas``)."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "ncanvas"


def defaults_base() -> Path:
    """What relative ``[paths]`` defaults are relative to: the checkout, else the XDG data folder."""
    return checkout_root() or user_data_dir()
