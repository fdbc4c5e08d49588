"""Where settings come from: --settings, $NCANVAS_SETTINGS, the checkout's settings.toml, the XDG
file (`ncanvas init`), built-in defaults; keys a file leaves out take their defaults (bundled rails
included); `doctor` names the file and where each path points."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO, write_settings

from ncanvas_tui import resources
from ncanvas_tui import settings as S


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    config, data = tmp_path / "config", tmp_path / "data"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return {"config": config, "data": data, "file": config / "ncanvas" / "settings.toml"}


@pytest.fixture
def no_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """As an installed package runs: no checkout around it."""
    monkeypatch.setattr(resources, "checkout_root", lambda: None)


def test_order_explicit_env_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg) -> None:
    write_settings(xdg["file"].parent.mkdir(parents=True) or xdg["file"], "[inference]\ntop_k = 2\n")
    # in a checkout, its settings.toml comes before the XDG file
    s = S.load()
    assert (s.source, s.origin) == (REPO / "settings.toml", "checkout")
    env = write_settings(tmp_path / "env.toml", "[inference]\ntop_k = 3\n")
    monkeypatch.setenv("NCANVAS_SETTINGS", str(env))
    s = S.load()
    assert (s.inference.top_k, s.origin) == (3, "$NCANVAS_SETTINGS")
    explicit = write_settings(tmp_path / "x.toml", "[inference]\ntop_k = 4\n")
    s = S.load(explicit)
    assert (s.inference.top_k, s.source, s.origin) == (4, explicit, "--settings")


def test_without_a_checkout_the_xdg_file_then_defaults_under_xdg_data(xdg, no_checkout) -> None:
    s = S.load()
    assert (s.source, s.origin) == (None, "defaults")
    base = xdg["data"] / "ncanvas"
    assert s.paths.engines == base / "engines" and s.paths.output == base / "output"
    assert s.paths.models == base / "models" and s.paths.calibration == base / "calibdata"
    assert s.paths.images == Path.home() / "Pictures"
    xdg["file"].parent.mkdir(parents=True)
    write_settings(xdg["file"], "[inference]\ntop_k = 2\n[paths]\noutput = \"out\"\n")
    s = S.load()
    assert (s.inference.top_k, s.source, s.origin) == (2, xdg["file"], "user")
    assert s.paths.output == xdg["file"].parent / "out"      # set in the file: relative to it
    assert s.paths.engines == base / "engines"                 # left out: the default, not beside the file


def test_home_config_is_the_default_xdg_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 no_checkout) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/is/ignored")
    assert resources.user_config_file() == tmp_path / ".config" / "ncanvas" / "settings.toml"
    assert S.load().paths.output == tmp_path / ".local" / "share" / "ncanvas" / "output"


def test_partial_file_elsewhere_keeps_the_bundled_rails(cli, tmp_path: Path) -> None:
    """A file holding only [llm] used to resolve [guardrails].config to rails/ beside itself."""
    p = write_settings(tmp_path / "only_llm.toml", '[llm]\nmodel = "m"\n')
    s = S.load(p)
    assert s.guardrails.config == resources.bundled_rails()
    assert (s.guardrails.config / "config.yml").is_file()
    assert s.paths.engines == S.from_dict({}).paths.engines
    r = cli("doctor", "--settings", str(p))
    assert r.returncode == 0, r.stderr
    assert "MISSING" not in r.stdout
    assert f"settings      {p} (from --settings)" in r.stdout


def test_doctor_names_the_file_and_where_each_path_points(cli, settings_path: Path, workdir: Path) -> None:
    r = cli("doctor", "--json", "--settings", str(settings_path))
    rep = json.loads(r.stdout)
    assert rep["settings"]["file"] == str(settings_path) and rep["settings"]["origin"] == "--settings"
    assert rep["paths"]["engines"] == {"path": str(workdir / "engines"), "exists": True}
    assert rep["paths"]["output"]["path"] == str(workdir / "output")
    assert Path(rep["data"]["rails"], "config.yml").is_file()
    assert Path(rep["data"]["sample_photos"], "SOURCES.md").is_file()
    r = cli("doctor", "--settings", str(settings_path))
    assert re.search(rf"^  calibration {re.escape(str(workdir / 'calibdata'))}$", r.stdout, re.MULTILINE), r.stdout


def test_init_writes_the_documented_xdg_file_once(cli, xdg) -> None:
    env = {"XDG_CONFIG_HOME": str(xdg["config"]), "XDG_DATA_HOME": str(xdg["data"])}
    r = cli("init", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(xdg["file"])
    text = xdg["file"].read_text()
    # every key is there, documented, commented out: the file means "the defaults"
    for section, factory in S._SECTIONS.items():
        assert f"[{section}]" in text
        for f in factory.__dataclass_fields__:
            line = next((ln for ln in text.splitlines() if re.match(rf"# {f}\s*=", ln)), None)
            assert line is not None, f"[{section}].{f} missing from the init file"
            assert "#" in line[2:] or f == "keys", line
    assert S.load(xdg["file"]).public_dict() == S.from_dict({}).public_dict()
    # never overwritten: exit 2 naming it, the file unchanged
    xdg["file"].write_text(text + "# mine\n")
    r = cli("init", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert str(xdg["file"]) in r.stderr and "never overwrites" in r.stderr
    assert xdg["file"].read_text() == text + "# mine\n"


def test_init_file_holds_every_line_of_the_repo_file() -> None:
    """Each key line of the checkout's documented file is in the init file, commented out as it is."""
    from ncanvas_tui.cli.init import template_text

    lines = set(template_text().splitlines())
    keys = [ln for ln in (REPO / "settings.toml").read_text().splitlines() if re.match(r"[a-z_]+\s*=", ln)]
    assert len(keys) > 40
    assert [k for k in keys if f"# {k}" not in lines] == []
