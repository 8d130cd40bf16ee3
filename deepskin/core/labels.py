"""Class names, the malignant set, risk bands and the words a person reads."""

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
CLASS_NAMES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus (mole)",
    "vasc": "vascular lesion",
}
# HAM10000's convention: akiec (intraepithelial carcinoma / Bowen's disease) counts as malignant.
MALIGNANT = ("akiec", "bcc", "mel")
MALIGNANT_INDEX = tuple(CLASSES.index(c) for c in MALIGNANT)
# Coarse labels a reporter may give instead of a class.
COARSE_LABELS = ("benign", "malignant")

RISK_BANDS = ("low", "medium", "high")
NOT_A_DIAGNOSIS = (
    "DeepSkin is a triage aid, not a diagnosis. If the lesion changes, bleeds, itches or worries you, "
    "see a doctor whatever this result says."
)
ADVICE = {
    "low": "Low risk. No visit is needed now: look at it again and photograph it in 3 months, sooner if it changes.",
    "medium": "Medium risk. Have it checked by a doctor or dermatologist; this is not urgent.",
    "high": "High risk. See a dermatologist soon, ideally within 2 weeks; bring this photo with you.",
    "retake": "The photo could not be assessed. Retake it in good light, in focus, with the lesion centred "
    "and filling about half of the frame.",
}


# Said beside an answer that is given but deserves less trust than usual; never a refusal.
CAVEATS = {
    "unfamiliar_photo": "This photo is unlike the photos DeepSkin learned from (another kind of camera, "
    "light or framing), so this answer is less certain than usual. Give more weight to a doctor's opinion.",
}
UNCLEAR_SUBJECT = (
    "DeepSkin could not tell whether this photo shows a skin lesion, so it was not assessed. Retake it "
    "closer, with the lesion in the middle, in focus and in good light."
)
NOT_A_LESION = (
    "This photo does not seem to show skin with a lesion, so it was not assessed. If it does show one, "
    "retake it closer, with the lesion in the middle, in focus and in good light."
)


def advice_for(band: str) -> str:
    """The next step for a risk band (or "retake"), always with the standing disclaimer."""
    return f"{ADVICE[band]} {NOT_A_DIAGNOSIS}"
