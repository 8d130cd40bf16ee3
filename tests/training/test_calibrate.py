"""Calibration math on synthetic data whose true answer is known."""

import numpy as np

from deepskin.core.model import calibrate
from training.calibrate import band_thresholds, expected_calibration_error, fit_temperature


def test_temperature_recovers_known_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 7))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    targets = np.array([rng.choice(7, p=row) for row in p])
    temperature = fit_temperature(true_logits * 3.0, targets, [0.0] * 7)  # the network is 3x overconfident
    assert abs(temperature - 3.0) < 0.25


def test_prior_correction_undoes_class_weighting():
    logits = np.log(np.array([[0.2, 0.8]]))
    weights = np.array([4.0, 1.0])  # the weighted loss inflates class 0 by 4
    shifted = logits + np.log(weights)
    corrected = calibrate(shifted, {"logit_bias": list(-np.log(weights)), "temperature": 1.0})
    np.testing.assert_allclose(corrected, [[0.2, 0.8]], atol=1e-6)


def test_band_thresholds_hold_sensitivity_on_the_fitting_set():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 1000)
    y = rng.uniform(0, 1, 1000) < p
    t = band_thresholds(p, y)
    assert (p[y] >= t["high"]).mean() >= 0.95
    assert (p[y] < t["low"]).mean() <= 0.01
    assert t["low"] <= t["high"]


def test_ece_is_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.clip(p * 0.5 + 0.5, 0, 1), y) > 0.2
