"""Min-max INT8 calibration on ONNX Runtime uses every calibration image, on any number of photos.

It failed with "quantization failed: No data is collected" on a folder of 8 ordinary photos (and
on 7 used only the last one): ORT's MinMaxCalibrater drops what it collected each time
``CalibMaxIntermediateOutputs`` outputs are reached (microsoft/onnxruntime#18893)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from onnx_factory import add_model, tiny_classifier

from ncanvas_tui import api
from ncanvas_tui.vision import catalog
from ncanvas_tui.vision.preprocess import Normalizer, load_image


@pytest.mark.parametrize("count", [8, 7])
def test_minmax_ranges_cover_every_calibration_image(settings, workdir, count):
    cal = workdir / "calibdata"
    photos = sorted(cal.glob("*.jpg"))
    if count == 8:
        shutil.copy(photos[0], cal / "zz_eighth.jpg")
    photos = sorted(cal.glob("*.jpg"))
    assert len(photos) == count
    add_model(workdir / "models", "tiny", tiny_classifier)
    entry = catalog.find(settings, "tiny")
    a = api.plan_and_build(settings, api.BuildRequest("tiny", "int8", backend="onnxruntime",
                                                      calibrator="minmax")).artefact
    assert a is not None and a.path.is_file() and a.calibrator == "minmax"
    # the calibrated range of the logits is their min / max over ALL the images, not the last few
    data = json.loads(next((workdir / "engines").glob("*.minmax.*.ort-calib.json")).read_text())["data"]
    lo, hi = (np.asarray(v["data"], dtype=np.float64).ravel()[0] for v in _range(data["logits"]))
    import onnxruntime as ort

    x = Normalizer(entry.preprocess)([load_image(p, entry.preprocess).rgb for p in photos])
    sess = ort.InferenceSession(str(workdir / "models" / "tiny.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    last = logits[-1]
    assert (last.min(), last.max()) != pytest.approx((logits.min(), logits.max()), abs=1e-3)  # test can fail
    assert (lo, hi) == pytest.approx((float(logits.min()), float(logits.max())), abs=1e-3)


def _range(entry):
    """ORT's calibration cache entry (TensorData as JSON) -> (lowest, highest)."""
    return entry["lowest"], entry["highest"]
