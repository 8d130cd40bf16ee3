"""The clinicians' labels as data: one label per prediction, a rolling held-out test share, weights, and no
image that the gate or a test split already holds. Pure functions of the labels and image bytes given.

- `resolve`: labels from different clinicians on one prediction are resolved to one: a biopsy-confirmed
  (histopathology) label wins; otherwise the majority; a tie, or biopsies that disagree, is dropped.
- `part`: a label's group (the followed spot, standing for the patient, when its prediction was in one;
  else the prediction) decides, by a hash, whether it belongs to the feedback test set (FEEDBACK_TEST_SHARE),
  to the calibration share (FEEDBACK_CALIBRATION_SHARE) or to training: the same group always lands in the
  same part, whatever job reads it, so the test set grows with the labels and is never trained or fitted on.
  The calibration share is never trained on either: it joins the replayed sources' validation rows where the
  candidate's calibration and risk-band cut-offs are fitted (training.export), so that they hold on the photos
  clinicians actually see, not only on the sources the model already knew.
- `sample_weight`: a biopsy-confirmed label is drawn BIOPSY_WEIGHT times as often in training.
- `near_duplicates`: feedback images whose same-spot fingerprint (deepskin.core.spot) is within
  DUPLICATE_BELOW of an image of the gate set or a test split: training on them would leak into the
  numbers that judge the model.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pandas as pd

from deepskin.core.labels import MALIGNANT
from deepskin.core.spot import distance, fingerprint

SOURCE = "feedback"  # the clinicians' labels as rows of training.sources (and a key of TrainConfig.source_weight)
FEEDBACK_TEST_SHARE = 0.25
FEEDBACK_CALIBRATION_SHARE = 0.20
BIOPSY_WEIGHT = 3.0
# Far below the same-spot hint's 0.30: only another copy of one photo (re-encoded, resized) is this close.
DUPLICATE_BELOW = 0.08
# clinician: the labelling clinician's pseudonym (deepskin.loop.ledger.pseudonym); a resolved label keeps the
# first agreeing clinician's, for the feedback check that leaves each clinician's held-out labels out in turn.
COLUMNS = ["image_id", "prediction_id", "group", "label", "histopathology", "path", "clinician"]


def resolve(labels: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per prediction (COLUMNS; the first clinician's row carries the image); and how many
    predictions were dropped because their labels disagree without a way to decide."""
    kept, dropped = [], 0
    for _, rows in labels.groupby("prediction_id", sort=True):
        label = agreed_label(rows)
        if label is None:
            dropped += 1
            continue
        row = rows[rows.label == label].iloc[0]
        kept.append({**row.to_dict(), "histopathology": bool(rows[rows.label == label].histopathology.any())})
    return pd.DataFrame(kept, columns=COLUMNS), dropped


def agreed_label(rows: pd.DataFrame) -> str | None:
    biopsies = set(rows[rows.histopathology.astype(bool)].label)
    if biopsies:
        return biopsies.pop() if len(biopsies) == 1 else None
    counts = Counter(rows.label).most_common(2)
    tie = len(counts) == 2 and counts[0][1] == counts[1][1]
    return None if tie else counts[0][0]


def part(group: str) -> str:
    """"test", "calibration" or "train": a fixed hash of the label group, so the answer never changes."""
    bucket = int(hashlib.sha256(f"feedback-test\n{group}".encode()).hexdigest()[:8], 16) / 16 ** 8
    if bucket < FEEDBACK_TEST_SHARE:
        return "test"
    return "calibration" if bucket < FEEDBACK_TEST_SHARE + FEEDBACK_CALIBRATION_SHARE else "train"


def split(labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training labels, calibration labels, feedback test labels)."""
    parts = labels.group.astype(str).map(part)
    return tuple(labels[parts == name].reset_index(drop=True) for name in ("train", "calibration", "test"))


def sample_weight(labels: pd.DataFrame) -> pd.Series:
    return labels.histopathology.astype(bool).map({True: BIOPSY_WEIGHT, False: 1.0})


def malignant(label: str) -> bool:
    """A label's truth for the gate: a malignant class or the coarse "malignant"."""
    return label in MALIGNANT or label == "malignant"


def near_duplicates(images: dict[str, bytes], references: list[dict]) -> set[str]:
    """The names in `images` whose fingerprint is within DUPLICATE_BELOW of any reference fingerprint."""
    prints = {name: fingerprint(data) for name, data in images.items()}
    return {name for name, ours in prints.items() if any(distance(ours, ref) < DUPLICATE_BELOW for ref in references)}
