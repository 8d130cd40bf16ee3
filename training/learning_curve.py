"""Does the loop learn? A model that has never seen one lesion source is fed that source's training photos as
clinician labels, round after round, through the loop's own steps; the source's test part, which no round
trains, chooses or gates on, shows whether what the loop promotes gets better. A last round of deliberately
wrong labels (every label flipped: malignant called benign and benign malignant) must be refused.

    git show 5659c08:training/checkpoints/2026.11.29-8c2a0e49.pt > /tmp/start.pt   # never saw ISIC or BCN
    cp training/checkpoints/2026.11.29-8c2a0e49.pt.sha256 /tmp/start.pt.sha256      # checked before it is loaded
    python -m training.learning_curve --start /tmp/start.pt --source bcn20000_84px --rounds 4 --per-round 300 \\
        --out training/reports/learning_curve.md

Each round, as a retraining job does it (training.retrain, training.promote), without Firestore and the
models bucket, which only carry the labels and the models there:
- the labels fed so far (one per lesion, no biopsies) are resolved, de-duplicated against the gate set and the
  test splits, and split by a fixed hash of their lesion into training labels, a calibration share and the
  rolling feedback test set (training.feedback_set);
- the current model is fine-tuned on a replay sample of its sources plus the training labels and exported
  calibrated on its sources' validation rows plus the calibration share (`retrain.train_candidate`, the job's
  config; each source held to the band limits on its own, training.calibrate);
- the gate compares the candidate with the pinned baseline (the starting model) and the current model on the
  frozen gate set, and with the current model on the feedback test set (`promote.judge`, the rule
  `promote.gate` applies); a candidate is promoted here only when the gate would promote it without
  a person (a check that cannot apply, with under FEEDBACK_MIN_LABELS held-out labels, leaves it unpromoted);
- the candidate and the current model are scored on the source's test part: ROC-AUC (refusals as
  referrals) and what people are told, with 95% intervals (grouped bootstrap, Clopper-Pearson).
The poisoned round's held-out labels join the feedback test set like any others: the loop cannot know them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepskin.core.model import Model
from deepskin.services import registry
from training import checkpoint_file, feedback_set, promote, retrain, sources
from training.data import data_root
from training.evaluate import auc as roc_auc
from training.evaluate import auc_with_ci, bootstrap_ci, referral_scores, score_set, told_shares
from training.gate_set import gate_lesions, gate_non_lesions, require_sources
from training.train import TrainConfig, checkpoint, seed_everything

REPORT = Path(__file__).parent / "reports" / "learning_curve.md"
FLIPPED = {True: "benign", False: "malignant"}  # a poisoned label, by the lesion's true malignancy
CLINICIANS = ("clinician-a", "clinician-b", "poisoner")


@dataclass(frozen=True)
class Experiment:
    start: Path  # a checkpoint that never saw `source`
    source: str = "isic_archive"
    rounds: int = 4
    per_round: int = 400  # lesions labelled per round
    config: str = "training/configs/retrain_cpu.json"  # the retraining job's own schedule
    overrides: tuple[str, ...] = ()
    eval_limit: int = 0  # gate on a fixed subset of N gate-set lesions (the short version in the tests)
    test_limit: int = 0  # score N lesions of the source's test part (the short version)
    seed: int = 0


def fed_rounds(table: pd.DataFrame, experiment: Experiment) -> list[pd.DataFrame]:
    """The source's training lesions as clinician labels (feedback_set.COLUMNS), `per_round` lesions a round in
    a fixed random order (all images of a lesion together), then one round of flipped labels by another clinician."""
    rows = table[table.split == "train"]
    lesions = np.random.default_rng(experiment.seed).permutation(sorted(rows.group.astype(str).unique()))
    per_lesion = rows.assign(group=rows.group.astype(str)).groupby("group")
    chunks = [lesions[i * experiment.per_round:(i + 1) * experiment.per_round]
              for i in range(experiment.rounds + 1)]
    if len(chunks[-1]) < experiment.per_round:
        raise SystemExit(f"{experiment.source} has {len(lesions)} training lesions: too few for "
                         f"{experiment.rounds} + 1 rounds of {experiment.per_round}")
    fed = [pd.concat([per_lesion.get_group(g) for g in chunk]) for chunk in chunks]
    # Two honest clinicians share the lesions, alternating; a third writes the poisoned round.
    honest = {g: CLINICIANS[i % 2] for i, g in enumerate(lesions)}
    labels = [pd.DataFrame({"image_id": f.image_id, "prediction_id": f.image_id, "group": f.group, "label": f.dx,
                            "histopathology": False, "path": f.path, "clinician": f.group.map(honest)},
                           columns=feedback_set.COLUMNS) for f in fed]
    labels[-1] = labels[-1].assign(label=labels[-1].label.map(feedback_set.malignant).map(FLIPPED),
                                   clinician=CLINICIANS[2])
    return labels


def held_out_scores(onnx: Path, test: pd.DataFrame) -> pd.DataFrame:
    return score_set(test, Model(onnx), with_metadata=False)


def held_out_numbers(scored: pd.DataFrame, start: pd.DataFrame) -> dict:
    """What a model tells the source's test lesions: AUC (refusals as referrals) and the told shares, with CIs,
    and its AUC minus the starting model's on the same images with the paired interval (lesions resampled)."""
    malignant = scored.dx.map(feedback_set.malignant).to_numpy(dtype=bool)
    auc, ci = auc_with_ci(scored, malignant)
    ours, theirs, y = referral_scores(scored), referral_scores(start.loc[scored.index]), malignant.astype(int)
    paired = bootstrap_ci(lambda t: roc_auc(y[t], ours[t]) - roc_auc(y[t], theirs[t]),
                          scored.group.astype(str).to_numpy())
    return {"lesions": len(scored), "malignant": int(malignant.sum()), "auc": auc, "auc_ci95": ci,
            "auc_vs_start": auc - roc_auc(y, theirs), "auc_vs_start_ci95": paired, **told_shares(scored, malignant)}


