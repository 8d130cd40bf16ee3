"""The promotion gate and the model registry's command line.

    python -m training.promote --candidate-dir DIR [--decision-id ID] [--data DIR] [--pad DIR] [--non-lesion DIR]
    python -m training.promote --approve ID      # promote a candidate that passed and awaits a person
    python -m training.promote --rollback
    python -m training.promote --status

Gate rule: the candidate is compared with the PINNED BASELINE (baseline.json in the models bucket: the first
model the registry served, until an operator pins another with --pin-baseline), never with the previous
candidate, so small losses cannot add up over promotions; and, when another version is current, with the
current model too: it must pass against both. All are scored image by image on the frozen gate set
(training.gate_set: HAM10000 and PAD-UFES-20 validation lesions no training run selects or calibrates on,
plus non-lesion validation photos), through the serving pipeline with each model's own card, image only, a
refusal counting as a referral. Every check is a paired bootstrap (the same resampled lesions or patients
for both models, 1000 draws) of candidate minus reference, and passes only if its 95% interval clears the
margin:
  auc                         malignant-vs-benign ROC-AUC                                lower bound > -0.02
  specificity_matched         benign not referred, at the reference's sensitivity         lower bound > -0.05
  melanoma_sensitivity_matched  melanomas referred, at the reference's specificity         lower bound > -0.08
  malignant_low               malignant lesions the model's own bands call "low"          upper bound < +0.02
  ece                         calibration error of P(malignant), answers                 upper bound < +0.02
  lesions_refused             lesions refused as "not assessable"                        upper bound < +0.02
  non_lesions_refused         non-lesion photos refused                                  lower bound > -0.05
The two matched checks read both ROC curves at the reference's own operating point ("high" or refused):
each model's "high" cut-off is set on its own validation sample, so comparing the two models' own "high"
shares would mostly measure that sample's noise, or a change of what "high" means, not a better or worse
model. What a person is told is guarded where it can hurt: malignant lesions reassured ("low"). A
difference that cannot be computed (NaN: one class missing, or in over a tenth of the resamples) fails.
Staying within margins is not learning: the candidate must also IMPROVE on the clinicians' held-out labels
(training.feedback_set: the feedback test set, never trained on). The pre-declared check: the Brier score of
P(malignant) on those labels (a refusal scored as 0.5), candidate minus the current model, paired bootstrap
over label groups; the upper bound of its 95% interval must be below 0, on all the held-out labels and again
without each clinician's labels in turn (a clinician's wrong labels train the candidate to fit that clinician's
held-out labels too: the learning curve's poisoned round passed the pooled check; the other clinicians' labels
show what was learned). Brier, not AUC: it is defined when the held-out labels are all of one class, and it
rewards both ranking and calibration. With fewer than FEEDBACK_MIN_LABELS held-out labels (pooled, and without
each clinician; so at least two clinicians) the check cannot show anything but chance; the decision says so and a
passing candidate then waits for a person's approval whatever the approval setting, rather than being
refused (which would stop the loop until four times as many labels had come) or promoted unproven.
The pool is mostly HAM10000's dermoscopy, so the AUC and the malignant lesions told "low" are checked again on
each image type of the gate set (TYPE_CHECKS: HAM10000 is dermoscopy, PAD-UFES-20 phone photos), with wider
margins for the 78 phone photos. Each model's own numbers come with their 95% intervals too (Wilson for the
proportions), overall and per image type. With $DEEPSKIN_PROMOTION_APPROVAL=required (the default on
Google Cloud, deepskin.services.config) a passing candidate is uploaded, its record kept in the models
bucket (pending/<ID>.json) and the decision recorded "approved_pending"; `--approve ID` promotes that
record. This module scores and decides; what the decision does to the registry, and the records that decide
(the baseline, a pending candidate, the pointer: the models bucket only, which the functions cannot write), are
deepskin.loop.promotion's. Every decision is stored in Firestore models/decisions/jobs/{id} (and, for a
retraining job, in jobs/{id}) for people to read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from deepskin.core.bundle import load_card
from deepskin.core.labels import MALIGNANT
from deepskin.core.model import Model
from deepskin.loop import promotion
from deepskin.services import registry
from training import checkpoint_file, sources
from training.calibrate import expected_calibration_error
from training.evaluate import bootstrap_ci, group_resamples, score_set
from training.evaluate import outcomes as told_bands
from training.gate_set import gate_lesions, gate_non_lesions, require_sources

# The PyTorch weights of models shipped in models/, by version: the first retrain's starting point.
SHIPPED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
# check -> (margin, direction): +1 a higher value is better, -1 a lower one.
CHECKS = {"auc": (0.02, +1), "specificity_matched": (0.05, +1), "melanoma_sensitivity_matched": (0.08, +1),
          "malignant_low": (0.02, -1), "ece": (0.02, -1), "lesions_refused": (0.02, -1),
          "non_lesions_refused": (0.05, +1)}
IMAGE_TYPES = {"dermoscopy": False, "clinical": True}  # the gate table's `clinical` column
# The pooled checks are mostly HAM10000's dermoscopy (740 of 818 gate lesions): these are checked again on each
# image type of the gate set, so that a phone-photo regression cannot hide in the pool. check -> type -> margin.
# The clinical margins are wider because the sample is small: 78 phone photos (45 malignant, 3 melanomas, so no
# melanoma check of their own) put the 95% interval of a paired AUC difference some 0.03 wide on each side.
TYPE_CHECKS = {"auc": {"dermoscopy": 0.02, "clinical": 0.05}, "malignant_low": {"dermoscopy": 0.02, "clinical": 0.05}}
ALL_CHECKS = {**CHECKS, **{f"{check}_{kind}": (margin, CHECKS[check][1]) for check, by_type in TYPE_CHECKS.items()
                           for kind, margin in by_type.items()}}
RULE = ("promote only if, against the pinned baseline and the current model on the frozen gate set (paired grouped "
        "bootstrap, 95%): " + "; ".join(f"{c} difference {'lower bound > -' if d > 0 else 'upper bound < +'}{m}"
                                         for c, (m, d) in CHECKS.items())
        + "; and per image type: " + "; ".join(f"{c}_{kind} margin {m}" for c, by_type in TYPE_CHECKS.items()
                                               for kind, m in by_type.items()))
Z95 = 1.959964
MIN_DEFINED = 0.9  # the share of bootstrap resamples in which a check must be defined
FEEDBACK_METRIC = "brier"  # of P(malignant) on the feedback test set; lower is better
FEEDBACK_MIN_LABELS = 30  # held-out labels below which superiority cannot be shown
# What people are told about the clinicians' held-out lesions may not get worse either: a candidate that ranks a
# new source better can still send far more of its benign lesions urgently (the BCN20000 learning curve of
# 2026-12-02 promoted one that did: 23% -> 43%). check -> upper bound of the candidate-minus-current difference
# (paired bootstrap over lesions, 95%), declared on 2026-12-03 before any run was judged by it: 5 more benign
# lesions in 100 sent urgently, 2 more malignant in 100 reassured (the gate set's dermoscopy margin).
FEEDBACK_TRIAGE = {"benign_high": 0.05, "malignant_low": 0.02}
REFUSED_CHANCE = 0.5  # a refusal says nothing about malignancy


def wilson(successes: int, n: int) -> list[float]:
    """95% Wilson score interval of a proportion (sound at 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return [float("nan"), float("nan")]
    p, z2 = successes / n, Z95 ** 2
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(float(centre - half), 12), round(float(centre + half), 12)]  # 1.0, not 0.9999999999999999


