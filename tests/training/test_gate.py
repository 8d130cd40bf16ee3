"""The promotion gate's statistics and its frozen image set, without the emulators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepskin.core.labels import CLASSES, MALIGNANT
from training import promote, retrain, sources
from training.data import data_root, load_split
from training.gate_set import MissingDataSource, make_gate_set, require_sources
from training.train import TrainConfig

BENIGN = [c for c in CLASSES if c not in MALIGNANT]


def scored_model(p: np.ndarray, dx: np.ndarray, groups: np.ndarray, refused: np.ndarray, high: float) -> dict:
    """What model_numbers returns, built from scores: refused images have no answer."""
    scores = pd.DataFrame({"status": np.where(refused, "refused:not_a_lesion", "done"), "malignant": p,
                           "risk": np.where(p >= high, "high", "low"), "dx": dx, "group": groups})
    values = promote.values_of(promote.outcomes(scores))
    return {**values, "non_lesions_refused": 1.0, "scores": scores, "refused": np.ones(len(p) // 4, bool)}


@pytest.fixture
def lesions():
    """Lesions with two images each; malignancy known, so informative and useless scores can be built."""
    rng = np.random.default_rng(7)
    n = 150
    malignant = rng.random(n) < 0.4
    dx = np.repeat(np.where(malignant, rng.choice(MALIGNANT, n), BENIGN[0]), 2)
    informative = np.clip(np.repeat(malignant, 2) * 0.5 + rng.random(2 * n) * 0.5, 0, 1)
    return dx, np.repeat(np.arange(n), 2).astype(str), informative, rng


def test_an_identical_model_is_non_inferior_on_every_check(lesions):
    dx, groups, p, _ = lesions
    model = scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.5)
    decision = promote.decide(model, model)
    assert decision["promoted"] and set(decision["checks"]) == set(promote.CHECKS)
    assert all(d["ci95"] == [0.0, 0.0] for d in decision["differences"].values())


def test_a_candidate_that_ranks_worse_fails_the_auc_test_on_its_interval(lesions):
    dx, groups, p, rng = lesions
    baseline = scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.5)
    useless = scored_model(rng.random(len(p)), dx, groups, np.zeros(len(p), bool), high=0.5)
    decision = promote.decide(useless, baseline)
    low, high = decision["differences"]["auc"]["ci95"]
    assert not decision["checks"]["auc"] and not decision["promoted"]
    assert low <= decision["differences"]["auc"]["point"] <= high < 0


def test_a_small_loss_within_the_margin_passes_but_refusing_more_lesions_fails(lesions):
    dx, groups, p, rng = lesions
    baseline = scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.5)
    slightly_noisier = scored_model(np.clip(p + rng.normal(0, 0.01, len(p)), 0, 1), dx, groups,
                                    np.zeros(len(p), bool), high=0.5)
    assert promote.decide(slightly_noisier, baseline)["checks"]["auc"]
    refuses = scored_model(p, dx, groups, rng.random(len(p)) < 0.2, high=0.5)
    checks = promote.decide(refuses, baseline)["checks"]
    assert not checks["lesions_refused"]


def test_an_undefined_difference_fails_closed(lesions):
    dx, groups, p, _ = lesions
    only_benign = np.full(len(dx), BENIGN[0])
    model = scored_model(p, only_benign, groups, np.zeros(len(p), bool), high=0.5)
    checks = promote.decide(model, model)["checks"]
    assert checks["lesions_refused"] and not any(checks[c] for c in ("auc", "specificity_matched",
                                                                       "melanoma_sensitivity_matched", "malignant_low"))


def test_moving_the_own_high_cut_off_is_not_a_worse_model_but_reassuring_malignant_lesions_is(lesions):
    dx, groups, p, _ = lesions
    baseline = scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.5)
    fewer_urgent = scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.7)  # the same ranking
    decision = promote.decide(fewer_urgent, baseline)
    assert fewer_urgent["sensitivity_high"] < baseline["sensitivity_high"] - 0.2  # its own "high" moved a lot
    assert decision["checks"]["specificity_matched"] and decision["checks"]["melanoma_sensitivity_matched"]
    assert decision["differences"]["specificity_matched"]["ci95"] == [0.0, 0.0]
    # scored_model calls everything under `high` "low": now malignant lesions scored 0.5-0.7 are reassured.
    assert not decision["checks"]["malignant_low"] and not decision["promoted"]


def test_a_candidate_worse_at_the_reference_operating_point_fails_the_matched_checks(lesions):
    dx, groups, p, rng = lesions
    baseline = scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.5)
    benign = ~np.isin(dx, MALIGNANT)
    confuses = np.where(benign & (rng.random(len(p)) < 0.3), p + 0.5, p)  # a third of benign lesions look malignant
    checks = promote.decide(scored_model(np.clip(confuses, 0, 1), dx, groups, np.zeros(len(p), bool), high=0.5),
                            baseline)["checks"]
    assert not checks["specificity_matched"] and not checks["melanoma_sensitivity_matched"]


def test_a_candidate_must_also_pass_against_the_current_model(lesions):
    dx, groups, p, rng = lesions
    noisier = np.clip(p + rng.normal(0, 0.3, len(p)), 0, 1)
    baseline = candidate = scored_model(noisier, dx, groups, np.zeros(len(p), bool), high=0.5)
    current = scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.5)  # promoted since: better
    assert promote.decide(candidate, baseline)["promoted"]
    decision = promote.decide(candidate, baseline, current)
    assert not decision["versus_current"]["checks"]["auc"] and not decision["promoted"]
    assert any(r.startswith("auc: candidate") and "vs current" in r for r in decision["reasons"])


def test_matched_operating_points_on_a_small_example():
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    malignant = np.array([0, 0, 1, 0, 1, 0, 1, 1], bool)
    # referring 3 of 4 malignant lesions needs a cut at 0.6: benign 0.1, 0.2 and 0.4 stay below it
    assert promote.specificity_at(score, malignant, 0.75) == 0.75
    assert promote.specificity_at(score, malignant, 0.0) == 1.0
    # keeping 3 of 4 benign lesions unreferred puts the cut at the 4th benign score, 0.7: 0.8 and 0.9 referred
    assert promote.sensitivity_at(score, ~malignant, malignant, 0.75) == 0.5
    assert promote.sensitivity_at(score, ~malignant, malignant, 1.0) == 0.5  # just above the top benign, 0.7
    assert np.isnan(promote.specificity_at(score, np.zeros(8, bool), 0.5))


def test_wilson_interval_brackets_the_proportion_stays_in_0_1_and_narrows_with_more_images():
    for successes, n in ((0, 10), (10, 10), (3, 10)):
        low, high = promote.wilson(successes, n)
        assert 0 <= low <= successes / n <= high <= 1
    small, large = promote.wilson(3, 10), promote.wilson(300, 1000)
    assert large[1] - large[0] < small[1] - small[0]
    assert all(np.isnan(promote.wilson(0, 0)))


def test_the_gate_set_is_frozen_lesion_grouped_validation_only():
    gate = pd.read_csv(sources.GATE_CSV, dtype=str)
    split = load_split()
    ham = split[split.image_id.isin(gate.image_id)]
    assert set(ham.split) == {"val"}  # never the test split the report quotes, never training images
    in_gate = split.lesion_id.isin(ham.lesion_id)
    assert split[in_gate].image_id.isin(gate.image_id).all()  # a lesion is in the gate whole or not at all
    val = split[split.split == "val"].assign(source="ham10000", group=lambda f: f.lesion_id)
    redrawn = make_gate_set(val)
    assert list(redrawn.image_id) == list(gate[gate.source == "ham10000"].image_id)  # the committed draw
    assert {"ham10000", "pad_ufes20"} <= set(gate.source)


def test_training_runs_never_see_the_gate_set():
    table = sources.table(["ham10000"])
    gate = set(pd.read_csv(sources.GATE_CSV, dtype=str).image_id)
    assert (table.split == "gate").any()
    assert set(table.image_id[table.split.isin(["train", "val"])]).isdisjoint(gate)


# --- the feedback test set: superiority on the clinicians' held-out labels ------------------------------

def feedback_scores(p: np.ndarray, truth: np.ndarray, refused: np.ndarray | None = None,
                    clinician: np.ndarray | None = None) -> pd.DataFrame:
    """What promote.feedback_scores returns: one answer per held-out label, one group each, "high" from 0.5 and
    "low" below 0.2; two clinicians take turns unless told."""
    refused = np.zeros(len(p), bool) if refused is None else refused
    clinician = np.array(["a", "b"])[np.arange(len(p)) % 2] if clinician is None else clinician
    risk = np.select([p >= 0.5, p < 0.2], ["high", "low"], "medium")
    return pd.DataFrame({"status": np.where(refused, "refused:not_a_lesion", "done"), "malignant": p, "risk": risk,
                         "group": np.arange(len(p)).astype(str), "truth": truth, "clinician": clinician})


@pytest.fixture
def held_out_truth():
    rng = np.random.default_rng(11)
    return rng.random(60) < 0.4, rng


def test_a_candidate_must_be_better_on_the_clinicians_held_out_labels(held_out_truth):
    truth, rng = held_out_truth
    current = feedback_scores(np.clip(truth * 0.3 + rng.random(60) * 0.7, 0, 1), truth)
    better = feedback_scores(np.clip(truth * 0.8 + rng.random(60) * 0.2, 0, 1), truth)
    check = promote.feedback_superiority(better, current)
    assert check["applies"] and check["passed"] and check["ci95"][1] < 0 and check["labels"] == 60
    same = promote.feedback_superiority(current, current)  # merely as good: not learning
    assert same["applies"] and not same["passed"] and same["ci95"] == [0.0, 0.0]
    decision = promote.with_feedback_test({"promoted": True, "reasons": []}, same)
    assert not decision["promoted"] and "failed" in decision["reasons"][-1]


def test_a_better_ranking_that_sends_more_benign_lesions_urgently_is_refused():
    """The BCN20000 learning curve's promoted round: a lower Brier score on the new source's held-out labels, but
    far more of its benign lesions told "high". The triage checks refuse it; so does one that reassures more
    malignant lesions."""
    rng = np.random.default_rng(5)
    truth = np.arange(200) // 2 % 2 == 0  # each clinician labels as many malignant as benign lesions
    current = feedback_scores(np.where(truth, 0.2 + 0.5 * rng.random(200), 0.1 + 0.45 * rng.random(200)), truth)
    # Every malignant lesion near certain, every benign one just above the "high" cut-off: Brier drops.
    urgent = feedback_scores(np.where(truth, 0.99, 0.5 + 0.01 * rng.random(200)), truth)
    check = promote.feedback_superiority(urgent, current)
    assert check["improved"] and check["applies"] and not check["passed"]
    assert check["triage"]["benign_high"]["difference"] > 0.5 and not check["triage"]["benign_high"]["passed"]
    assert check["triage"]["malignant_low"]["passed"] and "benign_high told candidate" in check["reason"]
    # Malignant lesions near the middle, a few told "low": better calibrated overall, more of them reassured.
    reassuring = feedback_scores(np.where(truth, np.where(np.arange(200) % 20 == 0, 0.19, 0.6), 0.01), truth)
    check = promote.feedback_superiority(reassuring, current)
    assert check["improved"] and check["triage"]["benign_high"]["passed"]
    assert check["triage"]["malignant_low"]["difference"] == pytest.approx(0.1)
    assert not check["triage"]["malignant_low"]["passed"] and not check["passed"]
    assert promote.feedback_superiority(current, current)["triage"]["benign_high"]["passed"]  # no change passes


def test_too_few_held_out_labels_do_not_apply_the_check_and_say_so(held_out_truth):
    truth, rng = held_out_truth
    few = promote.FEEDBACK_MIN_LABELS - 1
    better = feedback_scores(truth[:few].astype(float), truth[:few])
    check = promote.feedback_superiority(better, feedback_scores(rng.random(few), truth[:few]))
    assert not check["applies"] and not check["passed"] and "a person decides" in check["reason"]
    assert promote.with_feedback_test({"promoted": True, "reasons": []}, check)["promoted"]  # gate() then waits
    empty = promote.feedback_superiority(feedback_scores(np.array([]), np.array([], bool)),
                                         feedback_scores(np.array([]), np.array([], bool)))
    assert (empty["labels"], empty["applies"]) == (0, False) and np.isnan(empty["ci95"]).all()


def test_an_improvement_that_rests_on_one_clinicians_labels_is_not_learning():
    """A poisoner's flipped labels train the candidate to fit the poisoner's held-out labels too: pooled, the
    candidate looks better; without the poisoner's labels it is worse, and the check fails."""
    rng = np.random.default_rng(3)
    truth = rng.random(120) < 0.4
    clinician = np.array(["a", "b", "poisoner"])[np.arange(120) % 3]
    poisoned = clinician == "poisoner"
    said = np.where(poisoned, ~truth, truth)  # what each clinician wrote: the poisoner flips every label
    current = feedback_scores(np.clip(truth * 0.5 + rng.random(120) * 0.5, 0, 1), said, clinician=clinician)
    candidate = feedback_scores(np.where(poisoned, said * 0.9 + 0.05, np.clip(truth * 0.3 + rng.random(120) * 0.7,
                                                                              0, 1)), said, clinician=clinician)
    check = promote.feedback_superiority(candidate, current)
    assert check["improved"] and check["ci95"][1] < 0  # pooled, it passes
    assert check["applies"] and not check["passed"] and check["clinicians"] == 3
    assert not check["without_each_clinician"]["poisoner"]["improved"]
    assert "without clinician poisoner" in check["reason"]


