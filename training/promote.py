"""The promotion gate and the model registry's command line.

    python -m training.promote --candidate-dir DIR [--decision-id ID] [--data DIR] [--pad DIR] [--non-lesion DIR]
    python -m training.promote --approve ID      # promote a candidate that passed and awaits a person
    python -m training.promote --rollback
    python -m training.promote --status

Gate rule: the candidate is compared with the PINNED BASELINE (models/baseline in Firestore: the first
model the registry served, until an operator pins another with --pin-baseline), never with the previous
candidate, so small losses cannot add up over promotions. Both are scored image by image on the frozen
gate set (training.gate_set: HAM10000 and PAD-UFES-20 validation lesions no training run selects or
calibrates on, plus non-lesion validation photos), through the serving pipeline with each model's own
card, image only, a refusal counting as a referral. Every check is a paired bootstrap (the same resampled
lesions or patients for both models, 1000 draws) of candidate minus baseline, and passes only if its 95%
interval clears the margin:
  auc                  malignant-vs-benign ROC-AUC                lower bound > -0.02
  sensitivity_high     malignant referred ("high" or refused)     lower bound > -0.03
  specificity_high     benign not referred                        lower bound > -0.05
  ece                  calibration error of P(malignant), answers upper bound < +0.02
  lesions_refused      lesions refused as "not assessable"        upper bound < +0.02
  non_lesions_refused  non-lesion photos refused                  lower bound > -0.05
A difference that cannot be computed (NaN: one class missing) fails its check. Each model's own numbers
come with their 95% intervals too (Wilson for the proportions). With $DEEPSKIN_PROMOTION_APPROVAL=required (the
default on Google Cloud, deepskin.services.config) a passing candidate is uploaded and recorded "approved_pending";
`--approve ID` promotes it.
Every decision is stored in Firestore models/decisions/jobs/{id} (and, for a retraining job, in jobs/{id}).
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

import numpy as np
import pandas as pd
from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore
from sklearn.metrics import roc_auc_score

from deepskin.core.bundle import BUNDLED_MODEL, load_card
from deepskin.core.labels import MALIGNANT
from deepskin.core.model import Model
from deepskin.services import registry, store
from deepskin.services.config import settings
from training import checkpoint_file, sources
from training.calibrate import expected_calibration_error
from training.evaluate import group_resamples, score_set
from training.gate_set import gate_lesions, gate_non_lesions

# The PyTorch weights of models shipped in models/, by version: the first retrain's starting point.
SHIPPED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
# check -> (margin, direction): +1 a higher value is better, -1 a lower one.
CHECKS = {"auc": (0.02, +1), "sensitivity_high": (0.03, +1), "specificity_high": (0.05, +1),
          "ece": (0.02, -1), "lesions_refused": (0.02, -1), "non_lesions_refused": (0.05, +1)}
RULE = ("promote only if, against the pinned baseline on the frozen gate set (paired grouped bootstrap, 95%): "
        + "; ".join(f"{c} difference {'lower bound > -' if d > 0 else 'upper bound < +'}{m}"
                    for c, (m, d) in CHECKS.items()))
Z95 = 1.959964


def wilson(successes: int, n: int) -> list[float]:
    """95% Wilson score interval of a proportion (sound at 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return [float("nan"), float("nan")]
    p, z2 = successes / n, Z95 ** 2
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(float(centre - half), 12), round(float(centre + half), 12)]  # 1.0, not 0.9999999999999999


def statistics(scored: pd.DataFrame, take: np.ndarray) -> dict:
    """The lesion checks' values for rows `take` of one model's scores (NaN where one is undefined)."""
    frame = scored.iloc[take]
    y = frame.dx.isin(MALIGNANT).to_numpy()
    answered = (frame.status == "done").to_numpy()
    p = pd.to_numeric(frame.malignant, errors="coerce").to_numpy()
    referred = ~answered | (frame.risk == "high").to_numpy()
    both = 0 < y.sum() < len(y)
    return {"auc": roc_auc_score(y, np.where(answered, p, 2.0)) if both else np.nan,  # refusal ranks first
            "sensitivity_high": referred[y].mean() if y.any() else np.nan,
            "specificity_high": (~referred[~y]).mean() if (~y).any() else np.nan,
            "ece": expected_calibration_error(p[answered], y[answered].astype(int)) if answered.any() else np.nan,
            "lesions_refused": (~answered).mean()}


