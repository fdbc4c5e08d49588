"""Draw a picture from a prompt: ask the provider, check the payload is an image, save it.

    pic = draw(settings, "a lighthouse in a storm", negative="text, watermark", style="Film noir")
    pic.path  # output/images/20261123-083000-a-lighthouse-in-a-storm.png (never overwrites)

The GPU worker is not needed (the work is remote); the TUI runs ``draw`` in a thread worker and the CLI
calls it directly. Failures raise ``ImageApiError`` / ``PictureError`` (``NcanvasError``) with one line
naming the endpoint or file; the caller records the prompt in the history either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ncanvas_tui.errors import NcanvasError
from ncanvas_tui.imagine.picture import PictureError, check_image, decode_b64, default_stem, save_image
from ncanvas_tui.imagine.providers import (
    ImageApiError,
    ImageRequest,
    endpoint_of,
    request_image,
    supports,
    unsupported_note,
)
from ncanvas_tui.settings import Settings


@dataclass
class Picture:
    prompt: str                  # what was sent (style included)
    path: str                    # absolute path of the saved file
    provider: str
    model: str
    endpoint: str
    size: str                    # WIDTHxHEIGHT asked for
    width: int                   # what came back
    height: int
    format: str                  # PNG | JPEG | WEBP ...
    negative: str | None = None
    seed: int | None = None           # the seed used (None: the provider has none)
    steps: int | None = None
    guidance: float | None = None
    style: str | None = None
    revised_prompt: str | None = None
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_seed() -> int:
    """A fresh random seed (what "regenerate" draws with)."""
    import random

    return random.SystemRandom().randrange(1, 2**31 - 1)


def compose_prompt(prompt: str, style: str | None = None) -> str:
    prompt = " ".join(prompt.split())
    if style and style.strip() and style.strip().lower() not in ("(random)", "random"):
        return f"{prompt}, in {style.strip()} style"
    return prompt


def output_dir(settings: Settings) -> Path:
    return Path(settings.paths.output) / "images"


def resolve_out(settings: Settings, out: str | Path | None, prompt: str) -> tuple[Path, str, str | None]:
    """``--out`` -> (folder, stem, suffix or None). A folder (existing, or ending in /) gets a generated
    name; a file name keeps its stem and suffix (.png/.jpg/.webp), with -2, -3... if it exists."""
    if out is None:
        return output_dir(settings), default_stem(prompt), None
    text = str(out)
    p = Path(text).expanduser()
    if p.is_dir() or text.endswith(("/", "\\")):
        return p, default_stem(prompt), None
    if not p.suffix:
        raise PictureError(f"--out {text}: give a folder that exists, or a file name ending in .png, .jpg "
                           "or .webp")
    return p.parent, p.stem, p.suffix


def draw(settings: Settings, prompt: str, *, negative: str | None = None, style: str | None = None,
         out: str | Path | None = None, cancelled: Callable[[], bool] | None = None,
         seed: int | None = None, steps: int | None = None, guidance: float | None = None,
         say: Callable[[str], Any] | None = None) -> Picture:
    """One picture for ``prompt``, saved under ``[paths].output/images`` (or ``out``).

    ``seed``/``steps``/``guidance`` (and ``negative``) override ``[imagegen]``; ``seed`` None with
    ``[imagegen].seed = -1`` draws a new random seed, sent and reported (``Picture.seed``), so a
    picture can be drawn again. Options the provider has none of are said once (``say``, else
    stderr) and left out."""
    cfg = settings.imagegen
    full = compose_prompt(prompt, style)
    if not full:
        raise NcanvasError("the picture prompt is empty")
    folder, stem, suffix = resolve_out(settings, out, full)
    if suffix is not None and suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise PictureError(f"--out {out}: pictures are saved as .png, .jpg or .webp")
    width, height = (int(x) for x in cfg.size.split("x"))
    negative = (negative if negative is not None else cfg.negative or "").strip() or None
    has = supports(cfg.provider, cfg.model)
    # what this call asks for is worth a note when the provider has no field for it; what the
    # settings hold (a fixed seed, a guidance) is only logged: it applies to every provider
    unsupported_note(cfg.provider, cfg.model, {"seed": seed, "steps": steps, "guidance": guidance}, say)
    if seed is None:
        seed = cfg.seed if cfg.seed >= 0 else new_seed()
    req = ImageRequest(prompt=full, negative=negative, width=width, height=height,
                       steps=(steps or cfg.steps) if "steps" in has else None,
                       seed=seed if "seed" in has else None,
                       guidance=(guidance if guidance is not None else cfg.guidance or None)
                       if "guidance" in has else None)
    t0 = time.monotonic()
    ans = request_image(cfg, req, cancelled=cancelled)
    try:
        img = check_image(decode_b64(ans.b64))
    except ValueError as e:
        raise ImageApiError(f"{ans.endpoint}: answer is not an image: {e}", endpoint=ans.endpoint,
                            kind="not_image") from None
    path = save_image(img, folder, stem, suffix)
    return Picture(prompt=full, path=str(path.resolve()), provider=cfg.provider, model=cfg.model,
                   endpoint=ans.endpoint or endpoint_of(cfg), size=cfg.size, width=img.width,
                   height=img.height,
                   format=img.format, negative=req.negative,
                   seed=ans.seed if ans.seed is not None else req.seed,
                   steps=req.steps, guidance=req.guidance, style=style,
                   revised_prompt=ans.revised_prompt, elapsed_s=round(time.monotonic() - t0, 3))
