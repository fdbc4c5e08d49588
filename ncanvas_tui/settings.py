"""Typed, validated settings loaded once from ``settings.toml``.

Which file (``resolve_path``), first found wins:

1. ``--settings PATH``;
2. ``$NCANVAS_SETTINGS``;
3. ``settings.toml`` at the root of the checkout the package runs from (an editable install);
4. ``$XDG_CONFIG_HOME/ncanvas/settings.toml`` (default ``~/.config/ncanvas/settings.toml``,
   written by ``ncanvas init``);
5. none: the built-in defaults.

Rules: unknown sections or keys are an error naming the key; a TOML syntax error
names file, line and column; types and ranges are checked; relative paths in a file
are relative to that file; ``~`` is expanded. Keys missing from the file take their
defaults, exactly as if there were no file: relative ``[paths]`` defaults are under the
checkout (editable install) or ``$XDG_DATA_HOME/ncanvas`` (installed package), and
``[guardrails].config`` defaults to the bundled ``rails/`` (``ncanvas_tui.resources``).
A settings path that is not a regular file (a FIFO, a device) is refused, never read.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncanvas_tui import resources
from ncanvas_tui.errors import NcanvasError, SettingsError
from ncanvas_tui.files import read_regular_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 (JetPack 6)
    import tomli as tomllib

ENV_VAR = "NCANVAS_SETTINGS"
REPO_ROOT = Path(__file__).resolve().parent.parent
#: the checkout's settings.toml (looked up only when the package runs from a checkout)
DEFAULT_FILE = REPO_ROOT / "settings.toml"
#: the most a settings file may hold (it is a few kB; this stops a wrong path early)
MAX_FILE_BYTES = 1 << 20

BACKENDS = ("auto", "tensorrt", "tensorrt-rtx", "onnxruntime")
PRECISIONS = ("auto", "fp32", "fp16", "int8")  # auto: fp16 on GPU backends, fp32 on ONNX Runtime (CPU)


def _opt(default: Any, **meta: Any) -> Any:
    """A settings field: ``choices``, ``min``, ``max``, ``path`` (resolve), ``doc``."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class Secret:
    """A secret value that never shows itself in repr/str/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class PathsSettings:
    models: Path = _opt("models", path=True)
    engines: Path = _opt("engines", path=True)
    images: Path = _opt("~/Pictures", path=True)
    calibration: Path = _opt("calibdata", path=True)
    output: Path = _opt("output", path=True)


@dataclass(frozen=True)
class InferenceSettings:
    backend: str = _opt("auto", choices=BACKENDS)
    model: str = _opt("efficientnet_lite0")
    precision: str = _opt("auto", choices=PRECISIONS)
    top_k: int = _opt(5, min=1, max=1000)


@dataclass(frozen=True)
class BuildSettings:
    batch: list[int] = _opt([1, 4, 8], kind="batch")
    opt_level: int = _opt(3, min=0, max=5)
    workspace_mib: int = _opt(1024, min=16, max=1 << 20)
    timing_cache: bool = _opt(True)
    sparse_weights: bool = _opt(False)
    tf32: bool = _opt(True)
    strict_int8: bool = _opt(False)
    dla_core: int = _opt(-1, min=-1, max=15)
    calibrator: str = _opt("entropy2", choices=("entropy2", "minmax"))
    calibration_batches: int = _opt(32, min=1, max=100000)
    sanitize: bool = _opt(True)
    recover_target: float = _opt(0.99, min=0.01, max=1.0)


@dataclass(frozen=True)
class LlmSettings:
    base_url: str = _opt("https://api.openai.com/v1", kind="url")
    model: str = _opt("gpt-4o-mini")
    api_key_env: str = _opt("OPENAI_API_KEY", kind="envname")
    language: str = _opt("en", choices=("en", "zh"))
    temperature: float = _opt(0.8, min=0.0, max=2.0)
    max_tokens: int = _opt(800, min=1, max=1_000_000)
    timeout_s: float = _opt(60.0, min=0.1, max=3600.0)
    retries: int = _opt(3, min=0, max=10)
    retry_backoff_s: float = _opt(1.0, min=0.0, max=60.0)
    vision: bool = _opt(False)
    max_story_chars: int = _opt(200_000, min=100, max=50_000_000)

    def api_key(self) -> Secret:
        """The key from the env var named by ``api_key_env`` (empty when unset)."""
        return Secret(os.environ.get(self.api_key_env, "") if self.api_key_env else "")


@dataclass(frozen=True)
class ImagegenSettings:
    provider: str = _opt("openai", choices=("openai", "nvidia", "sdwebui"))
    base_url: str = _opt("https://api.openai.com/v1", kind="url")
    model: str = _opt("gpt-image-1")
    api_key_env: str = _opt("OPENAI_API_KEY", kind="envname")
    size: str = _opt("1024x1024", kind="size")
    steps: int = _opt(30, min=1, max=500)
    seed: int = _opt(-1, min=-1, max=2**32 - 1)
    guidance: float = _opt(0.0, min=0.0, max=50.0)
    negative: str = _opt("")
    timeout_s: float = _opt(120.0, min=0.1, max=3600.0)
    retries: int = _opt(2, min=0, max=10)

    def api_key(self) -> Secret:
        return Secret(os.environ.get(self.api_key_env, "") if self.api_key_env else "")


@dataclass(frozen=True)
class GuardrailsSettings:
    enabled: bool = _opt(True)
    config: Path = _opt("rails", path=True)
    embedding_model: str = _opt("text-embedding-3-small")
    speculative: bool = _opt(True)


@dataclass(frozen=True)
class TuiSettings:
    theme: str = _opt("textual-dark")
    # how pictures are drawn: auto (Kitty/Sixel when the terminal has them, else half-blocks) or forced
    previews: str = _opt("auto", choices=("auto", "tgp", "sixel", "halfcell", "unicode", "off"))
    # the file tree's icons: auto (emoji where the terminal is known to draw them), emoji, plain
    icons: str = _opt("auto", choices=("auto", "emoji", "plain"))
    start_screen: str = _opt("infer", choices=("engines", "infer", "story", "imagine", "history"))
    board_strip: bool = _opt(True)  # the one-line board strip (power, GPU, temperature, RAM) on every screen
    # action id -> key, e.g. {screen_infer = "f2"}: remaps the app's bindings.
    keys: dict[str, Any] = field(default_factory=dict, metadata={"kind": "keymap"})


@dataclass(frozen=True)
class CaptureSettings:
    # camera index ("0"), video file, rtsp:// URL or GStreamer pipeline ("... ! appsink"); "" = none
    source: str = _opt("")
    frames: int = _opt(1, min=1, max=8)  # frames one capture grabs (a burst of up to 8)
    preview_fps: float = _opt(5.0, min=0.5, max=30.0)  # how often the TUI's capture preview refreshes


@dataclass(frozen=True)
class ServeSettings:
    max_sessions: int = _opt(1, min=1, max=64)  # browser tabs served at once (each runs its own app)


@dataclass(frozen=True)
class Settings:
    paths: PathsSettings = field(default_factory=PathsSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    build: BuildSettings = field(default_factory=BuildSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    imagegen: ImagegenSettings = field(default_factory=ImagegenSettings)
    guardrails: GuardrailsSettings = field(default_factory=GuardrailsSettings)
    tui: TuiSettings = field(default_factory=TuiSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    #: the file these came from (None: built-in defaults)
    source: Path | None = None
    #: how that file was found: --settings | $NCANVAS_SETTINGS | checkout | user | defaults
    origin: str = "defaults"

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some keys of one section changed (e.g. CLI overrides)."""
        new = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: new})

    def public_dict(self) -> dict[str, Any]:
        """The settings as plain data, safe to store (holds env-var names, never keys)."""
        out: dict[str, Any] = {}
        from ncanvas_tui.endpoints import redact_url

        for sec in _SECTIONS:
            out[sec] = {k: (str(v) if isinstance(v, Path) else redact_url(v) if k == "base_url"
                            else _redact_source(v) if (sec, k) == ("capture", "source") else v)
                        for k, v in dataclasses.asdict(getattr(self, sec)).items()}
        return out


