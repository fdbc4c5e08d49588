"""Stories that see the pictures: labels from the images, and the images themselves for a
multimodal model.

* ``labels_from_images(settings, paths, artefact=None)``: classifies the pictures with the
  settings' model (in the GPU worker, as ``ncanvas infer`` does) and returns their top-1 labels,
  in order, without repeats; ``artefact`` names a built artefact to classify with (wired in by
  the engine core's artefact selection).
* ``image_parts(paths)``: the pictures as OpenAI ``image_url`` content parts: JPEG data URLs of a
  downscaled copy (``MAX_SIDE`` px on the long side, all of them together under ``MAX_REQUEST_BYTES``).
  Only the story request itself carries them: never the guardrails' prompts, logs or the history
  (which records the image paths).
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ncanvas_tui.errors import ImageError
from ncanvas_tui.settings import Settings
from ncanvas_tui.story.catalog import StoryInputError

log = logging.getLogger(__name__)

#: longest side of a picture sent to a vision model (OpenAI's low-detail tile is 512 px)
MAX_SIDE = 512
#: all pictures of one request together (base64 included) stay under this
MAX_REQUEST_BYTES = 1_000_000
#: most pictures one story sends (the classifier's max batch)
MAX_IMAGES = 8


def labels_from_images(settings: Settings, paths: Sequence[str], artefact: str | None = None) -> tuple[
        list[str], list[str]]:
    """(labels, classified image paths) for ``paths`` (folders expand to their images). Pictures
    that cannot be classified are skipped; none at all is a one-line ``ImageError``."""
    from ncanvas_tui.vision.classify import Classifier
    from ncanvas_tui.vision.preprocess import expand_paths
    from ncanvas_tui.worker import get_worker

    files, folder_errors = expand_paths(list(paths))
    if not files:
        what = folder_errors[0]["error"] if folder_errors else "no pictures given"
        raise ImageError(f"--images: {what}")
    clf = Classifier(settings, artefact=artefact)  # --artefact ID: that artefact; else the settings' model
    try:
        res = get_worker().run(clf.classify, files).as_dict()
    finally:
        clf.close()
    labels: list[str] = []
    seen: list[str] = []
    for r in res.get("results", []):
        if r.get("top"):
            seen.append(str(r["image"]))
            label = str(r["top"][0]["label"])
            if label not in labels:
                labels.append(label)
    if not labels:
        errors = folder_errors + res.get("errors", [])
        first = f"{errors[0]['image']}: {errors[0]['error']}" if errors else "nothing classified"
        raise ImageError(f"--images: no picture could be classified ({first})")
    return labels, seen


def _jpeg(path: str, side: int, quality: int) -> bytes:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.thumbnail((side, side))
            if im.mode != "RGB":
                im = im.convert("RGB")
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=quality, optimize=True)
            return buf.getvalue()
    except FileNotFoundError:
        raise ImageError(f"{path}: image not found") from None
    except OSError as e:
        raise ImageError(f"{path}: not a picture a vision model can be sent ({e})") from None


def image_parts(paths: Sequence[str], *, max_side: int = MAX_SIDE,
                max_bytes: int = MAX_REQUEST_BYTES) -> list[dict[str, Any]]:
    """``[{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}, ...]``."""
    paths = [str(p) for p in paths][:MAX_IMAGES]
    if not paths:
        raise StoryInputError("[llm].vision: no pictures to send")
    budget = max_bytes // len(paths)
    parts = []
    for p in paths:
        data = b""
        for side, quality in ((max_side, 85), (max_side, 70), (max_side * 3 // 4, 70), (max_side // 2, 60)):
            data = _jpeg(p, side, quality)
            if len(data) * 4 // 3 + 32 <= budget:
                break
        url = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        parts.append({"type": "image_url", "image_url": {"url": url, "detail": "low"}})
    return parts


def display_paths(paths: Sequence[str]) -> list[str]:
    """The image paths as recorded (absolute)."""
    return [str(Path(p).expanduser().resolve()) for p in paths]
