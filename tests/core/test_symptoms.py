"""The questions about a lesion's history, through the shipped model and the assessment pipeline: one vocabulary
and its validation, the card's symptom stack applied to clinical photos only, unknown answers changing
nothing, answers never making a photo "low" that is not "low" alone, and a reported change, growth or
bleeding never "low" (real inference on the fixture photos)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepskin.core.bundle import BUNDLED_MODEL
from deepskin.core.model import Model, logit
from deepskin.core.patient import NO, QUESTIONS, RED_FLAGS, UNKNOWN, YES, InvalidPatientInfo, PatientInfo
from deepskin.core.pipeline import assess, assess_batch
from training import batch_predict

FIXTURES = Path(__file__).parents[1] / "fixtures"
PHOTOS = sorted((FIXTURES / "lesions").glob("*.jpg")) + sorted((FIXTURES / "phone").glob("*.jpg"))
EVERYONE_LOW = {"low": 1.01, "high": 2.0}  # every probability is below "low"
ALL_NO = PatientInfo.parse(**dict.fromkeys(QUESTIONS, "no"))


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(BUNDLED_MODEL)


def with_card(model: Model, **changes) -> Model:
    return Model(model.path, {**model.card, **changes})


def assessed(model: Model, patient: PatientInfo, paths=PHOTOS):
    results = assess_batch([(p.read_bytes(), patient) for p in paths], model, heatmaps=False)
    assert all(r.status == "done" for r in results)
    return results


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize(("value", "answer"), [
    ("yes", YES), (" Yes ", YES), ("true", YES), (True, YES), ("no", NO), ("False", NO), (False, NO),
    ("not sure", None), ("", None), (None, None), ("UNK", None), (float("nan"), None),
])
def test_every_question_takes_yes_no_or_not_sure(question, value, answer):
    patient = PatientInfo.parse(**{question: value})
    assert patient.given() == ({question: answer} if answer else {})
    code = {YES: 1, NO: -1, None: 0}[answer]
    assert patient.answer_codes().tolist() == [code if q == question else 0 for q in QUESTIONS]


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("value", ["maybe", "2", "yess", "y"])
def test_a_bad_answer_is_refused_naming_its_question(question, value):
    with pytest.raises(InvalidPatientInfo, match=f"^{question} must be yes, no or not sure"):
        PatientInfo.parse(**{question: value})


def test_an_unknown_question_is_refused():
    with pytest.raises(InvalidPatientInfo, match="no such question: mood"):
        PatientInfo.parse(mood="yes")


def test_unknown_answers_change_nothing(model):
    not_sure = PatientInfo.parse(**dict.fromkeys(QUESTIONS, "not sure"))
    for plain, unsure in zip(assessed(model, UNKNOWN), assessed(model, not_sure)):
        assert plain.fields() == {**unsure.fields(), "timings_ms": plain.timings_ms}


def test_the_cards_stack_moves_clinical_photos_by_its_log_odds_and_nothing_else(model):
    stack = model.card["symptoms"]
    answers = {"changed": "no", "bled": "no", "itches": "yes", "hurts": "yes"}  # no red flag: see below
    expected = sum(stack["log_odds"][q][a] for q, a in answers.items())
    assert expected != 0
    plain, answered = assessed(model, UNKNOWN), assessed(model, PatientInfo.parse(**answers))
    kinds = {r.image_type for r in plain}
    assert kinds == {"clinical", "dermoscopy"}  # both kinds are exercised
    for before, after in zip(plain, answered):
        shift = logit(np.array(after.malignant_probability)) - logit(np.array(before.malignant_probability))
        if before.image_type in stack["applies_to"]:
            assert shift == pytest.approx(expected, abs=1e-3)
            assert sum(after.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        else:
            assert after.probabilities == before.probabilities and after.risk == before.risk
        assert after.patient == answers


@pytest.mark.parametrize("flag", RED_FLAGS)
@pytest.mark.parametrize("card_stack", [True, False])
def test_a_reported_change_growth_or_bleeding_is_never_low(model, flag, card_stack):
    """On every image type, with or without the card's stack: the cut-offs below would reassure everyone."""
    lenient = with_card(model, thresholds={"dermoscopy": EVERYONE_LOW, "clinical": EVERYONE_LOW},
                        ood={"threshold": float("inf")}, image_type={"unsure": [0.5, 0.5]},
                        symptoms=model.card["symptoms"] if card_stack else {})
    assert {r.risk for r in assessed(lenient, ALL_NO)} == {"low"}  # the control
    flagged = assessed(lenient, PatientInfo.parse(**{**dict.fromkeys(QUESTIONS, "no"), flag: "yes"}))
    assert {r.risk for r in flagged} == {"medium"}
    assert {r.image_type for r in flagged} == {"clinical", "dermoscopy"}