_SECTIONS: dict[str, Any] = {
    "paths": PathsSettings, "inference": InferenceSettings, "build": BuildSettings, "llm": LlmSettings,
    "imagegen": ImagegenSettings, "guardrails": GuardrailsSettings, "tui": TuiSettings,
    "capture": CaptureSettings, "serve": ServeSettings,
}


def _redact_source(source: str) -> str:
    from ncanvas_tui.endpoints import redact

    return redact(source) if source else source

_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _check_value(where: str, f: dataclasses.Field[Any], value: Any, base: Path) -> Any:
    meta = f.metadata
    default = _default(f)
    want = type(default)
    if isinstance(default, Path) or meta.get("path"):
        want = str
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is int and isinstance(value, bool) or not isinstance(value, want):
        raise SettingsError(f"{where} must be {_TYPE_NAMES.get(want, want.__name__)}, "
                            f"got {type(value).__name__} {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise SettingsError(f"{where} must be one of {' | '.join(meta['choices'])}, got {value!r}")
    if "min" in meta and value < meta["min"] or "max" in meta and value > meta["max"]:
        raise SettingsError(f"{where} must be between {meta.get('min')} and {meta.get('max')}, got {value!r}")
    kind = meta.get("kind")
    if kind == "batch":
        from ncanvas_tui.profile import batch_profile

        if len(value) != 3:  # a settings file names all three (one size is the command line's shorthand)
            raise SettingsError(f"{where} must be [min, opt, max], got {value!r}")
        try:
            value = list(batch_profile(value))
        except ValueError as e:
            raise SettingsError(f"{where}: {e}") from None
    elif kind == "url":
        if not re.match(r"^https?://[^\s/]+", value):
            raise SettingsError(f"{where} must be an http(s) URL, got {value!r}")
        value = value.rstrip("/")
    elif kind == "envname":
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise SettingsError(f"{where} must be the NAME of an environment variable (keys never live in "
                                f"files), got something that is not a variable name")
    elif kind == "size":
        if not re.fullmatch(r"[1-9][0-9]{1,4}x[1-9][0-9]{1,4}", value):
            raise SettingsError(f"{where} must be WIDTHxHEIGHT such as 1024x1024, got {value!r}")
    elif kind == "keymap":
        for k, v in value.items():
            if not isinstance(v, str) or not v:
                raise SettingsError(f"{where}.{k} must be a key name string such as \"f2\"")
    if meta.get("path"):
        p = Path(value).expanduser()
        value = p if p.is_absolute() else (base / p)
    return value


def _default_path(section: str, name: str, f: dataclasses.Field[Any]) -> Path:
    """A path key's default: the same whichever file (if any) left it out."""
    if (section, name) == ("guardrails", "config"):
        return resources.bundled_rails()
    p = Path(str(f.default)).expanduser()
    return p if p.is_absolute() else resources.defaults_base() / p


def _build_section(name: str, data: Any, origin: str, base: Path) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(data, dict):
        raise SettingsError(f"{origin}: [{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise SettingsError(f"{origin}: unknown key [{name}].{key} (known: {', '.join(fields)})")
        values[key] = _check_value(f"{origin}: [{name}].{key}", fields[key], value, base)
    for fname, f in fields.items():  # path keys the file leaves out: their defaults, never beside the file
        if fname not in values and f.metadata.get("path"):
            values[fname] = _default_path(name, fname, f)
    return cls(**values)


def from_dict(data: dict[str, Any], origin: str = "<settings>", base: Path | None = None) -> Settings:
    """Validate a parsed TOML document into ``Settings``. Relative paths in ``data`` are relative
    to ``base`` (default: the current folder); keys it leaves out take their defaults."""
    base = base or Path.cwd()
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTIONS:
            raise SettingsError(f"{origin}: unknown section [{name}] (known: {', '.join(_SECTIONS)})")
        sections[name] = _build_section(name, value, origin, base)
    for name in _SECTIONS:
        sections.setdefault(name, _build_section(name, {}, origin, base))
    return Settings(**sections)


def _toml_error(path: Path, err: Exception, text: str = "") -> SettingsError:
    line = getattr(err, "lineno", None)
    col = getattr(err, "colno", None)
    msg = str(getattr(err, "msg", "") or err)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        msg = msg[: m.start()].strip()
    elif "(at end of document)" in msg:
        msg = msg.replace("(at end of document)", "").strip()
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    return SettingsError(f"{path}:{line}:{col}: TOML syntax error: {msg}")


def locate(explicit: str | os.PathLike[str] | None = None) -> tuple[Path | None, str]:
    """Which settings file to read and how it was found (see the module docstring)."""
    if explicit:
        return Path(explicit).expanduser(), "--settings"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), f"${ENV_VAR}"
    root = resources.checkout_root()
    if root is not None and (root / "settings.toml").is_file():
        return root / "settings.toml", "checkout"
    user = resources.user_config_file()
    if user.exists():  # a FIFO or folder there is refused by load(), not skipped silently
        return user, "user"
    return None, "defaults"


def resolve_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Which settings file to read (None: built-in defaults)."""
    return locate(explicit)[0]


def load(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Load and validate the settings. Raises ``SettingsError`` with a one-line message."""
    path, how = locate(explicit)
    if path is None:
        return from_dict({})
    try:
        raw = read_regular_file(path, what="settings file", limit=MAX_FILE_BYTES)
    except NcanvasError as e:
        raise SettingsError(str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _toml_error(path, e, text) from None
    settings = from_dict(data, origin=str(path), base=path.resolve().parent)
    return dataclasses.replace(settings, source=path, origin=how)