class Outcomes(NamedTuple):
    """Per row of one model's scores: a refusal ranks above every answer and counts as referred, never "low"."""
    malignant: np.ndarray
    melanoma: np.ndarray
    answered: np.ndarray
    p: np.ndarray  # P(malignant) as told (NaN where refused)
    score: np.ndarray  # the ranking: p, or 2 for a refusal
    referred: np.ndarray  # "high" or refused
    low: np.ndarray


def outcomes(frame: pd.DataFrame) -> Outcomes:
    answered = (frame.status == "done").to_numpy()
    p = pd.to_numeric(frame.malignant, errors="coerce").to_numpy()
    return Outcomes(frame.dx.isin(MALIGNANT).to_numpy(), (frame.dx == "mel").to_numpy(), answered, p,
                    np.where(answered, p, 2.0), ~answered | (frame.risk == "high").to_numpy(),
                    answered & (frame.risk == "low").to_numpy())


def share(flags: np.ndarray) -> float:
    return float(flags.mean()) if len(flags) else np.nan


def values_of(o: Outcomes) -> dict:
    """One model's own values at its own bands (NaN where one is undefined)."""
    y = o.malignant
    return {"auc": roc_auc_score(y, o.score) if 0 < y.sum() < len(y) else np.nan,
            "sensitivity_high": share(o.referred[y]), "specificity_high": share(~o.referred[~y]),
            "melanoma_sensitivity_high": share(o.referred[o.melanoma]), "malignant_low": share(o.low[y]),
            "ece": expected_calibration_error(o.p[o.answered], y[o.answered].astype(int)) if o.answered.any()
            else np.nan,
            "lesions_refused": share(~o.answered)}