def run(experiment: Experiment, folders: dict, work: Path) -> Iterator[dict]:
    """Each round's record as it ends: what was fed and kept, the gate's decision and the held-out numbers."""
    seed_everything(experiment.seed)
    missing = require_sources(folders)
    table = sources.table([experiment.source], folders)
    test = table[table.split == "test"]
    test = test.sample(experiment.test_limit, random_state=0) if experiment.test_limit else test
    lesions, non_lesions = gate_lesions(folders, experiment.eval_limit), gate_non_lesions(folders)
    config = TrainConfig.load(experiment.config, list(experiment.overrides))

    def gate_numbers(onnx: Path) -> dict:
        return promote.model_numbers(Model(onnx), lesions, non_lesions)

    # The starting model, saved with the job's config, goes through the same export as every candidate, on the
    # same sources' validation rows; it serves before any label has come, so no calibration share joins them.
    start = work / "round0"
    start.mkdir(parents=True, exist_ok=True)
    net, config = retrain.from_checkpoint(config, experiment.start)
    checkpoint_file.save(checkpoint(net, config), start / registry.CHECKPOINT)
    baseline_onnx = retrain.export_candidate(start, folders, config.limit_val)
    baseline = current = gate_numbers(baseline_onnx)
    current_onnx, current_checkpoint = baseline_onnx, start / registry.CHECKPOINT
    start_scores = held_out_scores(baseline_onnx, test)
    held_out = held_out_numbers(start_scores, start_scores)
    yield {"round": 0, "kind": "start", "held_out": held_out}
    fed = pd.DataFrame(columns=feedback_set.COLUMNS)
    for number, labels in enumerate(fed_rounds(table, experiment), start=1):
        fed = pd.concat([fed, labels], ignore_index=True)
        feedback, counts = retrain.feedback_sets(fed, 0, folders, missing)
        net, config = retrain.from_checkpoint(config, current_checkpoint)
        folder = work / f"round{number}"
        onnx = retrain.train_candidate(net, config, folders, feedback, folder, folder)
        candidate = gate_numbers(onnx)
        decision, superiority = promote.judge(candidate, baseline, None if current is baseline else current, onnx,
                                              current_onnx, feedback.test)
        promoted = decision["promoted"] and superiority["applies"]
        record = {"round": number, "kind": "poisoned" if number > experiment.rounds else "clean",
                  "labels_fed": len(labels), "labels_so_far": len(fed), **counts, "promoted": promoted,
                  "failed": [r for r in decision["reasons"] if not r.endswith("passed")],
                  "feedback_test": {k: superiority[k] for k in ("labels", "malignant", "candidate", "current",
                                                                "difference", "ci95", "without_each_clinician", "triage")},
                  "candidate_held_out": held_out_numbers(held_out_scores(onnx, test), start_scores)}
        if promoted:
            current, current_onnx, current_checkpoint = candidate, onnx, folder / registry.CHECKPOINT
            held_out = record["candidate_held_out"]
        yield {**record, "held_out": held_out}


def ci(value: float, interval: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(value)} ({fmt.format(interval[0])}-{fmt.format(interval[1])})"


def told(numbers: dict, key: str) -> str:
    return ci(100 * numbers[key], [100 * b for b in numbers[f"{key}_ci95"]], "{:.1f}") + "%"


def without_each(feedback_test: dict) -> str:
    return "; ".join(f"without {c}: {ci(w['difference'], w['ci95'], '{:+.4f}')}"
                     for c, w in feedback_test["without_each_clinician"].items()) or "-"


