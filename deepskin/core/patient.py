"""Optional facts about the person and the lesion (age, sex, body site) as the model's second input.

Every field may be missing: the vector says so explicitly (an age flag; all-zero sex and site), and the
network was trained with fields dropped at random, so an answer without them stays as good as one from
the image alone. Sites use HAM10000's vocabulary; PAD-UFES-20's regions map onto it.
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
VECTOR_SIZE = 2 + len(SEXES) + len(SITES)  # (age / 100, age known), sex one-hot, site one-hot
MAX_AGE = 120


class InvalidPatientInfo(ValueError):
    """A field given with a value outside its vocabulary or range; the message names the field."""


@dataclass(frozen=True)
class PatientInfo:
    age: float | None = None
    sex: str | None = None
    site: str | None = None

    @classmethod
    def parse(cls, age=None, sex=None, site=None) -> PatientInfo:
        """From loose user input (strings from a form, CLI, object metadata or CSV); blank means missing."""
        def blank(value) -> bool:
            return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in (
                "", "unknown")

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
        return cls(parsed_age, parsed_sex, parsed_site)

    def given(self) -> dict:
        """The fields that were given, for the result document."""
        return {k: v for k, v in (("age", self.age), ("sex", self.sex), ("site", self.site)) if v is not None}

    def vector(self) -> np.ndarray:
        v = np.zeros(VECTOR_SIZE, np.float32)
        if self.age is not None:
            v[0], v[1] = self.age / 100.0, 1.0
        if self.sex is not None:
            v[2 + SEXES.index(self.sex)] = 1.0
        if self.site is not None:
            v[2 + len(SEXES) + SITES.index(self.site)] = 1.0
        return v


UNKNOWN = PatientInfo()
