"""Optional facts about the person and the lesion: age, sex and body site (the model's second input), and the
answers to six questions about the lesion's history (has it changed, grown, bled; does it itch, hurt; is it
raised), which the model card's `symptoms` stack turns into a shift of P(malignant) (deepskin.core.model).

Every field may be missing: the vector says so explicitly (an age flag; all-zero sex and site), and the
network was trained with fields dropped at random, so an answer without them stays as good as one from
the image alone. Sites use HAM10000's vocabulary; PAD-UFES-20's regions map onto it. A question left
unanswered (blank, "not sure") is unknown and shifts nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEXES = ("male", "female")
SITES = (
    "abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity", "neck",
    "scalp", "trunk", "upper extremity",
)
# PAD-UFES-20 region -> HAM10000 localization.
PAD_REGIONS = {
    "ABDOMEN": "abdomen", "ARM": "upper extremity", "BACK": "back", "CHEST": "chest", "EAR": "ear",
    "FACE": "face", "FOOT": "foot", "FOREARM": "upper extremity", "HAND": "hand", "LIP": "face",
    "NECK": "neck", "NOSE": "face", "SCALP": "scalp", "THIGH": "lower extremity",
}
# The questions: the name every path uses (CLI flag, HTTP field, object metadata, the result's `patient`) ->
# PAD-UFES-20's column for it (batch_predict's CSV, training.symptoms).
QUESTIONS = {"changed": "changed", "grew": "grew", "bled": "bleed", "itches": "itch", "hurts": "hurt",
             "raised": "elevation"}
# Each question in plain words (the page asks the same: web/index.html).
ASKED = {"changed": "Has it changed lately (size, shape or colour)?", "grew": "Has it grown?",
         "bled": "Has it bled (without being scratched or cut)?", "itches": "Does it itch?",
         "hurts": "Does it hurt?", "raised": "Is it raised above the skin?"}
RED_FLAGS = ("changed", "grew", "bled")  # a "yes" to any of these is never told "low" (deepskin.core.model)
YES, NO = "yes", "no"
ANSWER_WORDS = {"yes": YES, "true": YES, "no": NO, "false": NO}  # true/false: PAD-UFES-20's spelling
UNKNOWN_WORDS = ("", "unknown", "not sure", "not_sure", "unk")  # unk: PAD-UFES-20's
FIELDS = ("age", "sex", "site", *QUESTIONS)
VECTOR_SIZE = 2 + len(SEXES) + len(SITES)  # (age / 100, age known), sex one-hot, site one-hot
MAX_AGE = 120


class InvalidPatientInfo(ValueError):
    """A field given with a value outside its vocabulary or range; the message names the field."""


def blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in ("", "unknown")


def parse_answer(question: str, value) -> str | None:
    """yes, no, or None (unknown) from loose input; anything else is refused, naming the question."""
    if blank(value) or str(value).strip().lower() in UNKNOWN_WORDS:
        return None
    word = ANSWER_WORDS.get(str(value).strip().lower())
    if word is None:
        raise InvalidPatientInfo(f"{question} must be yes, no or not sure, not {str(value)[:20]!r}")
    return word


@dataclass(frozen=True)
class PatientInfo:
    age: float | None = None
    sex: str | None = None
    site: str | None = None
    answers: tuple[str | None, ...] = (None,) * len(QUESTIONS)  # yes, no or None per question, QUESTIONS' order

    @classmethod
    def parse(cls, age=None, sex=None, site=None, **answers) -> PatientInfo:
        """From loose user input (strings from a form, CLI, object metadata or CSV); blank means missing.
        `answers` are keyword arguments named after QUESTIONS."""
        parsed_age = None
        if not blank(age):
            try:
                parsed_age = float(age)
            except (TypeError, ValueError):
                raise InvalidPatientInfo(f"age must be a number of years, not {str(age)[:20]!r}") from None
            if not 0 <= parsed_age <= MAX_AGE:
                raise InvalidPatientInfo(f"age must be between 0 and {MAX_AGE}, not {parsed_age:g}")
        parsed_sex = None if blank(sex) else str(sex).strip().lower()
        if parsed_sex is not None and parsed_sex not in SEXES:
            raise InvalidPatientInfo(f"sex must be one of {', '.join(SEXES)}, not {str(sex)[:20]!r}")
        parsed_site = None if blank(site) else str(site).strip().lower().replace("_", " ")
        if parsed_site is not None and parsed_site not in SITES:
            raise InvalidPatientInfo(f"site must be one of {', '.join(SITES)}, not {str(site)[:30]!r}")
        if unknown := set(answers) - set(QUESTIONS):
            raise InvalidPatientInfo(f"no such question: {', '.join(sorted(unknown))}")
        return cls(parsed_age, parsed_sex, parsed_site, tuple(parse_answer(q, answers.get(q)) for q in QUESTIONS))

    def given(self) -> dict:
        """The fields that were given, for the result document (and, as text, for the wire)."""
        facts = (("age", self.age), ("sex", self.sex), ("site", self.site), *zip(QUESTIONS, self.answers))
        return {k: v for k, v in facts if v is not None}

    def vector(self) -> np.ndarray:
        v = np.zeros(VECTOR_SIZE, np.float32)
        if self.age is not None:
            v[0], v[1] = self.age / 100.0, 1.0
        if self.sex is not None:
            v[2 + SEXES.index(self.sex)] = 1.0
        if self.site is not None:
            v[2 + len(SEXES) + SITES.index(self.site)] = 1.0
        return v

    def answer_codes(self) -> np.ndarray:
        """+1 yes, -1 no, 0 unknown per question (QUESTIONS' order): what the model's symptom stack reads."""
        return np.array([{YES: 1, NO: -1}.get(a, 0) for a in self.answers], np.int8)


UNKNOWN = PatientInfo()