def triage(feedback_test: dict) -> str:
    return "; ".join(f"{check} {t['candidate']:.3f} vs {t['current']:.3f}, {ci(t['difference'], t['ci95'], '{:+.3f}')}"
                     f" ({'passed' if t['passed'] else 'failed'})" for check, t in feedback_test["triage"].items())


def markdown(records: list[dict], experiment: Experiment, command: str, details: Path) -> str:
    start = records[0]["held_out"]
    lines = [
        "# Does the loop learn? A learning curve on a source the model never saw", "",
        (f"Generated by `{command}` (training/learning_curve.py says how each round runs). Starting model: "
        f"`{experiment.start.name}`; fed source: `{experiment.source}` training lesions, {experiment.per_round} "
        f"a round as clinician labels; held out: its test part ({start['lesions']} images, {start['malignant']} "
        "malignant), never trained, chosen or gated on. Job config: "
        f"`{experiment.config}` {' '.join(experiment.overrides)}. 95% intervals: AUC by grouped bootstrap, "
        "shares by Clopper-Pearson, the AUC difference from the starting model and the feedback test set's Brier "
        "difference (candidate minus current model) by paired bootstrap over lesions."), "",
        "## What the current model tells the held-out test part after each round", "",
        ("| round | labels | gate decision | held-out AUC, current model | minus the start's (paired 95% CI) "
         "| malignant told low | benign told low | benign told high (urgent) |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        h, fed = r["held_out"], (f"{r['labels_so_far']} ({r['kind']})" if r["round"] else "none (start)")
        verdict = "-" if not r["round"] else "promoted" if r["promoted"] else "refused"
        versus = "-" if h == start else ci(h["auc_vs_start"], h["auc_vs_start_ci95"], "{:+.3f}")  # the start serves
        lines.append(f"| {r['round']} | {fed} | {verdict} | {ci(h['auc'], h['auc_ci95'])} | {versus} "
                     f"| {told(h, 'malignant_low')} | {told(h, 'benign_low')} | {told(h, 'benign_high')} |")
    lines += ["", "## Each round's candidate", "",
              ("| round | trained on / calibrated on / held out (feedback test) | feedback test Brier: candidate vs current, difference "
              "(95% CI) | the same without each clinician's labels | candidate's held-out AUC, minus the start's "
              "(paired 95% CI) | told on the feedback test set: candidate vs current, difference (95% CI) "
              "| checks that failed |"),
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records[1:]:
        f, c = r["feedback_test"], r["candidate_held_out"]
        failed = "; ".join(reason.split(":")[0] for reason in r["failed"]) or "none"
        lines.append(f"| {r['round']} ({r['kind']}) | {r['feedback_images']} / {r['feedback_calibration_labels']} / {f['labels']} ({f['malignant']} malignant) "
                     f"| {f['candidate']:.4f} vs {f['current']:.4f}, {ci(f['difference'], f['ci95'], '{:+.4f}')} "
                     f"| {without_each(f)} "
                     f"| {ci(c['auc'], c['auc_ci95'])}, {ci(c['auc_vs_start'], c['auc_vs_start_ci95'], '{:+.3f}')} "
                     f"| {triage(f)} | {failed} |")
    lines += ["", f"Every failed check's full reason is in `{details}`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=Path, required=True, help="checkpoint (with its .sha256) of a model that "
                                                                  "never saw --source")
    parser.add_argument("--source", default=Experiment.source, choices=sorted(sources.EXTERNAL))
    parser.add_argument("--rounds", type=int, default=Experiment.rounds, help="clean rounds (a poisoned one follows)")
    parser.add_argument("--per-round", type=int, default=Experiment.per_round, help="lesions labelled a round")
    parser.add_argument("--config", default=Experiment.config, help="the retraining job's config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--eval-limit", type=int, default=0, help="gate on a fixed subset of N gate-set lesions")
    parser.add_argument("--test-limit", type=int, default=0, help="score N of the source's test lesions")
    sources.add_folder_arguments(parser, ("ham10000",))
    parser.add_argument("--work", type=Path, default=Path("runs/learning_curve"))
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    experiment = Experiment(args.start, args.source, args.rounds, args.per_round, args.config, tuple(args.set),
                            args.eval_limit, args.test_limit)
    records = []
    for record in run(experiment, retrain.source_folders(data_root(args.ham10000)), args.work):
        records.append(record)  # the report so far, rewritten after every round: a stopped run keeps what ended
        args.out.write_text(markdown(records, experiment, "python -m training.learning_curve " + " ".join(sys.argv[1:]),
                                     args.out.with_suffix(".json")))
        args.out.with_suffix(".json").write_text(json.dumps(promote.json_safe(records), indent=1, default=float) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
