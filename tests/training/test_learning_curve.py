"""The learning-curve experiment (training.learning_curve): how labels are fed, and a short run of it through
the retraining job's steps and the gate (64 px, one clean round and the poisoned one). The full run and its
numbers are training/reports/learning_curve.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from deepskin.core.bundle import load_card
from deepskin.services import registry
from training import feedback_set, sources
from training.learning_curve import Experiment, fed_rounds, run

REPO = Path(__file__).resolve().parents[2]
HAM_MINI = REPO / "tests" / "fixtures" / "ham10000_mini"
SHIPPED_CHECKPOINT = REPO / "training" / "checkpoints" / f"{load_card(REPO / 'models' / 'deepskin.onnx')['version']}.pt"


def lesion_table(lesions: int, images_per_lesion: int = 2) -> pd.DataFrame:
    rows = [{"image_id": f"L{lesion}_{k}", "group": f"L{lesion}", "split": "test" if lesion % 5 == 0 else "train",
             "dx": "mel" if lesion % 3 == 0 else "nv", "path": f"L{lesion}_{k}.jpg"}
            for lesion in range(lesions) for k in range(images_per_lesion)]
    return pd.DataFrame(rows)


def test_each_round_feeds_new_training_lesions_whole_and_the_last_one_flipped():
    table = lesion_table(40)
    rounds = fed_rounds(table, Experiment(Path("start.pt"), rounds=2, per_round=10))
    assert len(rounds) == 3
    groups = [set(r.group) for r in rounds]
    assert all(len(g) == 10 for g in groups)
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    test_lesions = set(table[table.split == "test"].group)
    assert not set().union(*groups) & test_lesions  # the held-out part is never fed
    truth = table.set_index("image_id").dx
    for clean in rounds[:2]:
        assert len(clean) == 20 and (clean.label == clean.image_id.map(truth)).all()  # every image of a lesion
    poisoned = rounds[2]
    assert set(poisoned.label) <= {"benign", "malignant"}
    assert (poisoned.label.map(feedback_set.malignant) != poisoned.image_id.map(truth).map(feedback_set.malignant)).all()


def test_too_few_training_lesions_for_the_rounds_is_a_clear_error():
    with pytest.raises(SystemExit, match="too few"):
        fed_rounds(lesion_table(20), Experiment(Path("start.pt"), rounds=2, per_round=10))


def fake_source(folder: Path) -> Path:
    """An "isic_archive" folder made of the HAM10000 fixture's training images (never a gate or test image,
    which the loop would drop as copies): a lesion-grouped train and test part."""
    ham = sources.table(["ham10000"], {"ham10000": str(HAM_MINI)})
    ham = ham[ham.split == "train"].head(36)
    (folder / "images").mkdir(parents=True)
    for row in ham.itertuples():
        shutil.copy(row.path, folder / "images" / f"{row.image_id}.jpg")
    lesions = sorted(ham.group.unique())
    test = set(lesions[::3])
    pd.DataFrame({"image_id": ham.image_id, "dx": ham.dx, "malignant": ham.dx.isin(["mel", "bcc", "akiec"]),
                  "image_type": "dermoscopy", "lesion_id": ham.group, "localization": "back",
                  "split": ["test" if g in test else "train" for g in ham.group]}).to_csv(folder / "metadata.csv",
                                                                                            index=False)
    return folder


def test_a_short_learning_curve_runs_every_round_through_the_job_and_the_gate(tmp_path):
    folders = {"ham10000": str(HAM_MINI), "isic_archive": str(fake_source(tmp_path / "isic_archive"))}
    experiment = Experiment(SHIPPED_CHECKPOINT, rounds=1, per_round=8, config="training/configs/retrain_smoke.json",
                            eval_limit=24)
    records = list(run(experiment, folders, tmp_path / "work"))
    assert [r["kind"] for r in records] == ["start", "clean", "poisoned"]
    test_images = (pd.read_csv(tmp_path / "isic_archive" / "metadata.csv").split == "test").sum()
    for record in records:
        assert record["held_out"]["lesions"] == test_images
    for record in records[1:]:
        kept = record["feedback_images"] + record["feedback_calibration_labels"] + record["feedback_test_labels"]
        dropped = record["feedback_duplicates_dropped"] + record["feedback_copies_of_held_out_dropped"]
        assert kept + dropped == record["labels_so_far"]
        assert record["feedback_test"]["labels"] == record["feedback_test_labels"]
        # The calibration share, never trained on, fitted the candidate's card beside the validation rows.
        card = load_card(tmp_path / "work" / f"round{record['round']}" / registry.ONNX)
        calibrated = sum(v["by_source"].get("feedback", 0) for v in card["validation"].values())
        assert calibrated == record["feedback_calibration_labels"]
        # Scored on the same images as the start, so the paired difference is the difference of the AUCs.
        held_out = record["candidate_held_out"]
        assert held_out["auc_vs_start"] == pytest.approx(held_out["auc"] - records[0]["held_out"]["auc"])
        if not record["promoted"]:  # people keep being told what the current model tells them
            assert record["held_out"] == records[record["round"] - 1]["held_out"]
    assert any(r["feedback_calibration_labels"] for r in records[1:])
    # Under 30 held-out labels the feedback check cannot apply, so no round here is promoted without a person.
    assert not any(r["promoted"] for r in records[1:])
    assert any("not applied" in reason for reason in records[-1]["failed"])
