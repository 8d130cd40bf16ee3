"""The clinicians' labels as data (training.feedback_set): resolution, the held-out share, weights, duplicates."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from deepskin.core.spot import fingerprint
from training import feedback_set, retrain, sources
from training.train import Split, TrainConfig

LESIONS = sorted((Path(__file__).parents[1] / "fixtures" / "lesions").glob("*.jpg"))


def labels(*rows: tuple[str, str, bool]) -> pd.DataFrame:
    """(prediction, label, biopsy-confirmed) rows, one clinician each."""
    return pd.DataFrame([{"image_id": f"r{i}", "prediction_id": p, "group": p, "label": label, "histopathology": biopsy,
                          "path": f"/x/r{i}"} for i, (p, label, biopsy) in enumerate(rows)],
                        columns=feedback_set.COLUMNS)


def resolved(*rows) -> dict[str, str]:
    kept, _ = feedback_set.resolve(labels(*rows))
    return dict(zip(kept.prediction_id, kept.label))


def test_disagreeing_labels_resolve_biopsy_first_then_majority_and_a_tie_is_dropped():
    assert resolved(("a", "nv", False), ("a", "mel", True), ("a", "nv", False)) == {"a": "mel"}  # biopsy wins
    assert resolved(("b", "nv", False), ("b", "mel", False), ("b", "nv", False)) == {"b": "nv"}  # majority
    assert not resolved(("c", "nv", False), ("c", "mel", False))  # a tie
    assert not resolved(("d", "nv", True), ("d", "mel", True))  # biopsies that disagree
    kept, dropped = feedback_set.resolve(labels(("e", "bcc", False), ("c", "nv", False), ("c", "mel", False)))
    assert (list(kept.label), dropped) == (["bcc"], 1)
    assert list(kept.histopathology) == [False]


def test_the_held_out_shares_are_fixed_by_group_and_near_the_declared_shares():
    groups = [f"prediction-{i}" for i in range(4000)]
    parts = [feedback_set.part(g) for g in groups]
    assert abs(parts.count("test") / len(groups) - feedback_set.FEEDBACK_TEST_SHARE) < 0.03
    assert abs(parts.count("calibration") / len(groups) - feedback_set.FEEDBACK_CALIBRATION_SHARE) < 0.03
    assert parts[:50] == [feedback_set.part(g) for g in groups[:50]]
    frame = labels(*[(g, "nv", False) for g in groups[:200]])
    frame["group"] = [f"spot-{i // 4}" for i in range(200)]  # four predictions of one followed spot
    train, calibration, test = feedback_set.split(frame)
    assert len(train) + len(calibration) + len(test) == 200
    assert all(len(part) for part in (train, calibration, test))
    assert not set(train.group) & set(test.group) and not set(train.group) & set(calibration.group)
    assert not set(calibration.group) & set(test.group)


def test_a_biopsy_confirmed_label_weighs_more():
    weights = feedback_set.sample_weight(labels(("a", "mel", True), ("b", "nv", False)))
    assert list(weights) == [feedback_set.BIOPSY_WEIGHT, 1.0] and feedback_set.BIOPSY_WEIGHT > 1


def test_a_feedback_image_that_copies_a_gate_or_test_image_is_found():
    gate = [fingerprint(p.read_bytes()) for p in LESIONS[:2]]
    with Image.open(LESIONS[0]) as image:  # the same photo, smaller and re-encoded
        buffer = io.BytesIO()
        image.resize((image.width // 2, image.height // 2)).save(buffer, "JPEG", quality=70)
    images = {"copy": buffer.getvalue(), "other": LESIONS[3].read_bytes(), "also other": LESIONS[4].read_bytes()}
    assert feedback_set.near_duplicates(images, gate) == {"copy"}


def test_malignancy_of_a_label():
    assert feedback_set.malignant("mel") and feedback_set.malignant("malignant")
    assert not feedback_set.malignant("nv") and not feedback_set.malignant("benign")


def test_a_biopsy_confirmed_label_is_drawn_more_often_in_training():
    table = sources.table(["ham10000"])
    replay = table[(table.split == "train") & table.path.map(lambda p: Path(p).is_file())].head(2)
    feedback = labels(("a", "mel", True), ("b", "nv", False)).assign(path=LESIONS[:2])
    rows = retrain.with_feedback({"train": replay, "val": replay}, feedback)
    split = Split(rows["train"], TrainConfig(image_size=64).preprocess(), torch.device("cpu"), {"ham10000": 2.0})
    assert split.weights.tolist() == [2.0, 2.0, feedback_set.BIOPSY_WEIGHT, 1.0]
