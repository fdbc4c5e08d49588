"""``ncanvas history list|show|export|delete`` through the real entry point: a whole journey
(infer -> story -> picture) reads back as one run; a corrupt database is an error naming it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import DEFAULT_ONNX, PHOTOS, REPO
from fakeimages import KEY, KEY_ENV, FakeImages, imagegen_settings


@pytest.fixture
def run(cli, workdir):
    def go(*args: str):
        return cli(*args, env={"PYTHONPATH": str(REPO), KEY_ENV: KEY}, cwd=workdir, timeout=60)
    return go


def one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.skipif(not DEFAULT_ONNX.is_file() or not PHOTOS.is_dir(),
                    reason="bundled model or photos missing")
def test_journey_infer_story_picture_exports_as_one_run(run, settings_path, settings, workdir):
    r = run("infer", str(workdir / "pictures" / "coffee.jpg"), str(workdir / "pictures" / "flower.jpg"),
            "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]

    from ncanvas_tui.history import open_history

    open_history(settings).attach_story(run_id, {"story": "The espresso whispered to the daisy.",
                                                 "labels": ["espresso", "daisy"], "style": "Fantasy"})
    with FakeImages() as fake:
        imagegen_settings(settings_path, "openai", fake.url)
        r = run("imagine", "--prompt", "an espresso cup among daisies", "--run", str(run_id), "--json",
                "--settings", str(settings_path))
        assert r.returncode == 0, r.stderr
        picture = json.loads(r.stdout)
    assert picture["run_id"] == run_id

    listed = run("history", "list", "--settings", str(settings_path))
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.strip().startswith(str(run_id)))
    assert "espresso" in row and "daisy" in row and " 2 " in row and "The espresso whispered" in row
    assert picture["abs_path"] in listed.stdout

    data = json.loads(run("history", "list", "--json", "--settings", str(settings_path)).stdout)
    assert data["runs"][0]["steps"] == {"inference": 1, "story": 1, "picture": 1}

    md = run("history", "export", str(run_id), "--settings", str(settings_path)).stdout
    assert md.startswith(f"# ncanvas run {run_id}")
    assert "| 1 | espresso | 967 |" in md and "| 1 | daisy | 985 |" in md and md.count("| 5 |") == 2
    assert "The espresso whispered to the daisy." in md
    assert "> an espresso cup among daisies" in md and f"![picture]({picture['abs_path']})" in md

    exported = json.loads(run("history", "export", str(run_id), "--format", "json",
                              "--settings", str(settings_path)).stdout)
    assert exported["id"] == run_id and len(exported["inferences"][0]["results"]) == 2
    assert exported["settings"]["inference"]["backend"] == "onnxruntime"

    shown = run("history", "show", str(run_id), "--settings", str(settings_path))
    assert shown.returncode == 0 and "## Story" in shown.stdout


def test_export_to_a_file_and_delete(run, settings_path, settings, workdir):
    from ncanvas_tui.history import open_history

    run_id = open_history(settings).attach_picture(None, {"prompt": "a fox", "path": "/x/fox.png"})
    target = workdir / "run.md"
    r = run("history", "export", str(run_id), "--out", str(target), "--settings", str(settings_path))
    assert r.returncode == 0 and r.stdout.strip() == str(target)
    assert "> a fox" in target.read_text(encoding="utf-8")
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".ncanvas-")] == []

    r = run("history", "delete", str(run_id), "--settings", str(settings_path))
    assert r.returncode == 0 and f"run {run_id} deleted" in r.stdout
    r = run("history", "show", str(run_id), "--settings", str(settings_path))
    assert r.returncode == 2 and f"run {run_id} not found" in one_line(r.stderr)


def test_empty_history(run, settings_path, workdir):
    r = run("history", "list", "--settings", str(settings_path))
    assert r.returncode == 0 and "no runs yet" in r.stdout
    assert not (workdir / "output" / "history.sqlite3").exists()
    r = run("history", "show", "1", "--settings", str(settings_path))
    assert r.returncode == 2 and "run 1 not found" in one_line(r.stderr)


def test_corrupt_database_is_named_and_kept(run, settings_path, workdir):
    db = workdir / "output" / "history.sqlite3"
    db.write_bytes(b"\x00garbage, not sqlite" * 50)
    for args in (("list",), ("show", "1"), ("export", "1", "--format", "json")):
        r = run("history", *args, "--settings", str(settings_path))
        assert r.returncode == 2, args
        line = one_line(r.stderr)
        assert line.startswith(f"ncanvas: error: {db}: history database is corrupt or not a database")
        assert "left untouched" in line
    assert db.read_bytes() == b"\x00garbage, not sqlite" * 50


def test_database_written_by_another_program(run, settings_path, workdir):
    db = workdir / "output" / "history.sqlite3"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE notes (t TEXT)")
    con.commit()
    con.close()
    r = run("history", "list", "--settings", str(settings_path))
    assert r.returncode == 2
    assert f"{db}: is an SQLite database but not an ncanvas history" in one_line(r.stderr)
    assert Path(db).is_file()


def test_export_never_overwrites_an_existing_file(run, settings_path, settings, workdir):
    from ncanvas_tui.history import open_history

    run_id = open_history(settings).attach_picture(None, {"prompt": "a fox", "path": "/x/fox.png"})
    target = workdir / "mine.md"
    target.write_text("my own notes\n")
    r = run("history", "export", str(run_id), "--out", str(target), "--settings", str(settings_path))
    assert r.returncode == 2
    assert one_line(r.stderr) == (f"ncanvas: error: {target}: already exists; the export never overwrites "
                                  "a file (choose another --out, or leave it out for stdout)")
    assert target.read_text() == "my own notes\n"
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith((".ncanvas-", "mine"))) == ["mine.md"]
    # a new name is written whole, with the mode a plain open() gives (not mkstemp's 0600)
    fresh = workdir / "fresh.md"
    r = run("history", "export", str(run_id), "--out", str(fresh), "--settings", str(settings_path))
    assert r.returncode == 0 and r.stdout.strip() == str(fresh)
    from ncanvas_tui.files import FILE_MODE

    assert fresh.stat().st_mode & 0o777 == FILE_MODE and "> a fox" in fresh.read_text()


def damage(db: Path) -> None:
    """Corrupt pages that ordinary queries never touch: a table of padding whose leaf page gets an
    invalid page type. Reads and inserts on runs/steps still work; quick_check fails."""
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE padding (x TEXT)")
    con.executemany("INSERT INTO padding VALUES (?)", [("y" * 500,) for _ in range(50)])
    con.commit()
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'padding'").fetchone()[0]
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(db.read_bytes())
    assert data[root * page] == 0x0D  # the first leaf page after the interior root
    data[root * page] = 0x11
    db.write_bytes(bytes(data))
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] >= 1
    with pytest.raises(sqlite3.DatabaseError):
        con.execute("PRAGMA quick_check").fetchall()
    con.close()


@pytest.mark.skipif(not DEFAULT_ONNX.is_file(), reason="bundled model missing")
def test_damaged_history_is_never_written_into(run, settings_path, settings, workdir):
    from ncanvas_tui.history import open_history

    open_history(settings).attach_story(None, {"story": "before the damage"})
    db = workdir / "output" / "history.sqlite3"
    damage(db)
    before = db.read_bytes()
    r = run("infer", str(workdir / "pictures" / "coffee.jpg"), "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    fresh = workdir / "output" / "history-2.sqlite3"
    line = one_line(r.stderr)
    assert f"{db}: history database fails its integrity check" in line and str(fresh) in line
    assert db.read_bytes() == before                      # byte for byte
    # the run reads back, from the fresh history beside the damaged one
    r = run("history", "show", str(run_id), "--json", "--settings", str(settings_path))
    assert r.returncode == 0 and "fails its integrity check" in one_line(r.stderr)
    assert json.loads(r.stdout)["inferences"][0]["results"][0]["top"][0]["label"] == "espresso"
    r = run("history", "list", "--json", "--settings", str(settings_path))
    assert json.loads(r.stdout)["history"] == str(fresh)
    assert db.read_bytes() == before
