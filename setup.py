"""Package data from the top level of the checkout.

The bundled model (``models/``), the default guardrails (``rails/``), the documented
``settings.toml`` and the sample photos (``tests/data/photos``) stay where the checkout's
layout puts them; a (non-editable) build copies them into ``ncanvas_tui/_data/`` so an
installed ncanvas has them without a checkout. ``ncanvas_tui/resources.py`` lists them
(``BUNDLE``) and finds them in either layout. Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import glob
import os
import runpy
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLE = runpy.run_path(os.path.join(HERE, "ncanvas_tui", "resources.py"))["BUNDLE"]


class BuildPyWithData(build_py):
    """build_py, then copy the checkout's data files into ``<build>/ncanvas_tui/_data``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout itself
        for name, (src, patterns) in BUNDLE.items():
            dest = os.path.join(self.build_lib, "ncanvas_tui", "_data", name)
            os.makedirs(dest, exist_ok=True)
            for pattern in patterns:
                found = sorted(glob.glob(os.path.join(HERE, src, pattern)))
                if not found:
                    raise SystemExit(f"setup.py: package data {src}/{pattern} is missing")
                for path in found:
                    shutil.copyfile(path, os.path.join(dest, os.path.basename(path)))


setup(cmdclass={"build_py": BuildPyWithData})
