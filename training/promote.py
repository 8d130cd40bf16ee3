"""The promotion gate and the model registry's command line.

    python -m training.promote --candidate-dir DIR [--decision-id ID] [--data DIR] [--eval-limit N]
    python -m training.promote --rollback
    python -m training.promote --status

Gate rule: a candidate model replaces the current one only if, on the same held-out images (the
lesion-grouped HAM10000 test split, or for a smoke run its fixed subset of the first N/2 malignant and
N/2 benign images by image_id, identical for both models),
  1. its malignant-vs-benign ROC-AUC >= the current model's ROC-AUC - 0.01, and
  2. its sensitivity for malignant lesions at its own "high" risk threshold >= the current model's
     sensitivity at the current model's "high" threshold.
Each model is scored with its own card (calibration, thresholds) through the serving path
(training.batch_predict). A metric that cannot be computed (NaN) fails its check. Every decision,
promoted or refused, is stored with both models' numbers in Firestore models/decisions/jobs/{id}
(and, for a retraining job, in jobs/{id} by training.retrain).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from deepskin import registry
from deepskin.labels import MALIGNANT
from deepskin.model import BUNDLED_MODEL, Model
from training.batch_predict import list_images, score_folder
from training.data import data_root, load_split

AUC_TOLERANCE = 0.01
RULE = ("promote only if candidate malignant ROC-AUC >= current - 0.01 AND candidate sensitivity at its "
        "'high' threshold >= current's, both on the same held-out test images")


def heldout(limit: int = 0) -> pd.DataFrame:
    """The test split; with `limit`, a fixed subset that holds both classes (AUC needs both)."""
    split = load_split()
    test = split[split.split == "test"].sort_values("image_id")
    if not limit:
        return test
    malignant = test.dx.isin(MALIGNANT)
    return pd.concat([test[malignant].head((limit + 1) // 2), test[~malignant].head(limit // 2)])


def evaluate(model: Model, root: Path, images: pd.DataFrame) -> dict:
    """The gate's numbers for one model on `images`, as users get them: a refusal counts as a referral
    (no bootstrap: the gate compares point estimates)."""
    rows = score_folder(list_images(root, set(images.image_id)), model)
    frame = pd.DataFrame(rows).set_index("image_id").join(images.set_index("image_id"))
    answered = (frame.status == "done").to_numpy()
    y = frame.dx.isin(MALIGNANT).to_numpy(int)
    p = np.where(answered, pd.to_numeric(frame.malignant, errors="coerce"), 2.0)
    referred = ~answered | (frame.risk == "high").to_numpy()
    both = 0 < y.sum() < len(y)  # otherwise neither number exists, and the gate fails closed
    return {"version": model.version, "images": len(rows), "answered": int(answered.sum()), "malignant": int(y.sum()),
            "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
            "sensitivity_high": float(referred[y == 1].mean()) if both else float("nan"),
            "specificity_high": float((~referred)[y == 0].mean()) if both else float("nan")}


def decide(candidate: dict, current: dict) -> dict:
    checks = {"roc_auc": bool(candidate["roc_auc"] >= current["roc_auc"] - AUC_TOLERANCE),
              "sensitivity_high": bool(candidate["sensitivity_high"] >= current["sensitivity_high"])}
    return {"promoted": all(checks.values()), "checks": checks, "rule": RULE, "candidate": candidate,
            "current": current}


def current_record() -> dict:
    """The registry's current version; the first time, the model being served is registered as current."""
    record = registry.current()
    if record is None:
        baseline = Path(os.environ.get("DEEPSKIN_MODEL_PATH") or BUNDLED_MODEL)
        try:
            record = registry.set_current(registry.upload(baseline), expected=None)
        except RuntimeError:  # registered meanwhile by another gate
            record = registry.current()
    return record


def gate(candidate_dir: Path, decision_id: str, root: Path, limit: int = 0, job_id: str | None = None) -> dict:
    """Evaluate candidate and current on the same images, decide, promote if the gate passes, record it all."""
    candidate = Model(candidate_dir / registry.ONNX)
    record = current_record()
    current = Model(registry.fetch(record))
    images = heldout(limit)
    decision = decide(evaluate(candidate, root, images), evaluate(current, root, images))
    decision.update(job_id=job_id, heldout={"split": "test", "limit": limit, "images": len(images)})
    if decision["promoted"]:
        checkpoint = candidate_dir / registry.CHECKPOINT
        new = registry.upload(candidate_dir / registry.ONNX, checkpoint if checkpoint.exists() else None)
        registry.set_current(new, expected=record["version"])
    registry.record_decision(decision_id, json_safe(decision))
    return decision


def json_safe(value):
    """NaN is not valid in Firestore queries or JSON readers downstream: store it as None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--candidate-dir", type=Path, help=f"folder with {registry.ONNX}, its card (and checkpoint)")
    action.add_argument("--rollback", action="store_true", help="the previous version becomes current")
    action.add_argument("--status", action="store_true", help="print the current version and recent decisions")
    parser.add_argument("--decision-id", help="default: the candidate's version")
    parser.add_argument("--data", help="HAM10000 folder (default: $DEEPSKIN_HAM10000 or ../shared/data/ham10000)")
    parser.add_argument("--eval-limit", type=int, default=0, help="fixed subset of N test images (smoke runs)")
    args = parser.parse_args()
    if args.candidate_dir:
        decision_id = args.decision_id or Model(args.candidate_dir / registry.ONNX).version
        result = gate(args.candidate_dir, decision_id, data_root(args.data), args.eval_limit)
    elif args.rollback:
        result = registry.rollback()
    else:
        result = {"current": registry.current(), "decisions": registry.decisions()}
    print(json.dumps(json_safe(result), indent=1, default=str))


if __name__ == "__main__":
    main()
