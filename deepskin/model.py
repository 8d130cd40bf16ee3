"""The served model: an ONNX file plus its model card (JSON beside it), run with onnxruntime.

The card carries everything needed to use the network correctly: the preprocessing contract, the
calibration (prior correction + temperature), the risk-band thresholds and the out-of-scope threshold.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepskin.labels import CLASSES, MALIGNANT_INDEX
from deepskin.preprocess import Preprocess

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "models" / "deepskin.onnx"


def card_path(onnx_path: str | os.PathLike) -> Path:
    return Path(onnx_path).with_suffix(".card.json")


@dataclass
class Scores:
    """Raw network outputs for a batch, plus their calibrated reading."""

    logits: np.ndarray  # (N, 7)
    probabilities: np.ndarray  # (N, 7) calibrated
    malignant: np.ndarray  # (N,) calibrated P(mel or bcc or akiec)
    ood: np.ndarray  # (N,) distance from the training lesions' features; large = not a lesion
    cam: np.ndarray  # (N, 7, h, w) class activation maps


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibrate(logits: np.ndarray, calibration: dict) -> np.ndarray:
    """Undo the class-weighted loss's prior shift (fixed bias), then temperature-scale."""
    bias = np.asarray(calibration.get("logit_bias", [0.0] * len(CLASSES)), np.float32)
    return softmax((logits + bias) / float(calibration.get("temperature", 1.0)))


def risk_band(p_malignant: float, thresholds: dict) -> str:
    if p_malignant >= thresholds["high"]:
        return "high"
    return "medium" if p_malignant >= thresholds["low"] else "low"


class Model:
    def __init__(self, onnx_path: str | os.PathLike, card: dict | None = None, threads: int | None = None):
        import onnxruntime as ort  # imported here so that light users of the package (CLI) stay fast

        self.path = Path(onnx_path)
        self.card = card if card is not None else json.loads(card_path(self.path).read_text())
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

    def score(self, batch: np.ndarray) -> Scores:
        """(N, 3, S, S) float32 model inputs -> Scores."""
        logits, cam, ood = self.session.run(["logits", "cam", "ood"], {"image": batch.astype(np.float32)})
        probabilities = calibrate(logits, self.card.get("calibration", {}))
        malignant = probabilities[:, list(MALIGNANT_INDEX)].sum(axis=1)
        return Scores(logits, probabilities, malignant, ood, cam)

    def band(self, p_malignant: float) -> str:
        return risk_band(p_malignant, self.card["thresholds"])

    def in_scope(self, ood_score: float) -> bool:
        threshold = self.card.get("ood", {}).get("threshold")
        return threshold is None or ood_score <= threshold


_lock = threading.Lock()
_cached: Model | None = None


def default_model() -> Model:
    """The model for this process, loaded once (lazily): $DEEPSKIN_MODEL_PATH or the bundled one, replaced by
    the registry's current version where a registry is configured (deepskin.registry.refreshed: checked at
    most every $DEEPSKIN_MODEL_CHECK_SECONDS; on any registry error the model in use stays)."""
    global _cached  # pylint: disable=global-statement
    from deepskin import registry  # pylint: disable=import-outside-toplevel  # registry imports this module

    with _lock:
        if _cached is None:
            _cached = Model(os.environ.get("DEEPSKIN_MODEL_PATH") or BUNDLED_MODEL)
        _cached = registry.refreshed(_cached)
        return _cached


def use_model(model: Model | None) -> None:
    """Swap the process's model (registry promotion, tests)."""
    global _cached  # pylint: disable=global-statement
    with _lock:
        _cached = model
