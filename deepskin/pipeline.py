"""One upload, start to finish, in plain Python: bytes -> checks -> model -> the result's fields.

Both the storage-event function and the HTTP function call `assess`; so do the batch command and tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from deepskin import checks
from deepskin.heatmap import heatmap_png
from deepskin.labels import CLASSES, advice_for
from deepskin.model import Model
from deepskin.preprocess import canonical, centre_square, normalise, to_rgb


@dataclass
class Assessment:
    status: str  # done, rejected or unusable
    model_version: str
    reason: str | None = None
    message: str | None = None
    probabilities: dict[str, float] | None = None
    malignant_probability: float | None = None
    risk: str | None = None
    advice: str | None = None
    ood_score: float | None = None
    heatmap_png: bytes | None = field(default=None, repr=False)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def fields(self) -> dict:
        """The result document's model fields (the heatmap bytes are stored separately)."""
        return {k: v for k, v in self.__dict__.items() if k != "heatmap_png" and v is not None}


def prepare(image: Image.Image, model: Model) -> tuple[Image.Image, np.ndarray]:
    """Decoded image -> (the canonical square the model sees, its input array)."""
    square = centre_square(canonical(to_rgb(image), model.spec))
    return square, normalise(square, model.spec)


def assess(data: bytes, model: Model) -> Assessment:
    """Never raises for bad input: every refusal comes back as a status with a reason."""
    timings, started = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[name] = round((now - started) * 1000, 2)
        started = now

    try:
        image = checks.decode(data)
        lap("decode")
        square, x = prepare(image, model)
        checks.photo_quality(square)
        lap("preprocess")
    except checks.Refusal as refusal:
        advice = advice_for("retake") if refusal.status == "unusable" else None
        return Assessment(refusal.status, model.version, refusal.reason, refusal.message, advice=advice,
                          timings_ms=timings)
    scores = model.score(x[None])
    lap("inference")
    ood = float(scores.ood[0])
    if not model.in_scope(ood):
        return Assessment(
            "unusable", model.version, "not_a_lesion",
            "This does not look like a close-up of a skin lesion, so it was not assessed.",
            advice=advice_for("retake"), ood_score=ood, timings_ms=timings,
        )
    p_malignant = float(scores.malignant[0])
    risk = model.band(p_malignant)
    top = int(scores.probabilities[0].argmax())
    heatmap = heatmap_png(scores.cam[0, top])
    lap("heatmap")
    return Assessment(
        "done", model.version,
        probabilities={c: round(float(p), 6) for c, p in zip(CLASSES, scores.probabilities[0])},
        malignant_probability=round(p_malignant, 6), risk=risk, advice=advice_for(risk), ood_score=round(ood, 3),
        heatmap_png=heatmap, timings_ms=timings,
    )
