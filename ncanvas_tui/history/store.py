"""The SQLite history: runs and their steps (inference, story, picture).

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION``)::

    runs(id, created, updated, settings)          -- settings: Settings.public_dict() as JSON
    steps(id, run_id -> runs.id, kind, created, data)
                                                  -- kind: inference | story | picture; data: JSON

A connection is opened per operation, so one ``HistoryStore`` may be used from
any thread (the TUI's workers, the CLI). Writes are transactions; the database
is in WAL mode so a reader never blocks the writer. A file that is not an
ncanvas history (corrupt, foreign, from a newer ncanvas) is an error naming the
file and is never deleted or rewritten. Secrets never reach the database: step
data is scrubbed of the configured API keys and of key-like fields.

A history that opens but fails ``PRAGMA quick_check`` (damaged pages: ordinary queries
may still work, writes could spread the damage and be unreadable) is never written
into, nor read: it stays byte for byte, one warning line names it, and this store uses
the first healthy or new file beside it (``history-2.sqlite3``, ``history-3.sqlite3``, ...),
so runs go on being recorded and read back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ncanvas_tui.errors import NcanvasError
from ncanvas_tui.settings import Settings

HISTORY_FILE = "history.sqlite3"
SCHEMA_VERSION = 1
KINDS = ("inference", "story", "picture")
_PLURAL = {"inference": "inferences", "story": "stories", "picture": "pictures"}

_SCHEMA = """
CREATE TABLE runs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    created  TEXT NOT NULL,
    updated  TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE steps (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind    TEXT NOT NULL CHECK (kind IN ('inference', 'story', 'picture')),
    created TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX steps_run ON steps(run_id, id);
"""

#: keys whose values are never stored, whatever step data they turn up in
_SECRET_KEYS = {"api_key", "apikey", "authorization", "password", "secret", "token", "access_token"}
_MASK = "********"
_INIT_LOCK = threading.Lock()
log = logging.getLogger("ncanvas.history")
#: damaged files already reported in this process (one warning each, not one per operation)
_WARNED: set[str] = set()
#: how many files beside a damaged history are tried before giving up
MAX_FALLBACKS = 20


class HistoryError(NcanvasError):
    """The history database cannot be opened, read or written (names the file)."""


def history_path(settings: Settings) -> Path:
    return Path(settings.paths.output) / HISTORY_FILE


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(obj: Any) -> Any:
    """A result object or dict -> plain JSON-able data."""
    if hasattr(obj, "as_dict") and callable(obj.as_dict):
        obj = obj.as_dict()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return str(obj)


class HistoryStore:
    """The history of ``settings`` (``[paths].output/history.sqlite3``), or of ``path``."""

    def __init__(self, settings: Settings, path: str | Path | None = None) -> None:
        self.settings = settings
        #: the file asked for; ``path`` is the one used (another when this one is damaged)
        self.requested = Path(path) if path is not None else history_path(settings)
        self.path = self.requested
        self._secrets = [s for s in (settings.llm.api_key().get(), settings.imagegen.api_key().get()) if s]
        self._ready = False
        self._checked = False
        #: one line when a damaged history was set aside (also logged as a warning), else None
        self.notice: str | None = None

    def __repr__(self) -> str:
        return f"HistoryStore({str(self.path)!r})"

    def __enter__(self) -> HistoryStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between operations; kept so callers can use ``with``."""

    def exists(self) -> bool:
        return self.path.is_file()

    # -- connection ---------------------------------------------------------------------------------

    def _fail(self, what: str, err: BaseException) -> HistoryError:
        msg = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, sqlite3.DatabaseError) and ("not a database" in msg or "malformed" in msg):
            return HistoryError(f"{self.path}: history database is corrupt or not a database ({msg}); "
                                "it was left untouched: move it aside to start a new history")
        return HistoryError(f"{self.path}: cannot {what} the history database: {msg}")

    def _choose(self) -> None:
        """Pick the file to use: the requested one unless it fails its integrity check, then the first
        healthy or absent ``history-N.sqlite3`` beside it. Checked once per store."""
        if self._checked:
            return
        damaged: list[tuple[Path, str]] = []
        path = self.requested
        for n in range(2, MAX_FALLBACKS + 2):
            problem = _damage(path)
            if problem is None:
                break
            damaged.append((path, problem))
            path = self.requested.with_name(f"{self.requested.stem}-{n}{self.requested.suffix}")
        else:
            first = damaged[0][0]
            raise HistoryError(f"{first}: history database fails its integrity check, and so do "
                               f"{MAX_FALLBACKS} files beside it; move them aside to start a new history")
        self.path = path
        self._checked = True
        if damaged:
            bad, problem = damaged[0]
            self.notice = (f"{bad}: history database fails its integrity check ({problem}); it was left "
                           f"untouched (older runs may be recovered from it with sqlite3 .recover); "
                           f"runs are recorded in {path}")
            if str(bad) not in _WARNED:
                _WARNED.add(str(bad))
                log.warning("%s", self.notice)

    @contextlib.contextmanager
    def _db(self, what: str, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        """A connection (None when the file is absent and ``create`` is false); errors -> HistoryError."""
        self._choose()
        if not create and not self.path.exists():
            yield None
            return
        if self.path.exists() and not self.path.is_file():
            raise HistoryError(f"{self.path}: history database path is not a file")
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise HistoryError(f"{self.path.parent}: cannot create the output folder for the history: "
                                   f"{e.strerror}") from None
        try:
            con = sqlite3.connect(self.path, timeout=10.0)
        except sqlite3.Error as e:
            raise self._fail("open", e) from None
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA foreign_keys = ON")
            self._prepare(con)
            yield con
        except sqlite3.Error as e:
            raise self._fail(what, e) from None
        finally:
            con.close()

    def _prepare(self, con: sqlite3.Connection) -> None:
        """Check the schema version; create the schema in a fresh file."""
        if self._ready:
            return
        with _INIT_LOCK:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                con.execute("PRAGMA journal_mode = WAL")  # persistent; readers never block the writer
                level = con.isolation_level
                con.isolation_level = None                 # explicit transaction: two creators never race
                con.execute("BEGIN IMMEDIATE")
                try:
                    version = con.execute("PRAGMA user_version").fetchone()[0]
                    if version == 0:
                        rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                        tables = ", ".join(sorted(r[0] for r in rows))
                        if tables:
                            raise HistoryError(f"{self.path}: is an SQLite database but not an ncanvas "
                                               f"history (tables: {tables}); it was left untouched")
                        for stmt in filter(str.strip, _SCHEMA.split(";")):
                            con.execute(stmt)
                        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                finally:
                    con.isolation_level = level
            elif version > SCHEMA_VERSION:
                raise HistoryError(f"{self.path}: history schema version {version} is newer than this "
                                   f"ncanvas understands ({SCHEMA_VERSION}); upgrade ncanvas")
            # version < SCHEMA_VERSION: migrations go here when the schema changes
            self._ready = True

    # -- writing ------------------------------------------------------------------------------------

    def _scrub(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: (_MASK if k.lower().replace("-", "_") in _SECRET_KEYS and v else self._scrub(v))
                    for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._scrub(v) for v in obj]
        if isinstance(obj, str):
            for s in self._secrets:
                if s in obj:
                    obj = obj.replace(s, _MASK)
        return obj

    def _add_step(self, run_id: int | None, kind: str, data: Any) -> int:
        payload = json.dumps(self._scrub(_plain(data)), ensure_ascii=False)
        stamp = now_utc()
        with self._db("write to", create=True) as con:
            assert con is not None
            with con:
                if run_id is None:
                    settings = json.dumps(self._scrub(self.settings.public_dict()), ensure_ascii=False)
                    cur = con.execute("INSERT INTO runs (created, updated, settings) VALUES (?, ?, ?)",
                                      (stamp, stamp, settings))
                    run_id = int(cur.lastrowid or 0)
                else:
                    cur = con.execute("UPDATE runs SET updated = ? WHERE id = ?", (stamp, int(run_id)))
                    if cur.rowcount == 0:
                        raise HistoryError(f"{self.path}: run {run_id} not found in the history")
                con.execute("INSERT INTO steps (run_id, kind, created, data) VALUES (?, ?, ?, ?)",
                            (run_id, kind, stamp, payload))
        return int(run_id)

    def record_inference(self, result: Any, run_id: int | None = None) -> int:
        """Save a classification (``InferResult`` or its ``as_dict()``: model, backend, precision,
        results, errors, timing_ms, ...) with the board's run conditions (``conditions``, unless the
        result has them). Starts a new run unless ``run_id`` is given. Returns the run id."""
        data = _plain(result)
        if isinstance(data, dict) and "conditions" not in data:
            from ncanvas_tui.board import conditions_snapshot

            data["conditions"] = conditions_snapshot()
        return self._add_step(run_id, "inference", data)

    def attach_story(self, run_id: int | None, story: Any) -> int:
        """Add a story ({"story", "labels", "style", "theme", "language", "blocked", "rail", ...}) to
        ``run_id`` (None: a new run). Returns the run id."""
        return self._add_step(run_id, "story", story)

    def attach_picture(self, run_id: int | None, picture: Any) -> int:
        """Add a picture ({"prompt", "negative", "path", "provider", "model", "size", "seed", ...}; a failed
        attempt has "error" and no "path", so its prompt is never lost) to ``run_id`` (None: a new run)."""
        return self._add_step(run_id, "picture", picture)

    def set_story_path(self, run_id: int, path: str | Path) -> None:
        """Record where the run's latest story was saved (the story step is written before the file)."""
        with self._db("write to", create=False) as con:
            row = None if con is None else con.execute(
                "SELECT id, data FROM steps WHERE run_id = ? AND kind = 'story' ORDER BY id DESC LIMIT 1",
                (int(run_id),)).fetchone()
            if con is None or row is None:
                raise HistoryError(f"{self.path}: run {run_id} has no story in the history")
            data = _loads(row["data"])
            if isinstance(data, dict):
                data["path"] = str(path)
                with con:
                    con.execute("UPDATE steps SET data = ? WHERE id = ?",
                                (json.dumps(data, ensure_ascii=False), row["id"]))

    def delete_run(self, run_id: int) -> None:
        with self._db("write to", create=False) as con:
            if con is not None:
                with con:
                    if con.execute("DELETE FROM runs WHERE id = ?", (int(run_id),)).rowcount:
                        return
        raise HistoryError(f"{self.path}: run {run_id} not found in the history")

    # -- reading ------------------------------------------------------------------------------------

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first: one summary per run (id, created, updated, images, labels, story, prompt,
        picture, picture_error, steps)."""
        with self._db("read", create=False) as con:
            if con is None:
                return []
            runs = con.execute("SELECT id, created, updated FROM runs ORDER BY id DESC LIMIT ?",
                               (max(0, int(limit)),)).fetchall()
            out = []
            for r in runs:
                steps = con.execute("SELECT kind, data FROM steps WHERE run_id = ? ORDER BY id",
                                    (r["id"],)).fetchall()
                out.append(_summary(dict(r), [(s["kind"], _loads(s["data"])) for s in steps]))
            return out

    def get_run(self, run_id: int) -> dict[str, Any]:
        """Everything about one run: settings and its inferences, stories and pictures (oldest first)."""
        with self._db("read", create=False) as con:
            row = None
            if con is not None:
                row = con.execute("SELECT id, created, updated, settings FROM runs WHERE id = ?",
                                  (int(run_id),)).fetchone()
            if con is None or row is None:
                raise HistoryError(f"{self.path}: run {run_id} not found in the history")
            run: dict[str, Any] = {"id": row["id"], "created": row["created"], "updated": row["updated"],
                                   "settings": _loads(row["settings"])}
            for kind in KINDS:
                run[_PLURAL[kind]] = []
            for s in con.execute("SELECT id, kind, created, data FROM steps WHERE run_id = ? ORDER BY id",
                                 (int(run_id),)):
                data = _loads(s["data"])
                step = {"step_id": s["id"], "created": s["created"],
                        **(data if isinstance(data, dict) else {"data": data})}
                run[_PLURAL.get(s["kind"], s["kind"])].append(step)
            return run

    def export(self, run_id: int, fmt: str = "md") -> str:
        """The run as Markdown (``md``) or JSON (``json``)."""
        from ncanvas_tui.history.export import to_json, to_markdown

        run = self.get_run(run_id)
        if fmt == "json":
            return to_json(run)
        if fmt in ("md", "markdown"):
            return to_markdown(run)
        raise HistoryError(f"unknown export format {fmt!r} (md | json)")


def _damage(path: Path) -> str | None:
    """Why ``path`` must not be used (its ``PRAGMA quick_check`` findings), or None: absent, healthy,
    or not an SQLite file at all (that is reported by opening it, as before). Read-only: the file is
    never changed by the check."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0)
    except (OSError, sqlite3.Error):
        return None
    try:
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            return None  # not a database / unreadable schema: _db reports it as an error naming the file
        try:
            rows = [str(r[0]) for r in con.execute("PRAGMA quick_check(3)").fetchall()]
        except sqlite3.Error as e:  # the check itself trips over a damaged page
            rows = [str(e) or type(e).__name__]
    finally:
        con.close()
    if rows == ["ok"]:
        return None
    return " ".join("; ".join(rows).split())[:200]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {"unreadable": True}


def _summary(run: dict[str, Any], steps: list[tuple[str, Any]]) -> dict[str, Any]:
    out = {**run, "images": 0, "labels": [], "story": None, "prompt": None, "picture": None,
           "picture_error": None, "steps": {k: 0 for k in KINDS}}
    for kind, data in steps:
        out["steps"][kind] = out["steps"].get(kind, 0) + 1
        if not isinstance(data, dict):
            continue
        if kind == "inference":
            results = data.get("results") or []
            out["images"] += len(results)
            for r in results:
                top = (r.get("top") or [{}])[0] if isinstance(r, dict) else {}
                if top.get("label") and top["label"] not in out["labels"]:
                    out["labels"].append(top["label"])
        elif kind == "story" and data.get("blocked"):  # a refusal is a row too, not a blank one
            out["refused"] = data.get("rail") or "input"
            out["labels"] = out["labels"] or list(data.get("labels") or [])
        elif kind == "story" and (data.get("story") or data.get("text")):
            out["story"] = data.get("story") or data.get("text")
            out["labels"] = out["labels"] or list(data.get("labels") or [])  # a story-only run: its labels
        elif kind == "picture":
            out["prompt"] = data.get("prompt") or out["prompt"]
            if data.get("path"):
                out["picture"], out["picture_error"] = data["path"], None
            elif data.get("error"):
                out["picture_error"] = data["error"]
    return out


def open_history(settings: Settings) -> HistoryStore:
    """The history of these settings (the file is created on the first write)."""
    return HistoryStore(settings)
