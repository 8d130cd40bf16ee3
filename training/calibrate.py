"""Calibration and operating points, fitted on the validation split only.

- Temperature scaling: one scalar T minimising the validation negative log-likelihood, fitted twice: on
  the raw logits, and after a prior correction (training saw classes at an effective prior shaped by class
  weights and source oversampling; adding log(prior of this image type) - log(effective training prior)
  to the logits moves the answer to this type's own prevalence, in theory). The one with the lower
  validation NLL is kept; label smoothing often leaves the network nearer the true prior than theory says.
- Risk bands on the calibrated malignant probability p: "high" when p >= t_high, the largest threshold that
  still flags >= 95% of validation malignancies; "low" when p < t_low, the largest threshold under which
  at most 1% of validation malignancies fall; "medium" in between.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from deepskin.core.labels import MALIGNANT_INDEX
from deepskin.core.model import calibrate, softmax

HIGH_BAND_SENSITIVITY = 0.95
LOW_BAND_MAX_MISSED = 0.01


def nll(logits: np.ndarray, targets: np.ndarray, calibration: dict) -> float:
    p = calibrate(logits, calibration)
    return float(-np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, 1)).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, logit_bias: list[float]) -> float:
    result = minimize_scalar(
        lambda log_t: nll(logits, targets, {"logit_bias": logit_bias, "temperature": float(np.exp(log_t))}),
        bounds=(np.log(0.05), np.log(20.0)), method="bounded",
    )
    return float(np.exp(result.x))


def malignant_probability(probabilities: np.ndarray) -> np.ndarray:
    return probabilities[:, list(MALIGNANT_INDEX)].sum(axis=1)


def band_thresholds(p_malignant: np.ndarray, is_malignant: np.ndarray) -> dict:
    """Thresholds from the malignant cases' scores alone (quantiles), so sensitivity holds by construction on val."""
    scores = np.sort(p_malignant[is_malignant.astype(bool)])
    if len(scores) == 0:
        raise ValueError("no malignant cases to set the risk bands on")
    # Largest t with P(score >= t) >= 0.95: the k-th smallest score, k = floor(0.05 n).
    high = float(scores[int(np.floor((1 - HIGH_BAND_SENSITIVITY) * len(scores)))])
    low = float(scores[int(np.floor(LOW_BAND_MAX_MISSED * len(scores)))])
    return {"low": low, "high": max(high, low)}


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Binary ECE with equal-width bins: sum over bins of |mean(y) - mean(p)| weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def prior_shift(type_prior: np.ndarray, training_prior: np.ndarray) -> list[float]:
    return [float(b) for b in np.log(type_prior) - np.log(training_prior)]


def fit(logits: np.ndarray, targets: np.ndarray, prior_bias: list[float]) -> dict:
    """Everything the model card's `calibration` and `thresholds` need, from validation logits."""
    candidates = []
    for bias in ([0.0] * len(prior_bias), prior_bias):
        candidate = {"logit_bias": bias, "temperature": fit_temperature(logits, targets, bias)}
        candidates.append((nll(logits, targets, candidate), candidate))
    calibration = min(candidates, key=lambda c: c[0])[1]
    is_malignant = np.isin(targets, MALIGNANT_INDEX)
    p = malignant_probability(calibrate(logits, calibration))
    raw = malignant_probability(softmax(logits))
    return {
        "calibration": calibration,
        "thresholds": band_thresholds(p, is_malignant),
        "val": {
            "nll_before": nll(logits, targets, {}),
            "nll_after": nll(logits, targets, calibration),
            "nll_prior_corrected": candidates[1][0],
            "ece_before": expected_calibration_error(raw, is_malignant),
            "ece_after": expected_calibration_error(p, is_malignant),
        },
    }
