"""What an operator sees of the learning loop, for the operator page (functions/ops) and `deepskin models`.

A few reads of the models bucket (the pointer, the served version's card) and of Firestore (decisions, feedback
counts, the ledger and its job): the served model with its card's numbers, the promotion gate's
decisions (promotions, refusals) and rollbacks with both models' numbers, newest first, the feedback
counted by label and role, the retraining ledger and the job it is running. Counts and model numbers only:
no report's comment, reporter or image. `rollback` is the one action; it is recorded beside the decisions.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from deepskin.loop.ledger import job_doc, state_doc
from deepskin.services import registry, store
from deepskin.services.config import settings
from deepskin.services.results import jsonable

# The evaluation plots of training/reports (staged beside deepskin/ for the function, infra/stage_functions.py).
PLOTS = Path(__file__).resolve().parents[2] / "training" / "reports"
DECISIONS_SHOWN = 20
JOB_FIELDS = ("status", "trigger", "new_labels", "init", "feedback_images", "feedback_calibration_labels",
              "feedback_test_labels", "created_at", "started_at")


def overview() -> dict:
    record = registry.current()
    return jsonable({
        "current": record["version"] if record else None,
        "promotion_approval": settings().promotion_approval,
        "model": model_summary(record) if record else None,
        "decisions": [decision_summary(decision) for decision in registry.decisions(DECISIONS_SHOWN)],
        "feedback": feedback_counts(),
        "ledger": ledger(),
        "plots": plot_names(),
    })


def model_summary(record: dict) -> dict:
    """The served version's card: when it was made, how it started, and its held-out test numbers as users get
    them (HAM10000 test split unless named otherwise; refusals count as referrals)."""
    card = registry.read_card(record)
    metrics = card.get("metrics", {})
    ham = metrics.get("ham10000", {}).get("image_only", {})
    pad = metrics.get("pad_ufes20", {}).get("image_only", {})
    numbers = {"test_images": ham.get("images"), "roc_auc": ham.get("auc_refused_as_referred"),
               "roc_auc_ci95": ham.get("auc_refused_as_referred_ci95"), "sensitivity_high": ham.get("sensitivity_high"),
               "specificity_high": ham.get("specificity_high"),
               "balanced_accuracy": ham.get("balanced_accuracy_top_class"),
               "ece": ham.get("ece_by_image_type", {}).get("dermoscopy", {}).get("ece"),
               "phone_photos_roc_auc": pad.get("auc_refused_as_referred"),
               "non_lesions_refused": metrics.get("non_lesion", {}).get("refused")}
    return {"version": record["version"], "created_at": card.get("created_at"),
            "promoted_at": record.get("promoted_at"), "rolled_back_from": record.get("rolled_back_from"),
            "init": card.get("training", {}).get("init"), "thresholds": card.get("thresholds"),
            "numbers": {k: v for k, v in numbers.items() if v is not None}}


def decision_summary(decision: dict) -> dict:
    """A gate decision or a rollback as `deepskin models --json` prints it, both models' numbers included."""
    candidate, current = decision.get("candidate") or {}, decision.get("current") or {}
    return {"id": decision["id"], "kind": decision.get("kind", "gate"), "job_id": decision.get("job_id"),
            "candidate": candidate.get("version"), "current": current.get("version"),
            "promoted": bool(decision.get("promoted")), "status": decision.get("status"), "reasons": reasons(decision),
            "decided_at": decision.get("decided_at"), "feedback": feedback_numbers(decision),
            # The gate compares with the pinned baseline (training.promote); older decisions, with the current model.
            "numbers": {"candidate": candidate, "current": current, "baseline": decision.get("baseline") or {}}}


def feedback_numbers(decision: dict) -> dict:
    """The clinicians' labels behind a decision: what the job trained on and dropped, and the held-out test
    set's superiority check (its reason line is among the reasons already)."""
    test = {k: v for k, v in (decision.get("feedback_test") or {}).items() if k != "reason"}
    return {**(decision.get("feedback_set") or {}), **{f"test_{k}": v for k, v in test.items()}}


def reasons(decision: dict) -> list[str]:
    """One line per gate check (the check, both models' values, passed or failed), or the rollback's note."""
    if "reasons" in decision:
        return list(decision["reasons"])
    candidate, current = decision.get("candidate") or {}, decision.get("current") or {}
    return [f"{check}: candidate {number(candidate.get(check))} vs current {number(current.get(check))}: "
            f"{'passed' if passed else 'failed'}" for check, passed in (decision.get("checks") or {}).items()]


def number(value: object) -> str:
    """3 decimals for a float, n/a for a missing value; a pair (an interval) as both ends."""
    if isinstance(value, list):
        return " to ".join(map(number, value))
    return f"{value:.3f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def feedback_counts() -> dict[str, dict[str, int]]:
    """{role: {label: reports}}: reads two fields of each report, never its comment or reporter."""
    reports = store.firestore_client().collection(store.FEEDBACK).select(["label", "role"]).stream()
    counted = Counter((report.get("role"), report.get("label")) for report in reports)
    counts: dict[str, dict[str, int]] = {}
    for (role, label), n in sorted(counted.items()):
        counts.setdefault(role, {})[label] = n
    return counts


def ledger() -> dict:
    """The retraining ledger (deepskin.loop.ledger) and the job it is running, if any."""
    state = state_doc().get().to_dict() or {}
    running = None
    if state.get("active_job"):
        job = job_doc(state["active_job"]).get().to_dict() or {}
        running = {"id": state["active_job"], **{k: job[k] for k in JOB_FIELDS if k in job}}
    return {"training_labels": state.get("training_labels", 0), "signals": state.get("signals", 0),
            "labels_at_last_job": state.get("labels_at_last_job", 0), "last_job": state.get("last_job"),
            "running_job": running}


def plot_names() -> list[str]:
    return sorted(path.name for path in PLOTS.glob("*.png"))


def plot_path(name: str) -> Path | None:
    """The plot of that exact name, or None: a request never names a path of its own."""
    return PLOTS / name if name in plot_names() else None


def rollback(operator: str) -> dict:
    """The previous version serves again; the rollback joins the decisions so that the history shows it."""
    restored = registry.rollback()
    note = {"kind": "rollback", "promoted": True, "job_id": None, "candidate": {"version": restored["version"]},
            "current": {"version": restored["rolled_back_from"]},
            "reasons": [f"rolled back from {restored['rolled_back_from']} to {restored['version']} by {operator}"]}
    registry.record_decision(f"rollback-{uuid.uuid4().hex[:12]}", note)
    return jsonable({"current": restored["version"], "rolled_back_from": restored["rolled_back_from"]})


