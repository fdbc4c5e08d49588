"""settings.toml: every key documented, defaults, and each kind of mistake gets one line naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, write_settings

from ncanvas_tui import settings as S
from ncanvas_tui.errors import SettingsError


def test_repo_settings_file_loads_and_documents_every_key() -> None:
    s = S.load(REPO / "settings.toml")
    assert s.source == REPO / "settings.toml"
    text = (REPO / "settings.toml").read_text()
    for section, factory in S._SECTIONS.items():
        assert f"[{section}]" in text
        for f in factory.__dataclass_fields__:
            line = next((ln for ln in text.splitlines() if re.match(rf"#?\s*{f}\s*=", ln.strip())), None)
            assert line is not None, f"[{section}].{f} is not in settings.toml"
            assert "#" in line or f == "keys", f"[{section}].{f} has no inline comment"


def test_repo_file_matches_builtin_defaults() -> None:
    """What settings.toml shows is what you get without it."""
    from_file = S.load(REPO / "settings.toml").public_dict()
    builtin = S.from_dict({}, base=REPO).public_dict()
    assert from_file == builtin


def test_relative_paths_resolve_against_the_file_and_tilde_expands(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    s = S.load(write_settings(sub / "s.toml", '[paths]\nmodels = "m"\nimages = "~/pics"\n'))
    assert s.paths.models == sub / "m"
    assert s.paths.images == Path.home() / "pics"
    # keys the file leaves out take their defaults, never "beside the file"
    assert s.paths.engines == S.from_dict({}).paths.engines != sub / "engines"


def test_env_var_selects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_settings(tmp_path / "x.toml", "[inference]\ntop_k = 3\n")
    monkeypatch.setenv("NCANVAS_SETTINGS", str(p))
    assert S.load().inference.top_k == 3
    # an explicit --settings wins over the env var
    q = write_settings(tmp_path / "y.toml", "[inference]\ntop_k = 7\n")
    assert S.load(q).inference.top_k == 7


@pytest.mark.parametrize("text, expected", [
    ("[inference]\ntop_k = \n", r"s\.toml:2:9: TOML syntax error"),
    ("[inference\n", r"s\.toml:1:\d+: TOML syntax error"),
    ("[inference]\nbogus = 1\n", r"unknown key \[inference\]\.bogus"),
    ("[nonsense]\n", r"unknown section \[nonsense\]"),
    ("[inference]\ntop_k = \"five\"\n", r"\[inference\]\.top_k must be an integer, got str"),
    ("[inference]\ntop_k = true\n", r"\[inference\]\.top_k must be an integer"),
    ("[inference]\ntop_k = 0\n", r"\[inference\]\.top_k must be between 1 and 1000, got 0"),
    ("[inference]\nbackend = \"cuda\"\n", r"\[inference\]\.backend must be one of auto \| tensorrt"),
    ("[build]\nbatch = [8, 4, 1]\n", r"\[build\]\.batch: batch 8,4,1 must be min,opt,max"),
    ("[build]\nbatch = [1, 4]\n", r"\[build\]\.batch must be \[min, opt, max\]"),
    ("[build]\ntiming_cache = \"yes\"\n", r"\[build\]\.timing_cache must be true/false"),
    ("[llm]\nbase_url = \"api.openai.com\"\n", r"\[llm\]\.base_url must be an http\(s\) URL"),
    ("[llm]\napi_key_env = \"sk-abc123secret\"\n", r"\[llm\]\.api_key_env must be the NAME"),
    ("[imagegen]\nsize = \"big\"\n", r"\[imagegen\]\.size must be WIDTHxHEIGHT"),
    ("paths = 3\n", r"\[paths\] must be a table"),
])
def test_bad_settings_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    p = write_settings(tmp_path / "s.toml", text)
    with pytest.raises(SettingsError) as e:
        S.load(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(p) in msg
    assert re.search(expected, msg), msg
    assert "sk-abc123secret" not in msg  # a key pasted by mistake is never echoed


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="settings file not found"):
        S.load(tmp_path / "nope.toml")
    with pytest.raises(SettingsError, match="is a directory"):
        S.load(tmp_path)


def test_api_key_comes_from_the_named_env_var_and_never_shows(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-live-123456")
    s = S.load(write_settings(tmp_path / "s.toml", '[llm]\napi_key_env = "MY_LLM_KEY"\n'))
    key = s.llm.api_key()
    assert key.get() == "sk-live-123456"
    assert "sk-live" not in repr(key) and "sk-live" not in str(key)
    assert "sk-live" not in repr(s) and "sk-live" not in str(s.public_dict())


def test_cli_reports_settings_error_exit_2_without_traceback(cli, tmp_path: Path) -> None:
    p = write_settings(tmp_path / "s.toml", "[inference]\nprecision = \"fp8\"\n")
    r = cli("models", "list", "--settings", str(p))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "[inference].precision must be one of auto | fp32 | fp16 | int8" in r.stderr
    r = cli("--settings", str(p), "models", "list", "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr  # --debug shows where