def specificity_at(score: np.ndarray, malignant: np.ndarray, sensitivity: float) -> float:
    """Share of benign rows below the cut-off that refers `sensitivity` of the malignant ones."""
    if np.isnan(sensitivity) or not malignant.any() or malignant.all():
        return np.nan
    referred = round(sensitivity * malignant.sum())
    cut = np.sort(score[malignant])[::-1][referred - 1] if referred else np.inf
    return share(score[~malignant] < cut)


def sensitivity_at(score: np.ndarray, benign: np.ndarray, positives: np.ndarray, specificity: float) -> float:
    """Share of `positives` at or above the cut-off that keeps `specificity` of the benign rows unreferred."""
    if np.isnan(specificity) or not benign.any() or not positives.any():
        return np.nan
    kept = round(specificity * benign.sum())
    ordered = np.sort(score[benign])
    cut = ordered[kept] if kept < len(ordered) else np.nextafter(ordered[-1], np.inf)
    return share(score[positives] >= cut)


def check_values(candidate: pd.DataFrame, reference: pd.DataFrame, take: np.ndarray) -> tuple[dict, dict]:
    """Every lesion check's value for the candidate and for the reference on the same rows `take`. The matched
    checks read both models' ROC curves at the reference's own operating point (its "high" band or a refusal):
    the specificity where each refers as many malignant lesions, the melanoma sensitivity where each refers
    as few benign ones. A candidate that ranks the lesions alike scores alike, whatever its cut-offs."""
    ours, theirs = outcomes(candidate.iloc[take]), outcomes(reference.iloc[take])
    values = values_of(ours), values_of(theirs)
    sensitivity, specificity = values[1]["sensitivity_high"], values[1]["specificity_high"]
    clinical = image_types(candidate)[take]
    for numbers, o in zip(values, (ours, theirs), strict=True):
        numbers["specificity_matched"] = specificity_at(o.score, o.malignant, sensitivity)
        numbers["melanoma_sensitivity_matched"] = sensitivity_at(o.score, ~o.malignant, o.melanoma, specificity)
        for kind, flag in IMAGE_TYPES.items():
            of_type = values_of(Outcomes(*(column[clinical == flag] for column in o)))
            numbers.update({f"{check}_{kind}": of_type[check] for check in TYPE_CHECKS})
    return values


def image_types(scores: pd.DataFrame) -> np.ndarray:
    """Each gate row's image type (the `clinical` flag; None where the table does not say)."""
    return scores["clinical"].to_numpy(dtype=object) if "clinical" in scores else np.full(len(scores), None)


def checks_for(scores: pd.DataFrame) -> dict:
    """CHECKS, and TYPE_CHECKS for each image type the gate set holds (a fixture gate may lack phone photos)."""
    present = {kind for kind, flag in IMAGE_TYPES.items() if flag in set(image_types(scores))}
    return {check: rule for check, rule in ALL_CHECKS.items() if check in CHECKS or check.rsplit("_", 1)[1] in present}


def own_numbers(scored: pd.DataFrame) -> dict:
    """A model's own values with 95% intervals for its proportions."""
    o = outcomes(scored)
    y, mel, referred, low = o.malignant, o.melanoma, o.referred, o.low
    return {"images": len(scored), "malignant": int(y.sum()), "melanoma": int(mel.sum()),
            **{k: float(v) for k, v in values_of(o).items()},
            "sensitivity_high_ci95": wilson(int(referred[y].sum()), int(y.sum())),
            "specificity_high_ci95": wilson(int((~referred[~y]).sum()), int((~y).sum())),
            "melanoma_sensitivity_high_ci95": wilson(int(referred[mel].sum()), int(mel.sum())),
            "malignant_low_ci95": wilson(int(low[y].sum()), int(y.sum()))}