def test_answers_never_make_a_photo_low_that_is_not_low_alone(model):
    phone = min((FIXTURES / "phone").glob("*.jpg"))
    plain = assess(phone.read_bytes(), model)
    assert plain.image_type == "clinical"
    p = plain.malignant_probability
    lowered = assess(phone.read_bytes(), model, ALL_NO).malignant_probability
    assert lowered < p  # every "no" lowers the chance on a phone photo
    just_medium = with_card(model, thresholds={**model.card["thresholds"], "clinical": {"low": p - 1e-4, "high": 1.0}})
    assert assess(phone.read_bytes(), just_medium).risk == "medium"
    assert assess(phone.read_bytes(), just_medium, ALL_NO).risk == "medium"  # under "low", still not "low"
    just_high = with_card(model, thresholds={**model.card["thresholds"], "clinical": {"low": 0.0, "high": p - 1e-4}})
    assert assess(phone.read_bytes(), just_high).risk == "high"
    assert assess(phone.read_bytes(), just_high, ALL_NO).risk == "medium"  # but "high" may become "medium"


def test_the_shipped_card_says_where_its_stack_holds():
    stack = Model(BUNDLED_MODEL).card["symptoms"]
    assert stack["applies_to"] == ["clinical"]
    assert set(stack["log_odds"]) == set(QUESTIONS)
    for odds in stack["log_odds"].values():  # a warning sign never lowers the chance, its absence never raises it
        assert odds[YES] >= 0 >= odds[NO]
    assert stack["fitted_on"]["model_version"] == Model(BUNDLED_MODEL).version
    assert {"val", "test"} <= set(stack["metrics"])


# --- batch_predict's --metadata CSV: PAD-UFES-20's column names -----------------------------------------------

def metadata_csv(tmp_path: Path, answers: dict[str, str]) -> Path:
    """The phone fixtures' metadata with one row's answers under PAD-UFES-20's column names."""
    frame = pd.read_csv(FIXTURES / "phone" / "metadata.csv", dtype=str)
    for column, value in answers.items():
        frame[column] = ""
        frame.loc[0, column] = value
    path = tmp_path / "metadata.csv"
    frame.to_csv(path, index=False)
    return path


def test_batch_predict_reads_answers_under_pads_names(model, tmp_path):
    csv = metadata_csv(tmp_path, {"itch": "True", "grew": "UNK", "hurt": "False", "changed": "", "bleed": "yes",
                                  "elevation": "no"})
    patients = batch_predict.read_patients(csv)
    first, *others = sorted(patients)
    assert patients[first].given() == {"age": 41.0, "site": "chest", "itches": "yes", "hurts": "no", "bled": "yes",
                                       "raised": "no"}
    assert all(not set(patients[i].given()) & set(QUESTIONS) for i in others)
    image = FIXTURES / "phone" / f"{first}.jpg"
    (row,) = batch_predict.score_folder([image], model, patients)
    direct = assess(image.read_bytes(), model, patients[first])
    assert row["malignant"] == direct.malignant_probability and row["risk"] == direct.risk != "low"
    assert direct.malignant_probability != assess(image.read_bytes(), model).malignant_probability


@pytest.mark.parametrize("column", QUESTIONS.values())
def test_batch_predict_refuses_a_bad_answer_naming_the_image_and_question(tmp_path, column):
    question = next(q for q, c in QUESTIONS.items() if c == column)
    with pytest.raises(SystemExit, match=f"image PAT_1020_111_593: {question} must be yes, no or not sure"):
        batch_predict.read_patients(metadata_csv(tmp_path, {column: "sometimes"}))
