"""``ncanvas infer --capture SOURCE [--frames N]`` through the real entry point: frames come from a
video file the test writes (one shipped photo per frame), land under ``output/captures/``, are
classified and recorded in History. A missing camera, a bad URL and a pipeline OpenCV cannot open
each get one line; credentials in an RTSP URL never show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PHOTOS

cv2 = pytest.importorskip("cv2")
np = pytest.importorskip("numpy")

#: photo -> the ImageNet label the bundled model gives it (see test_infer.py)
EXPECTED = [("flower.jpg", "daisy"), ("coffee.jpg", "espresso"), ("china.jpg", "palace")]


def write_video(path: Path, names: list[str], size: tuple[int, int] = (640, 480)) -> Path:
    """An MJPEG .avi, one frame per photo (centre-cropped to 4:3, as a camera sees it), in order."""
    from PIL import Image, ImageOps

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, size)
    assert writer.isOpened(), "this OpenCV cannot write MJPEG"
    for name in names:
        rgb = np.asarray(ImageOps.fit(Image.open(PHOTOS / name).convert("RGB"), size))
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def video(workdir: Path) -> Path:
    return write_video(workdir / "clip.avi", [n for n, _ in EXPECTED])


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_burst_from_a_video_file_is_saved_classified_and_in_history(cli, settings_path, workdir, video):
    r = cli("infer", "--capture", str(video), "--frames", "3", "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    saved = sorted((workdir / "output" / "captures").glob("*.jpg"))
    assert len(saved) == 3
    images = [x["image"] for x in out["results"]]
    assert sorted(images) == [str(p) for p in saved]
    labels = [x["top"][0]["label"] for x in out["results"]]
    assert labels == [lab for _, lab in EXPECTED]  # frame i is photo i, in order
    assert out["capture"] == {"source": str(video), "frames": 3}

    listed = cli("history", "list", "--json", "--settings", str(settings_path))
    assert listed.returncode == 0, listed.stderr
    assert str(out["run_id"]) in listed.stdout
    shown = cli("history", "show", str(out["run_id"]), "--settings", str(settings_path))
    assert shown.returncode == 0, shown.stderr
    assert "espresso" in shown.stdout and saved[0].name in shown.stdout


def test_capture_source_from_settings_and_one_frame_by_default(cli, settings_path, workdir, video):
    settings_path.write_text(settings_path.read_text() + f'\n[capture]\nsource = "{video}"\n')
    r = cli("infer", "--capture", "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["top"][0]["label"] for x in out["results"]] == ["daisy"]
    assert len(list((workdir / "output" / "captures").glob("*.jpg"))) == 1


def test_missing_camera_bad_url_and_unopenable_pipeline_are_one_line(cli, settings_path, workdir):
    cases = {
        "97": "capture source camera 97: no camera there",
        "rtsp://alice:s3cr3tpw@127.0.0.1:9/stream": "capture source rtsp://***@127.0.0.1:9/stream: the stream "
                                                    "could not be opened",
        "videotestsrc num-buffers=1 ! nosuchelement ! appsink": "capture source videotestsrc num-buffers=1 ! "
                                                               "nosuchelement ! appsink:",
        str(workdir / "nope.mp4"): "no such video file or device",
        str(PHOTOS / "SOURCES.md"): "OpenCV cannot read it as a video",
    }
    for source, expected in cases.items():
        r = cli("infer", "--capture", source, "--settings", str(settings_path), timeout=60)
        assert r.returncode == 2, (source, r.stdout, r.stderr)
        line = one_line(r.stderr)
        assert line.startswith("ncanvas: error: ") and expected in line, line
        assert "s3cr3tpw" not in r.stderr + r.stdout
    assert not list((workdir / "output").glob("captures/*.jpg"))
    assert not (workdir / "output" / "history.sqlite3").exists()


def test_frames_out_of_range_and_no_input_are_usage_errors(cli, settings_path, video):
    r = cli("infer", "--capture", str(video), "--frames", "9", "--settings", str(settings_path))
    assert r.returncode == 2 and "--frames: must be 1..8, got 9" in one_line(r.stderr)
    r = cli("infer", "--settings", str(settings_path))
    assert r.returncode == 2 and "required: IMAGE (or --capture SOURCE" in one_line(r.stderr)
    r = cli("infer", "--capture", "--settings", str(settings_path))  # no [capture].source either
    assert r.returncode == 2 and "no capture source" in one_line(r.stderr)


def test_rtsp_credentials_are_masked_in_settings_shown_and_stored():
    from ncanvas_tui.capture import describe
    from ncanvas_tui.settings import from_dict

    url = "rtsp://admin:hunter22x@cam.local:554/live?token=abcdef123"
    assert describe(url) == "rtsp://***@cam.local:554/live?token=***"
    pipe = f"rtspsrc location={url} ! decodebin ! videoconvert ! appsink"
    assert "hunter22x" not in describe(pipe) and "abcdef123" not in describe(pipe)
    stored = from_dict({"capture": {"source": url}}).public_dict()["capture"]["source"]
    assert "hunter22x" not in stored and "abcdef123" not in stored


def test_end_of_video_is_one_line(cli, settings_path, workdir):
    short = write_video(workdir / "short.avi", ["flower.jpg"])
    r = cli("infer", "--capture", str(short), "--frames", "4", "--settings", str(settings_path))
    assert r.returncode == 2 and "no frame came" in one_line(r.stderr)
    assert not list((workdir / "output").glob("captures/*.jpg"))