def model_numbers(model: Model, lesions: pd.DataFrame, non_lesions: pd.DataFrame) -> dict:
    """One model's scores on the gate set and its own numbers with their intervals, overall and per image type."""
    scored = score_set(lesions, model, with_metadata=False)
    refused = (score_set(non_lesions, model, with_metadata=False).status != "done").to_numpy()
    by_type = {kind: own_numbers(scored[scored.clinical == clinical]) for kind, clinical in IMAGE_TYPES.items()
               if (scored.clinical == clinical).any()}
    return {"version": model.version, **own_numbers(scored), "by_image_type": by_type,
            "non_lesion_images": len(refused), "non_lesions_refused": float(refused.mean()),
            "non_lesions_refused_ci95": wilson(int(refused.sum()), len(refused)),
            "scores": scored, "refused": refused}


def paired_differences(candidate: dict, reference: dict) -> dict:
    """check -> (candidate value, reference value, 95% interval of the difference), resampling the same groups."""
    lesion_groups = candidate["scores"].group.astype(str).to_numpy()
    draws = [check_values(candidate["scores"], reference["scores"], take)
             for take in group_resamples(lesion_groups)]
    # Non-lesion photos are independent: each is its own group.
    draws_non_lesion = [candidate["refused"][take].mean() - reference["refused"][take].mean()
                        for take in group_resamples(np.arange(len(candidate["refused"])))]
    ours, theirs = check_values(candidate["scores"], reference["scores"], np.arange(len(candidate["scores"])))
    ours["non_lesions_refused"], theirs["non_lesions_refused"] = (candidate["non_lesions_refused"],
                                                                  reference["non_lesions_refused"])
    out = {}
    for check in checks_for(candidate["scores"]):
        if check == "non_lesions_refused":
            diffs = np.array(draws_non_lesion)
        else:
            diffs = np.array([c[check] - r[check] for c, r in draws], dtype=float)
        # A resample without, say, any melanoma says nothing of melanomas: it is left out, but a check undefined
        # in more than a tenth of them is undefined (and fails).
        defined = diffs[np.isfinite(diffs)]
        interval = ([float(np.percentile(defined, 2.5)), float(np.percentile(defined, 97.5))]
                    if len(diffs) and len(defined) >= MIN_DEFINED * len(diffs) else [float("nan"), float("nan")])
        out[check] = (float(ours[check]), float(theirs[check]), interval)
    return out


def decide(candidate: dict, baseline: dict, current: dict | None = None) -> dict:
    """The gate's decision against the pinned baseline and, when given, against the current model as well."""
    decision = compare(candidate, baseline, "baseline")
    if current is not None:
        versus_current = compare(candidate, current, "current")
        decision["promoted"] = decision["promoted"] and versus_current["promoted"]
        decision["reasons"] += versus_current["reasons"]
        decision["versus_current"] = {k: versus_current[k] for k in ("checks", "differences", "current")}
    return decision


def compare(candidate: dict, reference: dict, name: str) -> dict:
    differences, checks, reasons = paired_differences(candidate, reference), {}, []
    for check, (margin, direction) in checks_for(candidate["scores"]).items():
        ours, theirs, (low, high) = differences[check]
        bound = low if direction > 0 else high
        checks[check] = bool(bound > -margin) if direction > 0 else bool(bound < margin)  # NaN fails both
        reasons.append(f"{check}: candidate {ours:.3f} vs {name} {theirs:.3f}, difference "
                       f"{ours - theirs:+.3f} (95% CI {low:+.3f} to {high:+.3f}), needs "
                       f"{'lower bound > -' if direction > 0 else 'upper bound < +'}{margin}: "
                       f"{'passed' if checks[check] else 'failed'}")
    summary = {k: v for k, v in candidate.items() if k not in ("scores", "refused")}
    theirs = {k: v for k, v in reference.items() if k not in ("scores", "refused")}
    return {"promoted": all(checks.values()), "checks": checks, "reasons": reasons, "rule": RULE,
            "differences": {k: {"point": ours - ref, "ci95": ci} for k, (ours, ref, ci) in differences.items()},
            "candidate": summary, name: theirs}


def brier(scored: pd.DataFrame) -> float:
    """Mean squared error of P(malignant) against the clinicians' truth (`truth`), a refusal counting 0.5."""
    p = pd.to_numeric(scored.malignant, errors="coerce").where(scored.status == "done", REFUSED_CHANCE)
    return float(((p.to_numpy(dtype=float) - scored.truth.to_numpy(dtype=float)) ** 2).mean())