def test_one_clinicians_held_out_labels_cannot_show_learning_and_a_person_decides(held_out_truth):
    truth, rng = held_out_truth
    alone = np.full(60, "a")
    better = feedback_scores(np.clip(truth * 0.8 + rng.random(60) * 0.2, 0, 1), truth, clinician=alone)
    check = promote.feedback_superiority(better, feedback_scores(rng.random(60), truth, clinician=alone))
    assert check["improved"] and not check["applies"] and "at least two clinicians" in check["reason"]


def test_a_refusal_on_a_held_out_label_scores_as_no_information(held_out_truth):
    truth, _ = held_out_truth
    refused = feedback_scores(truth.astype(float), truth, refused=np.ones(60, bool))
    assert promote.brier(refused) == pytest.approx(promote.REFUSED_CHANCE ** 2)


# --- no data source may be missing -----------------------------------------------------------------------

@pytest.fixture
def without_pad(monkeypatch, tmp_path):
    """Production's rule (no partial gate) on a machine whose PAD-UFES-20 folder is missing."""
    monkeypatch.delenv("DEEPSKIN_ALLOW_PARTIAL_GATE")
    monkeypatch.setenv("DEEPSKIN_PAD_UFES20", str(tmp_path / "no-pad"))


@pytest.mark.usefixtures("without_pad")
def test_the_gate_and_a_retrain_fail_closed_when_a_data_source_is_missing(tmp_path):
    with pytest.raises(MissingDataSource, match="pad_ufes20"):
        promote.gate(tmp_path, "no-pad", {})
    with pytest.raises(MissingDataSource, match="pad_ufes20"):
        retrain.run("no-pad", TrainConfig(), data_root(), tmp_path, 0)


