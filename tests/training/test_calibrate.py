"""Calibration math on synthetic data whose true answer is known."""

import numpy as np
import pytest

from deepskin.core.labels import CLASSES, MALIGNANT_INDEX
from deepskin.core.model import calibrate, recalibrate_malignant, softmax
from training.calibrate import (
    HIGH_MAX_BENIGN,
    POPULATION_MIN_BENIGN,
    band_thresholds,
    expected_calibration_error,
    fit,
    fit_binary,
    fit_temperature,
    low_cutoff,
    missed_upper_bound,
)


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


def test_clopper_pearson_upper_bound_matches_known_values():
    assert missed_upper_bound(0, 299) < 0.01 < missed_upper_bound(0, 298)  # the "rule of three": 3 / n
    assert missed_upper_bound(5, 1000) == pytest.approx(0.01051, abs=1e-4)
    assert missed_upper_bound(3, 3) == 1.0


def test_low_cutoff_allows_only_misses_whose_upper_bound_stays_within_the_limit():
    scores = np.arange(1, 1001) / 1000  # 1000 malignant scores 0.001 ... 1.0
    cut, info = low_cutoff(scores, 0.01)
    assert info["missed"] == (scores < cut).sum() == 4  # 5 misses would have an upper bound of 1.05%
    assert info["shown"] and info["upper_bound"] <= 0.01
    cut, info = low_cutoff(scores[:100], 0.01)  # too few to show 1% even with none missed
    assert cut == scores[0] and info["missed"] == 0 and not info["shown"]
    assert info["upper_bound"] == pytest.approx(0.0295, abs=1e-3)


def test_every_malignant_type_has_its_own_floor_and_high_takes_a_fifth_of_benign():
    rng = np.random.default_rng(1)
    targets = rng.choice(len(CLASSES), 6000)
    malignant = np.isin(targets, MALIGNANT_INDEX)
    p = np.where(malignant, rng.beta(5, 2, targets.size), rng.beta(2, 5, targets.size))
    mel = targets == CLASSES.index("mel")
    p[np.flatnonzero(mel)[:10]] = 0.001  # ten of ~860 melanomas score lowest of all: more than 1% allows
    thresholds, bands = band_thresholds(p, targets)
    # All malignancies together (~2600) would allow more than ten misses; melanoma's own floor keeps them out.
    assert bands["floors"]["malignant"]["missed"] > 10
    assert thresholds["low"] == 0.001 and (p[mel] < thresholds["low"]).sum() == 0
    assert all(f["upper_bound"] <= f["limit"] for f in bands["floors"].values())
    assert (p[~malignant] >= thresholds["high"]).mean() <= 0.20
    assert (p[~malignant] >= thresholds["high"]).mean() > 0.19


def test_a_new_source_that_scores_higher_is_held_to_the_limits_on_its_own():
    rng = np.random.default_rng(2)
    old = rng.choice(len(CLASSES), 3000)  # the many rows of the sources the model knew
    new = rng.choice(["nv", "bcc"], 300)  # the clinicians' labels of a source it scores higher
    targets = np.concatenate([old, [CLASSES.index(c) for c in new]])
    malignant = np.isin(targets, MALIGNANT_INDEX)
    shift = np.r_[np.zeros(old.size), np.full(new.size, 0.25)]
    p = np.clip(np.where(malignant, rng.beta(5, 2, targets.size), rng.beta(2, 5, targets.size)) + shift, 0, 1)
    source = np.r_[np.full(old.size, "replay"), np.full(new.size, "feedback")]
    p[np.flatnonzero((source == "feedback") & malignant)[:3]] = 0.002  # its lowest malignancies score lowest

    pooled, _ = band_thresholds(p, targets)
    new_benign = (source == "feedback") & ~malignant
    assert (p[new_benign] >= pooled["high"]).mean() > 2 * HIGH_MAX_BENIGN  # pooled, the many set the cut-off
    thresholds, bands = band_thresholds(p, targets, sources=source)
    for name in ("replay", "feedback"):
        assert (p[(source == name) & ~malignant] >= thresholds["high"]).mean() <= HIGH_MAX_BENIGN
        assert bands["benign_high_by_source"][name] <= HIGH_MAX_BENIGN
    assert bands["floors"]["malignant in feedback"]["lesions"] == ((source == "feedback") & malignant).sum()
    assert thresholds["low"] == 0.002 and pooled["low"] > 0.002  # three misses of ~150 cannot show 1%

    few = source.copy()
    few[np.flatnonzero(new_benign)[POPULATION_MIN_BENIGN - 1:]] = "replay"  # the new source keeps 49 benign
    assert band_thresholds(p, targets, sources=few)[0]["high"] < thresholds["high"]  # too few to set "high"


