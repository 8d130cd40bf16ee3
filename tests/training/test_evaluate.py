"""The evaluation report's statistics on small crafted frames whose answers are known (no data needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import calibrate, evaluate


def scored(dx, status, risk, p, ak=None, top_class=None) -> pd.DataFrame:
    """A frame as evaluate.score_set returns it: batch_predict columns plus the table's dx and group."""
    n = len(dx)
    return pd.DataFrame({
        "status": status, "risk": risk, "malignant": p, "dx": dx, "group": [f"g{i}" for i in range(n)],
        "top_class": top_class or dx, "image_type": ["dermoscopy"] * n, "caveats": [""] * n,
        "ak": ak if ak is not None else [False] * n}, index=[f"img{i}" for i in range(n)])


@pytest.fixture
def told():
    """4 malignant (mel told low, mel high, bcc medium, akiec refused), 4 benign (low, low, high, medium)."""
    return scored(dx=["mel", "mel", "bcc", "akiec", "nv", "nv", "nv", "bkl"],
                  status=["done", "done", "done", "unusable:not_a_lesion", "done", "done", "done", "done"],
                  risk=["low", "high", "medium", None, "low", "low", "high", "medium"],
                  p=[0.01, 0.9, 0.3, None, 0.02, 0.03, 0.8, 0.2])


def test_band_shares_count_refusals_as_an_outcome(told):
    bands = evaluate.band_shares(told, told.dx.isin(["mel", "bcc", "akiec"]).to_numpy())
    assert bands["malignant"] == {"n": 4, "low": 0.25, "medium": 0.25, "high": 0.25, "refused": 0.25}
    assert bands["melanoma"] == {"n": 2, "low": 0.5, "medium": 0.0, "high": 0.5, "refused": 0.0}
    assert bands["bcc"] == {"n": 1, "low": 0.0, "medium": 1.0, "high": 0.0, "refused": 0.0}
    assert bands["akiec"] == {"n": 1, "low": 0.0, "medium": 0.0, "high": 0.0, "refused": 1.0}
    assert bands["benign"] == {"n": 4, "low": 0.5, "medium": 0.25, "high": 0.25, "refused": 0.0}


def test_told_shares_with_exact_intervals(told):
    out = evaluate.told_shares(told, told.dx.isin(["mel", "bcc", "akiec"]).to_numpy())
    assert (out["malignant_low"], out["melanoma_low"], out["benign_low"], out["benign_high"]) == (0.25, 0.5, 0.5, 0.25)
    assert out["malignant_low_ci95"] == calibrate.clopper_pearson(1, 4)
    assert out["benign_low_ci95"] == calibrate.clopper_pearson(2, 4)


def test_clopper_pearson_bounds():
    n = 10
    # At 0 and n successes the exact interval has a closed form: 1 - (alpha/2)^(1/n).
    assert calibrate.clopper_pearson(0, n) == pytest.approx([0.0, 1 - 0.025 ** (1 / n)], abs=1e-12)
    assert calibrate.clopper_pearson(n, n) == pytest.approx([0.025 ** (1 / n), 1.0], abs=1e-12)
    assert calibrate.clopper_pearson(5, 10) == pytest.approx([0.187086, 0.812914], abs=1e-6)  # textbook values
    assert np.isnan(calibrate.clopper_pearson(0, 0)).all()


def test_equal_mass_bins_hold_equal_counts():
    p = np.random.default_rng(0).permutation(np.linspace(0, 1, 25))
    which = calibrate.equal_mass_bins(p, 10)
    assert sorted(np.bincount(which, minlength=10)) == [2] * 5 + [3] * 5
    assert all(p[which == b].max() <= p[which == b + 1].min() for b in range(9))  # bins follow p
    assert np.bincount(calibrate.equal_mass_bins(np.full(10, 0.3), 10)).tolist() == [1] * 10  # ties spread out


def test_equal_mass_ece_differs_from_equal_width():
    p, y = np.array([0.02, 0.04, 0.06, 0.08]), np.array([0.0, 0.0, 1.0, 1.0])
    # Two bins of two: |0 - 0.03| and |1 - 0.07|, each weighted 1/2. Equal-width bins put all four in one
    # bin: |0.5 - 0.05| = 0.45.
    assert calibrate.expected_calibration_error(p, y, bins=2) == pytest.approx(0.48, abs=1e-12)
    assert calibrate.expected_calibration_error(np.array([0.1] * 5 + [0.9] * 5), np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0.0]),
                                   bins=2) == pytest.approx(0.1, abs=1e-12)
    assert evaluate.brier(np.array([0.2, 0.8]), np.array([0.0, 1.0])) == pytest.approx(0.04, abs=1e-12)


