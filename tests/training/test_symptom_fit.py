"""training.symptoms' fitting on synthetic answers (the real fit needs PAD-UFES-20: `python -m training.symptoms`):
a warning sign never gets a negative weight, an unknown answer adds nothing, and the served log-odds average
to nothing over the answers they were fitted on."""

import numpy as np
import pytest

from deepskin.core.patient import NO, QUESTIONS, YES
from training import symptoms


def synthetic(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Answers (1/0/NaN) where "bled" raises the odds, "raised" lowers them and the rest do nothing."""
    rng = np.random.default_rng(seed)
    answers = rng.integers(0, 2, (n, len(QUESTIONS))).astype(float)
    answers[rng.random(answers.shape) < 0.15] = np.nan
    bled, raised = answers[:, list(QUESTIONS).index("bled")], answers[:, list(QUESTIONS).index("raised")]
    z = -0.3 + 2.0 * np.nan_to_num(bled - 0.5) - 1.5 * np.nan_to_num(raised - 0.5)
    return answers, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)


def test_weights_are_held_at_or_above_zero():
    answers, y = synthetic()
    free = symptoms.answer_weights(answers, y, None, nonnegative=False)["weights"]
    held = symptoms.answer_weights(answers, y, None)["weights"]
    assert free["bled"] > 1.5 and free["raised"] < -1.0  # the control: the data do say "raised" lowers it
    assert held["bled"] > 1.5 and held["raised"] == 0.0
    assert all(w >= 0 for w in held.values())


def test_unknown_adds_nothing_and_the_log_odds_average_to_nothing():
    answers, y = synthetic()
    fitted = symptoms.answer_weights(answers, y, None)
    assert symptoms.answer_score(np.full((1, len(QUESTIONS)), np.nan), fitted) == pytest.approx([0.0])
    odds = symptoms.log_odds(fitted, weight=0.7)
    for question, share in fitted["centre"].items():
        assert odds[question][YES] >= 0 >= odds[question][NO]
        assert share * odds[question][YES] + (1 - share) * odds[question][NO] == pytest.approx(0.0, abs=1e-3)
        assert odds[question][YES] - odds[question][NO] == pytest.approx(0.7 * fitted["weights"][question], abs=1e-3)


def test_the_combination_recovers_the_answers_weight():
    rng = np.random.default_rng(1)
    photo_logit, score = rng.normal(0, 2, 20000), rng.normal(0, 1, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(photo_logit + 0.6 * score)))).astype(float)
    fitted = symptoms.combination(1 / (1 + np.exp(-photo_logit)), score, y)
    assert fitted["weight"] == pytest.approx(0.6, abs=0.05)
    assert fitted["free_fit"]["image_logit_weight"] == pytest.approx(1.0, abs=0.08)
    assert fitted["val_log_loss"] < fitted["val_log_loss_photo"]
