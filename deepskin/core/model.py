"""The served model: an ONNX file plus its model card (JSON beside it), run with onnxruntime.

The graph takes preprocessed images and the optional patient vector (deepskin.core.patient) and returns class
logits, class activation maps, a lesion logit ("is this skin with a lesion at all?"), a clinical logit
("a phone or camera photo rather than dermoscopy?") and an out-of-distribution distance. The card carries
everything needed to read them: the preprocessing contract; per image type (dermoscopy, clinical) the
class calibration (prior correction + temperature), the binary recalibration of P(malignant), the class
priors and the risk-band thresholds; the range of P(clinical) where the type is unsure; the scope threshold
on P(not a lesion); the distance beyond which a photo is unfamiliar; and, optionally, the symptom stack
(`symptoms`): the log-odds a "yes" or a "no" to each question about the lesion's history adds to P(malignant),
for the image types it was fitted on (training.symptoms).

The risk band is decided here, for every path alike: the band of the photo's type, except that a photo whose
type is unsure gets the more urgent of both types' bands, and neither such a photo nor an unfamiliar one is
ever reassured ("low" becomes "medium"). Answers to the questions may move P(malignant) and the band, but
never into "low" when the photo alone is not "low" (the "low" cut-off was validated on photos alone), and a
reported change, growth or bleeding is never "low", whatever the image type or the card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepskin.core.bundle import load_card
from deepskin.core.labels import CLASSES, MALIGNANT_INDEX, RISK_BANDS
from deepskin.core.patient import NO, QUESTIONS, RED_FLAGS, VECTOR_SIZE, YES
from deepskin.core.preprocess import Preprocess

IMAGE_TYPES = ("dermoscopy", "clinical")
OUTPUTS = ("logits", "cam", "ood", "lesion", "clinical")


@dataclass
class Scores:
    """Raw network outputs for a batch, plus their calibrated reading."""

    logits: np.ndarray  # (N, 7)
    probabilities: np.ndarray  # (N, 7) calibrated for each image's type
    malignant: np.ndarray  # (N,) calibrated P(mel or bcc or akiec)
    top_class: np.ndarray  # (N,) the class most likely relative to how common it is (the named type)
    not_lesion: np.ndarray  # (N,) P(the photo does not show skin with a lesion)
    image_type: np.ndarray  # (N,) "dermoscopy" or "clinical"
    ood: np.ndarray  # (N,) distance from the training lesions' features; large = unfamiliar
    cam: np.ndarray  # (N, 7, h, w) class activation maps
    risk: np.ndarray  # (N,) "low", "medium" or "high"
    unfamiliar: np.ndarray  # (N,) answered with the unfamiliar_photo caveat
    type_unsure: np.ndarray  # (N,) P(clinical) near 0.5: both types' bands were read


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def calibrate(logits: np.ndarray, calibration: dict) -> np.ndarray:
    """Undo the class-weighted loss's prior shift (fixed bias), then temperature-scale."""
    bias = np.asarray(calibration.get("logit_bias", [0.0] * len(CLASSES)), np.float32)
    return softmax((logits + bias) / float(calibration.get("temperature", 1.0)))


def named_type(probabilities: np.ndarray, priors: np.ndarray, power: float) -> np.ndarray:
    """The class whose probability stands highest over its prior (raised to `power`, chosen on validation
    for the best balanced accuracy): a rare dangerous type is named when the photo makes it several times
    likelier than usual, even if the common nevus keeps the larger share."""
    return (probabilities / priors**power).argmax(axis=1)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def recalibrate_malignant(probabilities: np.ndarray, binary: dict) -> tuple[np.ndarray, np.ndarray]:
    """P(malignant) recalibrated as a binary probability (slope and intercept on its logit, fitted on this
    type's validation photos), and the class probabilities rescaled to agree with it."""
    summed = probabilities[:, list(MALIGNANT_INDEX)].sum(axis=1)
    p = sigmoid(binary.get("slope", 1.0) * logit(summed) + binary.get("intercept", 0.0)) if binary else summed
    return agreeing(probabilities, p), p


def agreeing(probabilities: np.ndarray, p_malignant: np.ndarray) -> np.ndarray:
    """The class probabilities rescaled within each group (malignant, benign) so that the malignant ones add up
    to p_malignant: what the page shows and the band reads agree."""
    summed = probabilities[:, list(MALIGNANT_INDEX)].sum(axis=1)
    is_malignant = np.isin(np.arange(len(CLASSES)), MALIGNANT_INDEX)
    scale = np.where(is_malignant, (p_malignant / np.clip(summed, 1e-12, None))[:, None],
                     ((1 - p_malignant) / np.clip(1 - summed, 1e-12, None))[:, None])
    return probabilities * scale


def band_index(p_malignant: np.ndarray, thresholds: dict) -> np.ndarray:
    """0 low, 1 medium, 2 high (RISK_BANDS' order)."""
    return (p_malignant >= thresholds["low"]).astype(int) + (p_malignant >= thresholds["high"])