def test_actinic_keratosis_labels():
    labels = pd.Series(["ACK", "SCC", "AK (BCN20000)", "SCC (BCN20000)", "Actinic keratosis",
                        "Squamous cell carcinoma", None, "ISIC2019 GT: BKL", "AKIEC"])
    assert evaluate.is_actinic_keratosis(labels).tolist() == [True, False, True, False, True, False, False, False,
                                                              False]


def test_auc_with_actinic_keratosis_counted_benign():
    # bcc .9, AK .8, nv .7, SCC .6, nv .1, melanoma refused (ranks above every answer).
    frame = scored(dx=["bcc", "akiec", "nv", "akiec", "nv", "mel"], status=["done"] * 5 + ["unusable:blurry"],
                   risk=["high", "high", "high", "medium", "low", None], p=[0.9, 0.8, 0.7, 0.6, 0.1, None],
                   ak=[False, True, False, False, False, False])
    m = evaluate.lesion_metrics(frame)
    assert m["auc_refused_as_referred"] == pytest.approx(7 / 8)  # AK malignant: only SCC .6 < nv .7 misranks
    assert m["auc_refused_as_referred_ack_benign"] == pytest.approx(7 / 9)  # AK .8 is now a benign above SCC
    assert m["ak_images"] == 1
    assert m["bands_ack_benign"]["malignant"]["n"] == 3 and m["bands_ack_benign"]["benign"]["high"] == pytest.approx(2 / 3)
    assert m["bands"]["malignant"]["refused"] == 0.25 and m["lesions_refused"] == pytest.approx(1 / 6)
    assert "auc_refused_as_referred_ack_benign" not in evaluate.lesion_metrics(frame.assign(ak=False))


def test_refusal_shares_by_reason_and_source():
    frame = pd.DataFrame({"status": ["unusable:not_a_lesion", "unusable:unclear_subject", "done", "done"],
                          "risk": [None, None, "high", "low"], "repo": ["a/x", "a/x", "b/y", "b/y"],
                          "category": ["face", "food", "food", "food"]}, index=["n1", "n2", "n3", "n4"])
    m = evaluate.non_lesion_metrics(frame)
    assert m["by_repository"] == {"a/x": {"images": 2, "refused": 1.0}, "b/y": {"images": 2, "refused": 0.0}}
    assert m["by_category"]["food"] == {"images": 3, "refused": pytest.approx(1 / 3)}
    assert (m["refused"], m["answered_high"], m["answered"]) == (0.5, 0.25, ["n3", "n4"])


def test_targets_read_direction_and_floor():
    metrics = {"ham10000": {"image_only": {"malignant_low": 0.02, "melanoma_low": 0.0, "benign_low": 0.5,
                                           "benign_high": 0.2}},
               "non_lesion": {"refused": 0.97}}
    out = evaluate.targets(metrics)
    assert not out["ham10000 malignant_low"]["floor_met"] and out["ham10000 melanoma_low"]["aim_met"]
    assert out["ham10000 benign_low"]["aim_met"] and out["ham10000 benign_high"]["floor_met"]
    assert out["non_lesion refused"]["floor_met"] and not out["non_lesion refused"]["aim_met"]
    assert not any(name.startswith("dermnet") for name in out)  # sets not evaluated are left out


def test_validation_prevalence_prefers_the_cards_record():
    table = pd.DataFrame({"split": ["val", "val", "val", "test", "val"], "lesion": [True, True, True, True, False],
                          "source": ["ham10000", "ham10000", "pad_ufes20", "ham10000", "non_lesion"],
                          "clinical": [False, False, True, False, False], "dx": ["mel", "nv", "nv", "mel", None]})
    card = {"training": {"config": {"sources": ["ham10000", "pad_ufes20"]}}}
    assert evaluate.validation_prevalence(card, table) == {"dermoscopy": 0.5, "clinical": 0.0}
    recorded = {**card, "malignant_calibration": {"dermoscopy": {"prevalence": 0.19}, "clinical": {"prevalence": 0.57}}}
    assert evaluate.validation_prevalence(recorded, table) == {"dermoscopy": 0.19, "clinical": 0.57}