def test_a_coarse_label_counts_for_p_malignant_and_the_bands_not_for_the_temperature():
    rng = np.random.default_rng(4)
    targets = rng.choice(len(CLASSES), 2000)
    logits = rng.normal(0, 1, (targets.size, len(CLASSES)))
    logits[np.arange(targets.size), targets] += 2
    is_malignant = np.isin(targets, MALIGNANT_INDEX)
    named = fit(logits, targets, [0.0] * len(CLASSES))
    coarse = targets.copy()
    coarse[:500] = -1  # a clinician said only benign or malignant
    fitted = fit(logits, coarse, [0.0] * len(CLASSES), is_malignant)
    assert fitted["calibration"]["temperature"] == pytest.approx(named["calibration"]["temperature"], rel=0.1)
    assert fitted["bands"]["floors"]["malignant"]["lesions"] == is_malignant.sum()
    assert fitted["malignant_calibration"]["prevalence"] == pytest.approx(is_malignant.mean(), abs=1e-4)


def test_the_chance_is_fitted_on_the_chosen_rows_and_the_bands_on_all():
    rng = np.random.default_rng(5)
    targets = rng.choice(len(CLASSES), 3000)
    logits = rng.normal(0, 1, (targets.size, len(CLASSES)))
    logits[np.arange(targets.size), targets] += 2
    chosen = np.arange(targets.size) < 2000
    logits[~chosen, CLASSES.index("mel")] += 3  # the other rows score far higher
    source = np.where(chosen, "replay", "feedback")
    alone = fit(logits[chosen], targets[chosen], [0.0] * len(CLASSES))
    fitted = fit(logits, targets, [0.0] * len(CLASSES), sources=source, calibrate_on=chosen)
    assert fitted["calibration"] == alone["calibration"]
    assert fitted["malignant_calibration"] == alone["malignant_calibration"]
    assert fitted["bands"]["floors"]["malignant"]["lesions"] == np.isin(targets, MALIGNANT_INDEX).sum()
    assert fitted["thresholds"]["high"] > alone["thresholds"]["high"]  # the other rows' benign lesions count


def test_binary_recalibration_recovers_a_known_distortion_and_keeps_classes_consistent():
    rng = np.random.default_rng(3)
    true = rng.uniform(0.02, 0.98, 20000)
    y = rng.uniform(0, 1, true.size) < true
    distorted = 1 / (1 + np.exp(-(0.5 * np.log(true / (1 - true)) - 1.0)))  # underconfident and shifted
    binary = fit_binary(distorted, y)
    assert binary["slope"] == pytest.approx(2.0, abs=0.15) and binary["intercept"] == pytest.approx(2.0, abs=0.15)
    probabilities = softmax(rng.normal(0, 1, (50, len(CLASSES))))
    rescaled, p = recalibrate_malignant(probabilities, binary)
    np.testing.assert_allclose(rescaled.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(rescaled[:, list(MALIGNANT_INDEX)].sum(1), p, atol=1e-6)


def test_ece_is_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.clip(p * 0.5 + 0.5, 0, 1), y) > 0.2
