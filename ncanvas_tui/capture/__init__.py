"""Pictures straight from a camera: one frame or a burst, saved where History can show them.

A capture source (``[capture].source``, ``ncanvas infer --capture SOURCE``) is one of:

- a camera index (``0`` -> ``/dev/video0``, a USB camera);
- a video file (any container OpenCV's FFmpeg reads);
- a stream URL (``rtsp://user:pass@host/...``, ``http(s)://...``): its credentials are redacted
  wherever the source is shown or stored (``describe``);
- a GStreamer pipeline ending in ``appsink`` (``nvarguscamerasrc ! ... ! appsink`` for a Jetson CSI
  camera): needs an OpenCV built with GStreamer (JetPack's, not pip's).

Capture sources are exempt from the "regular files only" rule (``/dev/video0`` is a device).
OpenCV comes from the optional ``capture`` extra (``opencv-python-headless``) and is imported
only when a source is opened. Each failure is one ``CaptureError`` line naming the source.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncanvas_tui.errors import NcanvasError

#: the most frames one burst grabs (the largest batch a screen shows)
MAX_FRAMES = 8
#: how long opening / reading a network stream may take before it is given up (ms)
STREAM_TIMEOUT_MS = 5000
#: the folder under ``[paths].output`` the frames are saved in
CAPTURES_DIR = "captures"

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class CaptureError(NcanvasError):
    """A capture source that cannot be opened or gives no frame; OpenCV missing."""


def kind(source: str | int) -> str:
    """``camera`` | ``stream`` | ``gstreamer`` | ``file``."""
    text = str(source).strip()
    if re.fullmatch(r"\d{1,3}", text):
        return "camera"
    if "!" in text:
        return "gstreamer"
    if _URL.match(text) and not text.lower().startswith("file://"):
        return "stream"
    return "file"


def describe(source: str | int) -> str:
    """The source as it may be shown or stored: credentials in URLs (also inside a pipeline) masked."""
    from ncanvas_tui.endpoints import redact, redact_url

    text = str(source).strip()
    k = kind(text)
    if k == "camera":
        return f"camera {text}"
    if k == "stream":
        return redact_url(text)
    if k == "gstreamer":
        return redact(text)
    return text


def captures_dir(settings: Any) -> Path:
    return Path(settings.paths.output) / CAPTURES_DIR


def _cv2() -> Any:
    import os

    # OpenCV's own warnings ("can't open camera by index"...) would add lines to the one-line error;
    # OPENCV_LOG_LEVEL=WARNING (or DEBUG) in the environment brings them back
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg quiet: its lines may hold a URL
    try:
        import cv2
    except ImportError:
        raise CaptureError("capture needs OpenCV: pip install 'ncanvas[capture]' (on a Jetson use JetPack's "
                           "python3-opencv through a venv with --system-site-packages, see the README)") from None
    return cv2


def has_gstreamer(cv2: Any) -> bool:
    info = cv2.getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(m and m.group(1).upper() not in ("NO", "OFF"))


class Capture:
    """An open capture source: ``read()`` gives RGB frames (numpy, HxWx3) until ``close()``."""

    def __init__(self, source: str | int) -> None:
        self.source = str(source).strip()
        self.kind = kind(self.source)
        self.name = describe(self.source)
        if not self.source:
            raise CaptureError("no capture source: give --capture SOURCE or set [capture].source "
                               "(a camera index, a video file, an RTSP URL or a GStreamer pipeline)")
        self._cv2 = cv2 = _cv2()
        self._cap = self._open(cv2)

    def _open(self, cv2: Any) -> Any:
        where = f"capture source {self.name}"
        if self.kind == "camera":
            index = int(self.source)
            cap = cv2.VideoCapture(index)
            if not cap.isOpened():
                cap.release()
                raise CaptureError(f"{where}: no camera there (/dev/video{index} is missing, busy or not a "
                                   f"camera)")
            return cap
        if self.kind == "gstreamer":
            if not has_gstreamer(cv2):
                raise CaptureError(f"{where}: this OpenCV was built without GStreamer (pip's "
                                   f"opencv-python-headless is); use JetPack's OpenCV, see the README")
            cap = cv2.VideoCapture(self.source, cv2.CAP_GSTREAMER)
            if not cap.isOpened():
                cap.release()
                raise CaptureError(f"{where}: OpenCV could not open this GStreamer pipeline (it must end "
                                   f"in appsink; try it with gst-launch-1.0)")
            return cap
        if self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
            if not cap.isOpened():
                cap.release()
                raise CaptureError(f"{where}: the stream could not be opened (wrong URL, host down or "
                                   f"not reachable in {STREAM_TIMEOUT_MS // 1000} s)")
            return cap
        path = Path(self.source.removeprefix("file://")).expanduser()
        if not path.exists():
            raise CaptureError(f"{where}: no such video file or device")
        if path.is_dir():
            raise CaptureError(f"{where}: is a folder, not a video file or device")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"{where}: OpenCV cannot read it as a video")
        return cap

    def read(self) -> Any:
        """The next frame, RGB (uint8, HxWx3). ``CaptureError`` when none comes."""
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise CaptureError(f"capture source {self.name}: no frame came (end of the video, or the camera "
                               f"stopped sending)")
        if frame.ndim == 2:
            return self._cv2.cvtColor(frame, self._cv2.COLOR_GRAY2RGB)
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> Capture:  # noqa: PYI034 - Self needs typing_extensions on 3.10
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_jpeg(rgb: Any, quality: int = 95) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def save_frames(frames: list[Any], folder: Path, stamp: str | None = None) -> list[Path]:
    """Write the frames as JPEGs under ``folder`` (never overwriting); their paths, in order."""
    from ncanvas_tui.files import write_new_file

    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    out: list[Path] = []
    for i, rgb in enumerate(frames, 1):
        try:
            out.append(write_new_file(folder, f"capture-{stamp}-{i}", ".jpg", encode_jpeg(rgb)))
        except OSError as e:
            raise CaptureError(f"{folder}: cannot save a captured frame: {e.strerror or e}") from None
    return out


def grab(settings: Any, source: str | int, frames: int = 1,
         progress: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Open ``source``, read ``frames`` (1..8) consecutive frames, save them under
    ``[paths].output/captures/`` and return their paths."""
    if not 1 <= frames <= MAX_FRAMES:
        raise CaptureError(f"--frames must be 1..{MAX_FRAMES}, got {frames}")
    got: list[Any] = []
    with Capture(source) as cap:
        for i in range(frames):
            got.append(cap.read())
            if progress:
                progress(i + 1, frames, "capture")
    return save_frames(got, captures_dir(settings))
