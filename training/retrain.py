"""The retraining job: fine-tune the current model on clinicians' confirmed labels plus a replay sample of
the training data, export a candidate, and let the promotion gate (training.promote) judge it.

    python -m training.retrain --job-id ID --config training/configs/retrain_cpu.json [--set KEY=VALUE]
                               [--data DIR] [--work DIR] [--eval-limit N]

Started by deepskin.loop.launchers: LocalLauncher runs it as a child process, VertexLauncher as a Vertex AI job.
- Starting weights: the current registry version's checkpoint when it has one (versions promoted by this
  job do). Otherwise, the served model being ONNX only, the ImageNet backbone with the current model's
  architecture and input size from its card. The card's `training.init` says which. The job's config
  gives the schedule (epochs, lr, frozen blocks, limits); architecture and input size always follow the
  starting model, since the weights must fit.
- Data: a replay sample of the training split (`limit_train` rows of the config's sources, so that the
  model does not forget them) plus every clinician-labelled image under gs://<training bucket>/feedback/
  whose report still exists (reports expire, and are deleted with their result), trained by
  training.train's own loop (`fit`). A coarse label (benign/malignant) trains the summed probability of
  its classes. Reports are in Firestore, which every function may write: each is checked again
  (deepskin.loop.labels.trusted_label: a known label, a reporter who is a clinician now and whose report on
  that prediction it is, and the image the feedback function copied for that very report and label,
  feedback/<report id>.<label>.<ext> in the training bucket, which only it may create);
  the others are dropped and counted. Those images are downloaded to the job's local scratch folder
  (deepskin.loop.launchers.scratch_dir), never to the run folder (on Vertex AI that is the training bucket's runs/<job>/, out of reach of an
  owner's delete), and removed when the job ends; so is a temporary run folder.
- Other sources' folders: beside --data (the training bucket's layout), else their usual defaults.
- The labels are split by a fixed hash of their group (training.feedback_set): training labels; a
  calibration share, never trained on, that joins the replayed sources' validation rows; and the feedback
  test set the gate judges on.
- Then `python -m training.export` (ONNX + card calibrated on validation and the calibration share) and the
  gate, which uploads the checkpoint with a promoted candidate: the next retrain starts from it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from deepskin.core.bundle import card_path, load_card
from deepskin.core.spot import fingerprint
from deepskin.loop import launchers, ledger, promotion
from deepskin.loop.labels import clinician_labels
from deepskin.services import registry
from training import checkpoint_file, feedback_set, promote, sources
from training.data import FOLDER_ENV, data_root
from training.gate_set import LESION_SOURCES, require_sources
from training.net import EfficientNetLite, LiteConfig, pretrained
from training.train import TrainConfig, fit, load_model, load_splits, seed_everything, split_rows


def starting_point(config: TrainConfig, record: dict, work: Path) -> tuple[EfficientNetLite, TrainConfig, str]:
    """(network, config with the starting model's architecture, how it was initialised)."""
    saved = registry.fetch_checkpoint(record, work / "current.pt")
    if saved is not None:
        return (*from_checkpoint(config, saved, record["checkpoint_sha256"]), f"checkpoint of model {record['version']}")
    shape = load_card(registry.fetch(record)).get("training", {}).get("config", {})
    net = pretrained(LiteConfig(**shape["net"])) if "net" in shape else pretrained(config.net)
    init = f"ImageNet backbone (model {record['version']} has no checkpoint with a recorded SHA-256, only ONNX)"
    return net, shaped_like(config, shape), init


def from_checkpoint(config: TrainConfig, path: Path, sha256: str | None = None) -> tuple[EfficientNetLite, TrainConfig]:
    """The checkpoint's network, and `config` with its architecture and input size."""
    net, ckpt = load_model(path, sha256)
    return net, shaped_like(config, ckpt["config"])


def shaped_like(config: TrainConfig, shape: dict) -> TrainConfig:
    """The job's schedule with the starting model's architecture and input size: the weights must fit."""
    return replace(config, net=LiteConfig(**shape.get("net", vars(config.net))),
                   image_size=shape.get("image_size", config.image_size), serve_size=shape.get("serve_size", 0))


def judging_fingerprints(folders: dict, missing: list[str]) -> list[dict]:
    """The same-spot fingerprints of every lesion image that judges a model: the gate set and the test splits."""
    table = sources.table([s for s in LESION_SOURCES if s not in missing], folders)
    return [fingerprint(Path(path).read_bytes()) for path in table[table.split.isin(["gate", "test"])].path]


class FeedbackSets(NamedTuple):
    """The clinicians' labels in their three parts (training.feedback_set.part)."""
    train: pd.DataFrame  # trained on
    calibration: pd.DataFrame  # fits the candidate's calibration and bands beside the validation rows
    test: pd.DataFrame  # the feedback test set the gate judges on (with a `truth` column)


def feedback_sets(labels: pd.DataFrame, untrusted: int, folders: dict, missing: list[str]
                  ) -> tuple[FeedbackSets, dict]:
    """The clinicians' labels (rows of feedback_set.COLUMNS; `untrusted` of them already dropped) in their
    three parts, and what was counted and dropped on the way."""
    labels, disagreeing = feedback_set.resolve(labels)
    images = {row.image_id: Path(row.path).read_bytes() for row in labels.itertuples()}
    duplicates = feedback_set.near_duplicates(images, judging_fingerprints(folders, missing))
    train, calibration, test = feedback_set.split(labels[~labels.image_id.isin(duplicates)])
    # Another photo of a held-out image, labelled on another prediction, would carry it into training.
    held_out = [fingerprint(images[i]) for i in pd.concat([calibration.image_id, test.image_id])]
    copies = feedback_set.near_duplicates({i: images[i] for i in train.image_id}, held_out)
    train = train[~train.image_id.isin(copies)]
    counts = {"feedback_images": len(train), "feedback_calibration_labels": len(calibration),
              "feedback_test_labels": len(test),
              "feedback_biopsy_confirmed": int(train.histopathology.sum()), "feedback_labels_dropped": untrusted,
              "feedback_disagreeing_dropped": disagreeing, "feedback_duplicates_dropped": len(duplicates),
              "feedback_copies_of_held_out_dropped": len(copies)}
    return FeedbackSets(train, calibration, test.assign(truth=test.label.map(feedback_set.malignant))), counts


def as_source_rows(labels: pd.DataFrame, split: str) -> pd.DataFrame:
    """Labelled images as rows of source feedback_set.SOURCE (training.sources.COLUMNS): lesions, camera (clinical or
    dermoscopic) and age, sex, site unknown."""
    return labels.assign(source=feedback_set.SOURCE, split=split, dx=labels.label, lesion=True, clinical=float("nan"),
                         group=labels.image_id).reindex(columns=sources.COLUMNS)


def with_feedback(rows: dict[str, pd.DataFrame], feedback: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The replay rows plus the labelled images as training rows."""
    labelled = as_source_rows(feedback, "train")
    labelled["sample_weight"] = feedback_set.sample_weight(feedback)  # a biopsy-confirmed label is drawn more often
    return {**rows, "train": pd.concat([rows["train"], labelled], ignore_index=True)}


def source_folders(ham10000: Path) -> dict[str, str]:
    """HAM10000's folder (--data) and the other sources' beside it, as in the training bucket and in
    ../shared/data; a source's environment variable, when set, wins over its neighbour."""
    beside = {s: ham10000.parent / s for s in sources.LOADERS if s != "ham10000"}
    return {"ham10000": str(ham10000), **{s: str(path) for s, path in beside.items()
                                          if path.is_dir() and not os.environ.get(FOLDER_ENV[s])}}


def train_candidate(net: EfficientNetLite, config: TrainConfig, folders: dict, feedback: FeedbackSets,
                    candidate: Path, work: Path) -> Path:
    """Fine-tune `net` on the replay rows plus the feedback training labels, export it calibrated on the
    validation rows of the folders the model was trained on and the gate will measure, plus the feedback
    calibration share; the candidate's ONNX (its checkpoint beside it)."""
    candidate.mkdir(parents=True, exist_ok=True)
    rows = with_feedback(split_rows(config, folders), feedback.train)
    best = candidate / registry.CHECKPOINT  # the EMA weights the ONNX is made of; uploaded if promoted
    checkpoint_file.copy(fit(net, *load_splits(rows, config), config, work / "fit"), best)
    return export_candidate(candidate, folders, config.limit_val, feedback.calibration)


def export_candidate(candidate: Path, folders: dict, limit_val: int, calibration: pd.DataFrame | None = None) -> Path:
    """`python -m training.export` of the candidate's checkpoint: its ONNX, the card calibrated on (`limit_val`
    of) the validation rows of the checkpoint's sources, and the clinicians' calibration labels when given."""
    onnx = candidate / registry.ONNX
    # The labels go to export through a temporary file, not the run folder: on Vertex AI that is the training
    # bucket's runs/<job>/, which an owner's delete does not reach.
    with tempfile.TemporaryDirectory(prefix="deepskin-clinician-val-") as scratch:
        clinician_val = Path(scratch) / "clinician_val.csv"
        if calibration is not None:
            as_source_rows(calibration, "val").to_csv(clinician_val, index=False)
        subprocess.run([sys.executable, "-m", "training.export", "--checkpoint", str(candidate / registry.CHECKPOINT),
                        "--out", str(onnx), *sources.folder_arguments(folders), "--limit", str(limit_val),
                        *(["--clinician-val", str(clinician_val)] if calibration is not None else [])], check=True)
    return onnx


def run(job_id: str, config: TrainConfig, root: Path, work: Path, eval_limit: int) -> dict:
    seed_everything(config.seed)
    candidate = work / "candidate"
    folders = source_folders(root)
    missing = require_sources(folders)  # before any work: no source of the gate set may be missing
    record = promotion.current_record(promote.shipped_checkpoint)
    net, config, init = starting_point(config, record, work)
    rows, untrusted = clinician_labels(launchers.scratch_dir(job_id))
    feedback, counts = feedback_sets(pd.DataFrame(rows, columns=feedback_set.COLUMNS), untrusted, folders, missing)
    ledger.mark_running(job_id, init=init, **counts)
    onnx = train_candidate(net, config, folders, feedback, candidate, work)
    card = load_card(onnx)
    card["training"].update(init=init, job_id=job_id, base_model=record["version"],
                            feedback_labels=feedback.train.label.value_counts().to_dict())
    card_path(onnx).write_text(json.dumps(card, indent=1) + "\n")
    return promote.gate(candidate, job_id, folders, eval_limit, job_id=job_id, feedback=feedback.test,
                        feedback_counts=counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-id", required=True, help="the jobs/{id} document deepskin.loop.ledger created")
    parser.add_argument("--config", required=True, help="JSON config (training/configs/*.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    sources.add_folder_arguments(parser, ("ham10000",))
    parser.add_argument("--work", type=Path, help="run folder (default: a temporary folder)")
    parser.add_argument("--eval-limit", type=int, default=0, help="gate on a fixed subset of N gate-set lesions")
    args = parser.parse_args()
    config = TrainConfig.load(args.config, args.set)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"deepskin-retrain-{args.job_id}-"))
    try:
        decision = run(args.job_id, config, data_root(args.ham10000), work, args.eval_limit)
    except BaseException as exc:
        ledger.finish(args.job_id, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    finally:
        shutil.rmtree(launchers.scratch_dir(args.job_id), ignore_errors=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    ledger.finish(args.job_id, {"status": "done", "decision": promote.json_safe(decision)})
    print(json.dumps(promote.json_safe(decision), indent=1))


if __name__ == "__main__":
    main()