class Model:
    def __init__(self, onnx_path: str | os.PathLike, card: dict | None = None, threads: int | None = None):
        import onnxruntime as ort  # imported here so that light users of the package (CLI) stay fast

        self.path = Path(onnx_path)
        self.card = card if card is not None else load_card(self.path)
        if list(self.card["classes"]) != list(CLASSES):
            raise ValueError(f"{self.path}: model classes {self.card['classes']} are not {list(CLASSES)}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.spec = Preprocess.from_dict(self.card["preprocess"])

    @property
    def version(self) -> str:
        return str(self.card["version"])

    def per_type(self, key: str, image_type: str, default):
        return self.card.get(key, {}).get(image_type, default)

    def score(self, batch: np.ndarray, patients: np.ndarray | None = None, answers: np.ndarray | None = None) -> Scores:
        """(N, 3, S, S) float32 model inputs, (N, VECTOR_SIZE) patient vectors and (N, len(QUESTIONS)) answer
        codes (PatientInfo.answer_codes; None: nothing known)."""
        if patients is None:
            patients = np.zeros((len(batch), VECTOR_SIZE), np.float32)
        if answers is None:
            answers = np.zeros((len(batch), len(QUESTIONS)), np.int8)
        logits, cam, ood, lesion, clinical = self.session.run(
            list(OUTPUTS), {"image": batch.astype(np.float32), "patient": patients.astype(np.float32)})
        p_clinical = sigmoid(clinical)
        is_clinical = p_clinical >= 0.5
        unsure_from, unsure_to = self.card.get("image_type", {}).get("unsure", (0.5, 0.5))
        type_unsure = (p_clinical > unsure_from) & (p_clinical < unsure_to)
        read = {kind: self.read_as(logits, kind, answers) for kind in IMAGE_TYPES}
        probabilities, malignant, top, band = (np.where(is_clinical.reshape(-1, *[1] * (a.ndim - 1)), a, b)
                                              for a, b in zip(read["clinical"], read["dermoscopy"]))
        band = np.where(type_unsure, np.maximum(read["clinical"][3], read["dermoscopy"][3]), band)
        unfamiliar = ood > self.card.get("ood", {}).get("threshold", np.inf)
        red_flag = (answers[:, [list(QUESTIONS).index(q) for q in RED_FLAGS]] == 1).any(axis=1)
        band = np.where(type_unsure | unfamiliar | red_flag, np.maximum(band, 1), band)  # never reassured
        return Scores(logits, probabilities, malignant, top, sigmoid(-lesion),
                      np.where(is_clinical, "clinical", "dermoscopy"), ood, cam, np.asarray(RISK_BANDS)[band],
                      unfamiliar, type_unsure)

    def read_as(self, logits: np.ndarray, kind: str,
                answers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every photo read as `kind`: class probabilities, P(malignant), the named type and the band index."""
        probabilities, malignant = recalibrate_malignant(calibrate(logits, self.per_type("calibration", kind, {})),
                                                         self.per_type("malignant_calibration", kind, {}))
        thresholds = self.per_type("thresholds", kind, {"low": 0.0, "high": 1.0})
        photo_alone = band_index(malignant, thresholds)
        shift = self.symptom_shift(answers, kind)
        if shift.any():  # (without answers the numbers stay exactly the photo's)
            malignant = np.where(shift != 0, sigmoid(logit(malignant) + shift), malignant)
            probabilities = agreeing(probabilities, malignant)
        priors = np.asarray(self.per_type("priors", kind, [1.0] * len(CLASSES)), np.float32)
        top = named_type(probabilities, priors, self.per_type("naming_power", kind, 1.0))
        # Answers may lower a band, but "low" only where the photo alone is "low" too.
        bands = np.maximum(band_index(malignant, thresholds), np.minimum(photo_alone, 1))
        return probabilities, malignant, top, bands

    def symptom_shift(self, answers: np.ndarray, kind: str) -> np.ndarray:
        """The log-odds each photo's answers add to P(malignant): the card's `symptoms.log_odds`, only for the
        image types the stack was fitted on (`symptoms.applies_to`); an unknown answer adds nothing."""
        stack = self.card.get("symptoms", {})
        shift = np.zeros(len(answers))
        if kind not in stack.get("applies_to", ()):
            return shift
        for j, question in enumerate(QUESTIONS):
            odds = stack["log_odds"].get(question, {})
            shift += np.where(answers[:, j] == 1, odds.get(YES, 0.0),
                              np.where(answers[:, j] == -1, odds.get(NO, 0.0), 0.0))
        return shift

    def scope(self, not_lesion: float) -> str:
        """"lesion" (assess it), "unclear" (cannot tell: ask for a retake) or "not_a_lesion" (surely not)."""
        scope = self.card.get("scope", {})
        if not_lesion >= scope.get("threshold", 1.0):
            return "not_a_lesion"
        return "unclear" if not_lesion >= scope.get("unclear", 1.0) else "lesion"
