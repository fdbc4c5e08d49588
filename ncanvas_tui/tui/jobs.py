"""Heavy work off the event loop, through the GPU worker.

Every TensorRT / ONNX Runtime call goes through ONE thread: the GPU worker
(``ncanvas_tui.worker``). ``submit(name, fn, *args, **kwargs)`` queues
``fn(*args, cancel=token, **kwargs)`` there and returns the worker's ``Job`` at once:
``job.cancel()`` sets the token the function polls, ``await wait(job)`` gives its result.
Jobs never touch widgets: they report through the ``progress`` callback they were
given, which the screens turn into ``post_message`` calls (thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ncanvas_tui.progress import CancelToken, Progress, no_progress
from ncanvas_tui.worker import Job, get_worker

__all__ = ["Job", "classifier", "classify", "forget_classifiers", "submit", "wait"]


def submit(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
    """Run ``fn(*args, cancel=<the job's token>, **kwargs)`` in the GPU thread; returns its ``Job``."""
    return get_worker().submit(fn, *args, name=name, cancel=CancelToken(), **kwargs)


async def wait(job: Job) -> Any:
    """The job's result (or its exception), awaited without blocking the event loop."""
    return await asyncio.wrap_future(job.future)


# -- models stay loaded between runs (only touched from the GPU thread) --------
_CLASSIFIERS: dict[tuple[Any, ...], Any] = {}


def classifier(settings: Any, selection: Any) -> Any:
    """A loaded ``Classifier`` for this artefact ``Selection`` (GPU thread only)."""
    from ncanvas_tui.vision.classify import Classifier

    key = (id(settings), selection)
    clf = _CLASSIFIERS.get(key)
    if clf is None:
        clf = Classifier(settings, model=selection.model, backend=selection.backend,
                         precision=selection.precision, calibrator=selection.calibrator,
                         keep_float=selection.keep_float, artefact=selection.artefact)
        clf.load()
        _CLASSIFIERS[key] = clf
    return clf


def classify(settings: Any, selection: Any, paths: list[str], *, progress: Progress = no_progress,
             cancel: CancelToken) -> Any:
    """The job of Infer's Ctrl+R: classify ``paths`` with the (cached) classifier of ``selection``."""
    return classifier(settings, selection).classify(paths, progress=progress, cancel=cancel)


def forget_classifiers(**_: Any) -> None:
    """Drop loaded models (after an artefact was rebuilt or deleted). GPU thread only."""
    for clf in _CLASSIFIERS.values():
        try:
            clf.close()
        except Exception:
            logging.getLogger("ncanvas_tui.tui").debug("closing a model failed", exc_info=True)
    _CLASSIFIERS.clear()
