"""``ncanvas imagine`` through the real entry point (a subprocess) against REAL loopback image servers:
the picture's path on stdout, the JSON contract, one stderr line + exit 2 on every failure, the prompt
kept in the history, ``--story`` distilled by the LLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from fakeimages import KEY, KEY_ENV, Error, FakeImages, NotImage, base_url_for, closed_port, imagegen_settings
from PIL import Image

PROVIDERS = ["openai", "nvidia", "sdwebui"]


@pytest.fixture
def fake():
    with FakeImages() as f:
        yield f


@pytest.fixture
def run(cli, workdir):
    """``ncanvas ARGS`` in ``workdir`` with the test key set."""
    def go(*args: str, key: bool = True):
        env = {"PYTHONPATH": str(REPO)}
        if key:
            env[KEY_ENV] = KEY
        return cli(*args, env=env, cwd=workdir, timeout=60)
    return go


def only_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def pictures(workdir: Path) -> list[Path]:
    folder = workdir / "output" / "images"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_prints_the_path_of_a_real_picture(provider, fake, run, settings_path, workdir):
    imagegen_settings(settings_path, provider, base_url_for(fake, provider))
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a red fox in the snow")
    assert r.returncode == 0, r.stderr
    printed = r.stdout.strip()
    assert printed.startswith("output/images/") and printed.endswith(".png") and "\n" not in printed
    with Image.open(workdir / printed) as im:
        assert im.format == "PNG" and im.size == (64, 48)
    assert len(fake.image_calls()) == 1


def test_json_contract_and_history(fake, run, settings_path, workdir):
    imagegen_settings(settings_path, "openai", fake.url)
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a lighthouse", "--style", "Film noir",
            "--negative", "text", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["prompt"] == "a lighthouse, in Film noir style"
    assert out["provider"] == "openai"
    assert out["path"].startswith("output/images/") and out["path"].endswith(".png")
    assert (workdir / out["path"]).is_file() and Path(out["abs_path"]) == (workdir / out["path"]).resolve()
    assert isinstance(out["run_id"], int)

    show = run("history", "show", str(out["run_id"]), "--json", "--settings", str(settings_path))
    assert show.returncode == 0, show.stderr
    pic = json.loads(show.stdout)["pictures"][0]
    assert pic["prompt"] == "a lighthouse, in Film noir style" and pic["negative"] == "text"
    assert pic["path"] == out["abs_path"]
    assert KEY not in show.stdout


def test_second_run_never_overwrites(fake, run, settings_path, workdir):
    imagegen_settings(settings_path, "sdwebui", fake.root)
    mine = workdir / "cover.png"
    mine.write_bytes(b"my own file")
    r1 = run("imagine", "--settings", str(settings_path), "--prompt", "x", "--out", str(mine))
    r2 = run("imagine", "--settings", str(settings_path), "--prompt", "x", "--out", str(mine))
    assert r1.returncode == r2.returncode == 0
    assert mine.read_bytes() == b"my own file"
    assert [Path(r1.stdout.strip()).name, Path(r2.stdout.strip()).name] == ["cover-2.png", "cover-3.png"]


@pytest.mark.parametrize("provider,behaviour,words", [
    ("openai", Error(401, "Incorrect API key provided"), "401 unauthorized"),
    ("nvidia", Error(429, "slow down", retry_after=0), "429 rate limited"),
    ("sdwebui", Error(500, "CUDA out of memory"), "server error 500: CUDA out of memory"),
    ("sdwebui", NotImage(b"not a png"), "answer is not an image"),
])
def test_failure_is_one_line_exit_2_no_file_prompt_kept(provider, behaviour, words, fake, run, settings_path,
                                                         workdir):
    imagegen_settings(settings_path, provider, base_url_for(fake, provider))
    {"openai": fake.images, "nvidia": fake.genai, "sdwebui": fake.txt2img}[provider].push(behaviour)
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a castle made of cheese")
    assert r.returncode == 2 and r.stdout == ""
    line = only_line(r.stderr)
    assert line.startswith(f"ncanvas: error: {fake.root}/") and words in line
    assert KEY not in r.stderr
    assert pictures(workdir) == []
    assert "prompt kept in history run 1" in line

    show = run("history", "show", "1", "--json", "--settings", str(settings_path))
    pic = json.loads(show.stdout)["pictures"][0]
    assert pic["prompt"] == "a castle made of cheese" and pic["path"] is None and words in pic["error"]


def test_connection_refused(run, settings_path, workdir):
    port = closed_port()
    imagegen_settings(settings_path, "sdwebui", f"http://127.0.0.1:{port}")
    r = run("imagine", "--settings", str(settings_path), "--prompt", "x", "--no-history")
    assert r.returncode == 2
    line = only_line(r.stderr)
    assert f"http://127.0.0.1:{port}/sdapi/v1/txt2img: cannot connect" in line
    assert not (workdir / "output" / "history.sqlite3").exists()  # --no-history


def test_missing_key_of_a_remote_provider_names_the_variable(fake, run, settings_path, workdir):
    imagegen_settings(settings_path, "openai", "https://images.example.com/v1")
    r = run("imagine", "--settings", str(settings_path), "--prompt", "x", key=False)
    assert r.returncode == 2 and r.stdout == ""
    assert only_line(r.stderr) == (f"ncanvas: error: [imagegen].api_key_env: environment variable {KEY_ENV} is "
                                   "not set (the key for https://images.example.com/v1); export it, or set "
                                   "[imagegen].api_key_env = \"\" for a server that needs none")
    assert pictures(workdir) == []


def test_missing_key_of_a_loopback_provider_warns_in_one_line_and_draws(fake, run, settings_path, workdir):
    imagegen_settings(settings_path, "openai", fake.url)
    r = run("imagine", "--settings", str(settings_path), "--prompt", "x", "--no-history", key=False)
    assert r.returncode == 0, r.stderr
    assert only_line(r.stderr) == (f"ncanvas: warning: ${KEY_ENV} is not set; calling {fake.url} without a key "
                                   "(set [imagegen].api_key_env = \"\" for a server that needs none)")
    assert len(pictures(workdir)) == 1 and len(fake.image_calls()) == 1


def test_bad_arguments(fake, run, settings_path):
    imagegen_settings(settings_path, "sdwebui", fake.root)
    assert run("imagine", "--settings", str(settings_path)).returncode == 2                 # neither source
    assert run("imagine", "--settings", str(settings_path), "--prompt", "  ").returncode == 2
    r = run("imagine", "--settings", str(settings_path), "--prompt", "x", "--run", "42")
    assert r.returncode == 2 and "run 42 not found" in only_line(r.stderr)
    r = run("imagine", "--settings", str(settings_path), "--story", "nope.md")
    assert r.returncode == 2 and "nope.md" in only_line(r.stderr)
    assert fake.image_calls() == []


def test_story_is_distilled_by_the_llm_and_joins_its_run(fake, run, settings_path, workdir, settings):
    from ncanvas_tui.history import open_history
    from ncanvas_tui.story.model import Story
    from ncanvas_tui.story.storyfile import save_story

    run_id = open_history(settings).attach_story(None, {"story": "Once upon a time...", "labels": ["daisy"]})
    story_file = save_story(settings, Story(text="Once upon a time a daisy met a robot.", labels=["daisy"],
                                            style="Fantasy", theme="A Chance Encounter", run_id=run_id))
    with open(settings_path, "a", encoding="utf-8") as f:
        f.write(f'\n[llm]\nbase_url = "{fake.url}"\nmodel = "fake-model"\napi_key_env = "{KEY_ENV}"\n'
                'retries = 0\ntimeout_s = 10\n')
    imagegen_settings(settings_path, "sdwebui", fake.root)
    r = run("imagine", "--settings", str(settings_path), "--story", str(story_file), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["source"] == "story" and out["run_id"] == run_id
    assert "watercolor daisy field" in out["prompt"]                  # what the fake LLM distilled
    assert fake.image_calls()[0].body["prompt"] == out["prompt"]      # ... is what was drawn
    distil = [c for c in fake.calls() if "text-to-image prompt" in c.text.lower()]
    assert distil and "a daisy met a robot" in distil[0].text
    run_data = open_history(settings).get_run(run_id)
    assert run_data["pictures"][0]["path"] == out["abs_path"] and len(run_data["stories"]) == 1


def test_history_problem_never_loses_the_picture(fake, run, settings_path, workdir):
    imagegen_settings(settings_path, "sdwebui", fake.root)
    db = workdir / "output" / "history.sqlite3"
    db.write_bytes(b"garbage" * 100)
    r = run("imagine", "--settings", str(settings_path), "--prompt", "x")
    assert r.returncode == 0
    assert (workdir / r.stdout.strip()).is_file()
    assert "warning: picture not saved to history" in r.stderr and str(db) in r.stderr
    assert db.read_bytes() == b"garbage" * 100


def test_seed_steps_guidance_flags_and_the_seed_used_in_json_and_history(fake, run, settings_path):
    imagegen_settings(settings_path, "sdwebui", fake.root, seed=-1)
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a fox", "--json")
    assert r.returncode == 0, r.stderr
    random_seed = json.loads(r.stdout)["seed"]
    assert isinstance(random_seed, int) and random_seed == fake.image_calls()[-1].body["seed"] > 0
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a fox", "--seed", "42", "--steps", "9",
            "--guidance", "6.5", "--negative", "fog", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    body = fake.image_calls()[-1].body
    assert out["seed"] == 42 == body["seed"] and body["steps"] == 9 and body["cfg_scale"] == 6.5
    assert body["negative_prompt"] == "fog"
    shown = run("history", "show", str(out["run_id"]), "--settings", str(settings_path), "--json")
    assert '"seed": 42' in shown.stdout
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a fox", "--steps", "0")
    assert r.returncode == 2 and "--steps" in r.stderr


def test_openai_says_once_it_has_no_seed_and_draws_anyway(fake, run, settings_path):
    imagegen_settings(settings_path, "openai", fake.url, seed=-1)
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a fox", "--seed", "42", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("has no seed") == 1 and json.loads(r.stdout)["seed"] is None