def told_share(band: str, truth: int):
    """The metric: the share of held-out lesions of one truth told `band` (evaluate.outcomes: a refusal is none)."""
    def measure(scored: pd.DataFrame) -> float:
        return share(told_bands(scored)[scored.truth.to_numpy(dtype=float) == truth] == band)
    return measure


# benign told "high" (see someone urgently), malignant told "low" (reassured)
FEEDBACK_METRICS = {"brier": brier, "benign_high": told_share("high", 0), "malignant_low": told_share("low", 1)}


def paired_difference(candidate: pd.DataFrame, reference: pd.DataFrame, metric: str) -> dict:
    """Candidate minus reference `metric` on the same rows, with its paired 95% bootstrap interval over groups."""
    measure, groups = FEEDBACK_METRICS[metric], candidate.group.astype(str).to_numpy()
    ci = bootstrap_ci(lambda t: measure(candidate.iloc[t]) - measure(reference.iloc[t]), groups)
    ours, theirs = (measure(scores) if len(candidate) else float("nan") for scores in (candidate, reference))
    return {"labels": len(candidate), "groups": len(set(groups)), "candidate": ours, "current": theirs,
            "difference": ours - theirs, "ci95": ci}


def by_clinician(candidate: pd.DataFrame, reference: pd.DataFrame, metric: str) -> tuple[dict, dict]:
    """The paired difference pooled and without each clinician's labels in turn: a clinician whose wrong labels
    trained the candidate also wrote some of the held-out ones, which the candidate then fits; the other
    clinicians' labels show what it learned."""
    who = candidate.clinician.astype(str).to_numpy() if "clinician" in candidate else np.array([], dtype=str)
    return paired_difference(candidate, reference, metric), {
        c: paired_difference(candidate[who != c], reference[who != c], metric) for c in sorted(set(who))}


def difference_line(name: str, pooled: dict, without: dict) -> str:
    ci = pooled["ci95"]
    return (f"{name} candidate {pooled['candidate']:.4f} vs current {pooled['current']:.4f}, difference "
            f"{pooled['difference']:+.4f} (95% CI {ci[0]:+.4f} to {ci[1]:+.4f})"
            + "".join(f"; without clinician {c} ({w['labels']} labels) {w['difference']:+.4f} (95% CI "
                      f"{w['ci95'][0]:+.4f} to {w['ci95'][1]:+.4f})" for c, w in without.items()))