def test_the_fixture_tests_alone_may_gate_on_part_of_the_set(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPSKIN_PAD_UFES20", str(tmp_path / "no-pad"))
    monkeypatch.setenv("DEEPSKIN_ALLOW_PARTIAL_GATE", "fixtures")
    assert "pad_ufes20" in require_sources({})
    monkeypatch.setenv("DEEPSKIN_ALLOW_PARTIAL_GATE", "1")  # nothing but the one declared value allows it
    with pytest.raises(MissingDataSource):
        require_sources({})


def with_types(model: dict, clinical: np.ndarray) -> dict:
    return {**model, "scores": model["scores"].assign(clinical=clinical)}


def test_each_image_type_is_checked_on_its_own_so_a_phone_photo_regression_cannot_hide_in_the_pool(lesions):
    dx, groups, p, rng = lesions
    clinical = np.arange(len(p)) // 2 % 10 == 0  # one lesion in ten is a phone photo, as in the gate set
    # Phone photos score in a band of their own (as another camera can), between the benign and the malignant
    # dermoscopy, ranked well within it by the baseline and at random by the candidate: few pairs of the pool
    # are phone-photo pairs, so the pool barely moves.
    malignant = np.isin(dx, MALIGNANT)
    dermoscopy = np.where(malignant, 0.6 + 0.8 * (p - 0.5), 0.8 * p)  # benign 0-0.4, malignant 0.6-1
    on_phones = np.where(clinical, 0.4 + 0.2 * p, dermoscopy)
    baseline = with_types(scored_model(on_phones, dx, groups, np.zeros(len(p), bool), high=0.5), clinical)
    decision = promote.decide(baseline, baseline)
    assert decision["promoted"] and {"auc_clinical", "auc_dermoscopy", "malignant_low_clinical"} <= set(decision["checks"])
    random_on_phones = np.where(clinical, 0.4 + 0.2 * rng.random(len(p)), dermoscopy)
    candidate = with_types(scored_model(random_on_phones, dx, groups, np.zeros(len(p), bool), high=0.5), clinical)
    decision = promote.decide(candidate, baseline)
    assert decision["checks"]["auc"] and decision["checks"]["auc_dermoscopy"]
    assert not decision["checks"]["auc_clinical"] and not decision["promoted"]


def test_a_gate_set_without_phone_photos_has_no_phone_photo_check(lesions):
    dx, groups, p, _ = lesions
    dermoscopy_only = with_types(scored_model(p, dx, groups, np.zeros(len(p), bool), high=0.5), np.zeros(len(p), bool))
    checks = promote.decide(dermoscopy_only, dermoscopy_only)["checks"]
    assert "auc_dermoscopy" in checks and not any(c.endswith("_clinical") for c in checks)
