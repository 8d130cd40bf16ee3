"""Uploads, start to finish, in plain Python: bytes (+ optional patient facts) -> checks -> model -> result.

The storage-event function, the HTTP function, `training.batch_predict`, the evaluation report and the
promotion gate all go through `assess_batch` (or `assess`, a batch of one), so what is measured is what
a person gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from deepskin.core import checks
from deepskin.core.heatmap import heatmap_png
from deepskin.core.labels import CAVEATS, CLASSES, NOT_A_LESION, UNCLEAR_SUBJECT, advice_for
from deepskin.core.model import Model, Scores
from deepskin.core.patient import UNKNOWN, PatientInfo
from deepskin.core.preprocess import canonical, centre_square, normalise, to_rgb


@dataclass
class Assessment:
    status: str  # done, rejected or unusable
    model_version: str
    reason: str | None = None
    message: str | None = None
    probabilities: dict[str, float] | None = None
    malignant_probability: float | None = None
    risk: str | None = None
    top_class: str | None = None  # the type the page names first (most likely relative to how common it is)
    image_type: str | None = None  # dermoscopy or clinical: which calibration and thresholds were used
    caveats: list[str] | None = None  # e.g. ["unfamiliar_photo"]: answered, with less trust than usual
    caveat_text: str | None = None
    advice: str | None = None
    not_lesion_probability: float | None = None
    ood_score: float | None = None
    patient: dict | None = None  # the optional facts that were given (age, sex, site, answers)
    heatmap_png: bytes | None = field(default=None, repr=False)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def fields(self) -> dict:
        """The result document's model fields (the heatmap bytes are stored separately)."""
        return {k: v for k, v in self.__dict__.items() if k != "heatmap_png" and v is not None}


class Laps:
    """Milliseconds per stage, for the result's `timings_ms`."""

    def __init__(self, timings: dict[str, float]):
        self.timings, self.started = timings, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round((now - self.started) * 1000, 2)
        self.started = now


def prepare(image: Image.Image, model: Model) -> tuple[Image.Image, np.ndarray]:
    """Decoded image -> (the canonical square the model sees, its input array)."""
    square = centre_square(canonical(to_rgb(image), model.spec))
    return square, normalise(square, model.spec)


def checked_input(data: bytes, model: Model, timings: dict) -> np.ndarray | Assessment:
    """The model input for one upload, or the refusal that says why there is none."""
    lap = Laps(timings)
    try:
        image = checks.decode(data)
        lap("decode")
        square, x = prepare(image, model)
        checks.photo_quality(square)
        lap("preprocess")
        return x
    except checks.Refusal as refusal:
        advice = advice_for("retake") if refusal.status == "unusable" else None
        return Assessment(refusal.status, model.version, refusal.reason, refusal.message, advice=advice,
                          timings_ms=timings)


def answer(scores: Scores, j: int, model: Model, patient: PatientInfo, timings: dict, heatmap: bool) -> Assessment:
    """Row j of a scored batch -> a refusal (not a lesion) or an answer with its band, type and caveats."""
    not_lesion = round(float(scores.not_lesion[j]), 4)
    ood = round(float(scores.ood[j]), 3)
    given = patient.given() or None
    scope = model.scope(not_lesion)
    if scope != "lesion":
        reason, message = ("not_a_lesion", NOT_A_LESION) if scope == "not_a_lesion" else ("unclear_subject",
                                                                                          UNCLEAR_SUBJECT)
        return Assessment("unusable", model.version, reason, message, advice=advice_for("retake"),
                          not_lesion_probability=not_lesion, ood_score=ood, patient=given, timings_ms=timings)
    lap = Laps(timings)
    p_malignant = float(scores.malignant[j])
    image_type = str(scores.image_type[j])
    risk = str(scores.risk[j])
    top = int(scores.top_class[j])
    caveats = ["unfamiliar_photo"] if scores.unfamiliar[j] else []
    png = heatmap_png(scores.cam[j, top]) if heatmap else None
    lap("heatmap")
    return Assessment(
        "done", model.version,
        probabilities={c: round(float(p), 6) for c, p in zip(CLASSES, scores.probabilities[j])},
        malignant_probability=round(p_malignant, 6), risk=risk, top_class=CLASSES[top], image_type=image_type,
        caveats=caveats, caveat_text=" ".join(CAVEATS[c] for c in caveats) or None, advice=advice_for(risk),
        not_lesion_probability=not_lesion, ood_score=ood, patient=given, heatmap_png=png, timings_ms=timings,
    )


def assess_batch(items: Iterable[tuple[bytes, PatientInfo]], model: Model, heatmaps: bool = True,
                 map_fn: Callable[..., Iterator] = map) -> list[Assessment]:
    """Never raises for bad input: every refusal comes back as a status with a reason. `map_fn` may be a
    thread pool's map, so that decoding overlaps across images."""
    items = list(items)
    timings = [{} for _ in items]
    prepared = list(map_fn(lambda i: checked_input(items[i][0], model, timings[i]), range(len(items))))
    ready = [i for i, x in enumerate(prepared) if isinstance(x, np.ndarray)]
    if not ready:
        return prepared
    started = time.perf_counter()
    scores = model.score(np.stack([prepared[i] for i in ready]), np.stack([items[i][1].vector() for i in ready]),
                         np.stack([items[i][1].answer_codes() for i in ready]))
    inference_ms = round((time.perf_counter() - started) * 1000 / len(ready), 2)  # per image
    for j, i in enumerate(ready):
        timings[i]["inference"] = inference_ms
        prepared[i] = answer(scores, j, model, items[i][1], timings[i], heatmaps)
    return prepared


def assess(data: bytes, model: Model, patient: PatientInfo = UNKNOWN) -> Assessment:
    return assess_batch([(data, patient)], model)[0]