def feedback_superiority(candidate: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """The pre-declared checks on the feedback test set, both models' scores of the same rows: the candidate must
    be better on FEEDBACK_METRIC (upper bound below 0) and tell people no worse (FEEDBACK_TRIAGE: upper bound
    below the margin), pooled and without each clinician's labels (`by_clinician`). With one clinician, or too
    few labels without one, the checks cannot apply and a person decides."""
    pooled, without = by_clinician(candidate, reference, FEEDBACK_METRIC)
    applies = pooled["labels"] >= FEEDBACK_MIN_LABELS and len(without) >= 2 and \
        all(w["labels"] >= FEEDBACK_MIN_LABELS for w in without.values())
    for d in (pooled, *without.values()):
        d["improved"] = d["labels"] >= FEEDBACK_MIN_LABELS and d["ci95"][1] < 0
    improved = all(d["improved"] for d in (pooled, *without.values()))
    triage = {}
    for check, margin in FEEDBACK_TRIAGE.items():
        told, told_without = by_clinician(candidate, reference, check)
        told.update(margin=margin, without_each_clinician=told_without,
                    passed=all(d["ci95"][1] < margin for d in (told, *told_without.values())))  # NaN fails
        triage[check] = told
    passed = applies and improved and all(t["passed"] for t in triage.values())
    verdict = ("passed" if passed else "failed") if applies else (
        f"not applied: {FEEDBACK_MIN_LABELS} held-out labels needed, from at least two clinicians, and as many "
        "without each one; a person decides")
    reason = (f"feedback test set ({pooled['labels']} labels, {pooled['groups']} groups, {len(without)} clinicians): "
              + difference_line(FEEDBACK_METRIC, pooled, without) + ", each needs upper bound < 0"
              + "".join("; " + difference_line(f"{check} told", t, t["without_each_clinician"])
                        + f", each needs upper bound < +{t['margin']}" for check, t in triage.items())
              + f": {verdict}")
    return {"metric": FEEDBACK_METRIC, **pooled, "malignant": int(candidate.truth.sum()), "clinicians": len(without),
            "without_each_clinician": without, "triage": triage, "applies": applies, "passed": passed,
            "reason": reason}


def with_feedback_test(decision: dict, superiority: dict) -> dict:
    """The decision with the feedback check joined: it must pass where it applies."""
    decision.update(feedback_test=superiority, reasons=[*decision["reasons"], superiority["reason"]])
    if superiority["applies"]:
        decision["promoted"] = decision["promoted"] and superiority["passed"]
    return decision


def shipped_checkpoint(version: str) -> Path | None:
    """The PyTorch weights shipped for a model of models/ (training/checkpoints/<version>.pt), checked against
    the digest beside them; None when there are none. The registry registers them with the served model."""
    shipped = SHIPPED_CHECKPOINTS / f"{version}.pt"
    if not shipped.is_file():
        return None
    checkpoint_file.verify(shipped)
    return shipped


def feedback_scores(onnx: Path, feedback: pd.DataFrame) -> pd.DataFrame:
    """A model's answers on the feedback test set (rows: image_id, path, group, truth), image only."""
    if feedback.empty:
        return pd.DataFrame(columns=["status", "malignant", "group", "truth"])
    return score_set(feedback, Model(onnx), with_metadata=False)


def judge(candidate: dict, baseline: dict, current: dict | None, candidate_onnx: Path, current_onnx: Path,
          feedback: pd.DataFrame) -> tuple[dict, dict]:
    """The whole rule: the gate-set decision (`decide`) joined with the superiority check of the candidate over the
    current model on the feedback test set; (decision, that check)."""
    superiority = feedback_superiority(feedback_scores(candidate_onnx, feedback), feedback_scores(current_onnx, feedback))
    return with_feedback_test(decide(candidate, baseline, current), superiority), superiority


def gate(candidate_dir: Path, decision_id: str, folders: dict, limit: int = 0, job_id: str | None = None,
         feedback: pd.DataFrame | None = None, feedback_counts: dict | None = None) -> dict:
    """Score the candidate, the pinned baseline and (when it is another version) the current model on the gate
    set, and the candidate and the current model on the feedback test set (`feedback`; none given: empty;
    `feedback_counts`: what the job kept and dropped of the labels, recorded), decide, and let the loop promote
    (or await approval) and record it all (deepskin.loop.promotion.act); returns the decision as recorded.
    Every source of the gate set is required (training.gate_set.require_sources)."""
    missing = require_sources(folders)  # first: a gate that cannot run touches nothing
    record = promotion.current_record(shipped_checkpoint)
    pinned = promotion.pinned_baseline(record)
    lesions, non_lesions = gate_lesions(folders, limit), gate_non_lesions(folders)
    feedback = pd.DataFrame(columns=["image_id", "path", "group", "truth"]) if feedback is None else feedback

    def numbers(onnx: Path) -> dict:
        return model_numbers(Model(onnx), lesions, non_lesions)

    current = None if record["version"] == pinned["version"] else numbers(registry.fetch(record))
    decision, superiority = judge(numbers(candidate_dir / registry.ONNX), numbers(registry.fetch(pinned)), current,
                                  candidate_dir / registry.ONNX, registry.fetch(record), feedback)
    decision.update(job_id=job_id, current={"version": record["version"]}, status="refused",
                    gate_set={**lesions.source.value_counts().to_dict(), "non_lesion": len(non_lesions),
                              "limit": limit, "missing_sources": missing}, feedback_set=feedback_counts or {})
    checkpoint = candidate_dir / registry.CHECKPOINT  # the next retrain fine-tunes from it
    if decision["promoted"] and checkpoint.exists():
        checkpoint_file.verify(checkpoint)  # the registry records the digest of exactly what training wrote
    return promotion.act(decision_id, json_safe(decision), candidate_dir / registry.ONNX,
                         checkpoint if checkpoint.exists() else None, record, superiority["applies"])


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
        try:
            result = promotion.approve(args.approve)
        except promotion.NotAwaitingApproval as refused:
            raise SystemExit(str(refused)) from None
    elif args.pin_baseline:
        result = promotion.pin_baseline()
    elif args.rollback:
        result = registry.rollback()
    else:
        result = {"current": registry.current(), "baseline": registry.read_anchor(registry.BASELINE),
                  "decisions": registry.decisions()}
    print(json.dumps(json_safe(result), indent=1, default=str))


if __name__ == "__main__":
    main()