def model_numbers(model: Model, lesions: pd.DataFrame, non_lesions: pd.DataFrame) -> dict:
    """One model's scores on the gate set and its own numbers with their intervals."""
    scored = score_set(lesions, model, with_metadata=False)
    refused = (score_set(non_lesions, model, with_metadata=False).status != "done").to_numpy()
    values = statistics(scored, np.arange(len(scored)))
    y = scored.dx.isin(MALIGNANT).to_numpy()
    referred = (scored.status != "done").to_numpy() | (scored.risk == "high").to_numpy()
    return {"version": model.version, "images": len(scored), "malignant": int(y.sum()),
            **{k: float(v) for k, v in values.items()},
            "sensitivity_high_ci95": wilson(int(referred[y].sum()), int(y.sum())),
            "specificity_high_ci95": wilson(int((~referred[~y]).sum()), int((~y).sum())),
            "non_lesion_images": len(refused), "non_lesions_refused": float(refused.mean()),
            "non_lesions_refused_ci95": wilson(int(refused.sum()), len(refused)),
            "scores": scored, "refused": refused}


def paired_differences(candidate: dict, baseline: dict) -> dict:
    """check -> (point difference, 95% interval), candidate minus baseline, resampling the same groups."""
    lesion_groups = candidate["scores"].group.astype(str).to_numpy()
    draws = [(statistics(candidate["scores"], take), statistics(baseline["scores"], take))
             for take in group_resamples(lesion_groups)]
    # Non-lesion photos are independent: each is its own group.
    draws_non_lesion = [candidate["refused"][take].mean() - baseline["refused"][take].mean()
                        for take in group_resamples(np.arange(len(candidate["refused"])))]
    out = {}
    for check in CHECKS:
        if check == "non_lesions_refused":
            diffs = np.array(draws_non_lesion)
        else:
            diffs = np.array([c[check] - b[check] for c, b in draws], dtype=float)
        point = candidate[check] - baseline[check]
        interval = ([float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
                    if len(diffs) and np.isfinite(diffs).all() else [float("nan"), float("nan")])
        out[check] = (float(point), interval)
    return out


def decide(candidate: dict, baseline: dict) -> dict:
    differences, checks, reasons = paired_differences(candidate, baseline), {}, []
    for check, (margin, direction) in CHECKS.items():
        point, (low, high) = differences[check]
        bound = low if direction > 0 else high
        checks[check] = bool(bound > -margin) if direction > 0 else bool(bound < margin)  # NaN fails both
        reasons.append(f"{check}: candidate {candidate[check]:.3f} vs baseline {baseline[check]:.3f}, difference "
                       f"{point:+.3f} (95% CI {low:+.3f} to {high:+.3f}), needs "
                       f"{'lower bound > -' if direction > 0 else 'upper bound < +'}{margin}: "
                       f"{'passed' if checks[check] else 'failed'}")
    summary = {k: v for k, v in candidate.items() if k not in ("scores", "refused")}
    base = {k: v for k, v in baseline.items() if k not in ("scores", "refused")}
    return {"promoted": all(checks.values()), "checks": checks, "reasons": reasons, "rule": RULE,
            "differences": {k: {"point": p, "ci95": ci} for k, (p, ci) in differences.items()},
            "candidate": summary, "baseline": base}


def current_record() -> dict:
    """The registry's current version; the first time, the model being served is registered as current, with
    its shipped checkpoint (training/checkpoints/<version>.pt) when there is one, so that the first retrain
    fine-tunes the served weights instead of starting from ImageNet."""
    record = registry.current()
    if record is None:
        baseline = Path(settings().model_path or BUNDLED_MODEL)
        shipped = SHIPPED_CHECKPOINTS / f"{load_card(baseline)['version']}.pt"
        if shipped.is_file():
            checkpoint_file.verify(shipped)
        try:
            record = registry.set_current(registry.upload(baseline, shipped if shipped.is_file() else None),
                                          expected=None)
        except RuntimeError:  # registered meanwhile by another gate
            record = registry.current()
    return record


def baseline_doc():
    return store.firestore_client().collection("models").document("baseline")


def pinned_baseline(current: dict) -> dict:
    """The registry's baseline record; the first gate pins the current version."""
    try:
        baseline_doc().create({k: current.get(k) for k in registry.RECORD_FIELDS})
    except AlreadyExists:
        pass
    return baseline_doc().get().to_dict()


def pin_baseline() -> dict:
    """An operator's deliberate choice: from now on candidates are compared with the current version."""
    record = {k: registry.current().get(k) for k in registry.RECORD_FIELDS}
    baseline_doc().set({**record, "pinned_at": firestore.SERVER_TIMESTAMP})
    return record


def gate(candidate_dir: Path, decision_id: str, folders: dict, limit: int = 0, job_id: str | None = None) -> dict:
    """Score candidate and pinned baseline on the gate set, decide, promote (or await approval), record it all."""
    candidate = Model(candidate_dir / registry.ONNX)
    record = current_record()
    baseline = Model(registry.fetch(pinned_baseline(record)))
    lesions, non_lesions = gate_lesions(folders, limit), gate_non_lesions(folders)
    decision = decide(model_numbers(candidate, lesions, non_lesions), model_numbers(baseline, lesions, non_lesions))
    decision.update(job_id=job_id, current={"version": record["version"]}, status="refused",
                    gate_set={**lesions.source.value_counts().to_dict(), "non_lesion": len(non_lesions),
                              "limit": limit})
    if decision["promoted"]:
        checkpoint = candidate_dir / registry.CHECKPOINT  # the next retrain fine-tunes from it
        if checkpoint.exists():
            checkpoint_file.verify(checkpoint)  # the registry records the digest of exactly what training wrote
        new = registry.upload(candidate_dir / registry.ONNX, checkpoint if checkpoint.exists() else None)
        if settings().approval_required:
            decision.update(promoted=False, status="approved_pending", candidate_record=new)
        else:
            registry.set_current(new, expected=record["version"])
            decision.update(status="promoted")
    registry.record_decision(decision_id, json_safe(decision))
    return decision


def approve(decision_id: str) -> dict:
    """A person's approval of a candidate the gate passed: it becomes current."""
    doc = registry.decision_doc(decision_id)
    decision = doc.get().to_dict()
    if decision is None:
        raise SystemExit(f"no gate decision {decision_id}")
    if decision.get("status") != "approved_pending":
        raise SystemExit(f"decision {decision_id} is {decision.get('status')!r}, not awaiting approval")
    registry.set_current(decision["candidate_record"], expected=registry.current()["version"])
    doc.update({"status": "promoted", "promoted": True, "approved_by": getpass.getuser(),
                "approved_at": firestore.SERVER_TIMESTAMP})
    return doc.get().to_dict()


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
    action.add_argument("--approve", metavar="ID", help="promote the candidate of a decision awaiting approval")
    action.add_argument("--pin-baseline", action="store_true", help="compare future candidates with the current model")
    action.add_argument("--rollback", action="store_true", help="the previous version becomes current")
    action.add_argument("--status", action="store_true", help="print the current version and recent decisions")
    parser.add_argument("--decision-id", help="default: the candidate's version")
    sources.add_folder_arguments(parser)
    parser.add_argument("--eval-limit", type=int, default=0, help="a fixed subset of N gate lesions (smoke runs)")
    args = parser.parse_args()
    if args.candidate_dir:
        decision_id = args.decision_id or load_card(args.candidate_dir / registry.ONNX)["version"]
        folders = sources.folders_from(args)
        result = gate(args.candidate_dir, decision_id, folders, args.eval_limit)
    elif args.approve:
        result = approve(args.approve)
    elif args.pin_baseline:
        result = pin_baseline()
    elif args.rollback:
        result = registry.rollback()
    else:
        result = {"current": registry.current(), "baseline": baseline_doc().get().to_dict(),
                  "decisions": registry.decisions()}
    print(json.dumps(json_safe(result), indent=1, default=str))


if __name__ == "__main__":
    main()
