"""``ncanvas init``: write your own settings file, every key documented, never over an existing one."""

from __future__ import annotations

import argparse
import re

from ncanvas_tui.cli.common import command


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "init", "write ~/.config/ncanvas/settings.toml ($XDG_CONFIG_HOME): every key documented "
            "and commented out (the defaults); never overwrites one", run, json_flag=False)


def template_text() -> str:
    """The documented settings file with every key commented out, and a header saying where this
    file sits in the lookup and where the defaults point."""
    from ncanvas_tui import resources

    src = resources.settings_template().read_text(encoding="utf-8").splitlines()
    while src and (src[0].startswith("#") or not src[0].strip()):  # the checkout file's own header
        src.pop(0)
    data = resources.user_data_dir()
    out = [
        "# Your ncanvas settings (written by `ncanvas init`). Every key is commented out: it has the",
        "# default shown. Uncomment and change only what you need; unknown keys are an error.",
        "# ncanvas reads the first of: --settings PATH, $NCANVAS_SETTINGS, the settings.toml of a",
        "# checkout it runs from (editable install), this file, the built-in defaults.",
        "# Relative paths you set here are relative to THIS file's folder; \"~\" is your home.",
        f"# Defaults: [paths] under {data} (models, engines, calibdata, output),",
        f"# [paths].images ~/Pictures, [guardrails].config the bundled rails ({resources.bundled_rails()}).",
        f"# Sample photos to try INT8 calibration with: {resources.sample_photos()}",
        "",
    ]
    for line in src:
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line):
            line = "# " + line
        elif re.match(r"^\s+#", line):  # a key's continued comment: keep it aligned
            line = "  " + line
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    from ncanvas_tui import resources
    from ncanvas_tui.errors import NcanvasError
    from ncanvas_tui.files import write_new_file

    target = resources.user_config_file()
    exists = NcanvasError(f"{target}: already exists; ncanvas init never overwrites a settings file "
                          "(edit it, or move it aside and run init again)")
    if target.exists() or target.is_symlink():
        raise exists
    try:
        path = write_new_file(target.parent, target.stem, target.suffix, template_text().encode("utf-8"),
                              limit=1)
    except FileExistsError:
        raise exists from None
    except OSError as e:
        raise NcanvasError(f"{target}: cannot write the settings file: {e.strerror or e}") from None
    print(path)
    return 0
