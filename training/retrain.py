"""The retraining job: fine-tune on HAM10000's training split plus clinicians' confirmed labels, export a
candidate, and let the promotion gate (training.promote) compare it with the current model.

    python -m training.retrain --job-id ID --config training/configs/cpu.json [--set KEY=VALUE]
                               [--data DIR] [--work DIR] [--eval-limit N]

Started by deepskin.jobs: LocalLauncher runs it as a child process, VertexLauncher as a Vertex AI job.
- Starting weights: the current registry version's checkpoint when it has one (versions promoted by this
  job do). Otherwise, the served model being ONNX only, the ImageNet backbone with the current model's
  architecture and input size from its card. The card's `training.init` says which. The job's config
  gives the schedule (epochs, lr, frozen blocks, limits); architecture and input size always follow the
  starting model, since the weights must fit.
- Data: the training split (its first `limit_train` rows for smoke configs) plus every clinician-labelled
  image under gs://<training bucket>/feedback/ whose report still exists (reports expire, and are deleted
  with their result). A coarse label (benign/malignant) trains the summed probability of its classes.
  Those images are downloaded to the job's local scratch folder (deepskin.jobs.scratch_dir), never to the
  run folder (on Vertex AI that is the training bucket's runs/<job>/, out of reach of an owner's delete),
  and removed when the job ends; so is a temporary run folder.
- Then `python -m training.export` (ONNX + card calibrated on validation) and the gate.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from google.api_core.exceptions import NotFound
from google.cloud import firestore
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, DataLoader

from deepskin import jobs, registry, store
from deepskin.feedback import TRAINING_LABEL
from deepskin.labels import CLASSES, MALIGNANT_INDEX
from deepskin.model import card_path
from training import promote
from training.data import LesionImages, data_root, image_paths, load_split
from training.net import EfficientNetLite, LiteConfig, pretrained
from training.train import (
    TrainConfig,
    checkpoint,
    class_weights,
    freeze,
    load_model,
    predict_logits,
    quick_metrics,
    seed_everything,
)

# Coarse labels get targets past the classes; the loss reads them as a group of classes.
TARGETS = {**{c: i for i, c in enumerate(CLASSES)}, "benign": len(CLASSES), "malignant": len(CLASSES) + 1}
BENIGN_INDEX = tuple(i for i in range(len(CLASSES)) if i not in MALIGNANT_INDEX)


def starting_point(config: TrainConfig, record: dict, work: Path) -> tuple[EfficientNetLite, TrainConfig, str]:
    """(network, config with the starting model's architecture, how it was initialised)."""
    saved = registry.fetch_checkpoint(record, work / "current.pt")
    if saved is not None:
        net, ckpt = load_model(saved)
        shape = ckpt["config"]
        init = f"checkpoint of model {record['version']}"
    else:
        shape = json.loads(card_path(registry.fetch(record)).read_text()).get("training", {}).get("config", {})
        net = pretrained(LiteConfig(**shape["net"])) if "net" in shape else pretrained(config.net)
        init = f"ImageNet backbone (model {record['version']} has no checkpoint, only ONNX)"
    config = replace(config, net=LiteConfig(**shape.get("net", vars(config.net))),
                     image_size=shape.get("image_size", config.image_size))
    return net, config, init


def feedback_images(folder: Path) -> pd.DataFrame:
    """Download the clinician-labelled images whose report still exists; rows of (image_id, label, path)."""
    folder.mkdir(parents=True, exist_ok=True)
    reports = (store.firestore_client().collection(store.FEEDBACK)
               .where(filter=firestore.FieldFilter("counts_as", "==", TRAINING_LABEL)).stream())
    rows = []
    for report in reports:
        data = report.to_dict()
        if not data.get("training_image"):
            continue  # the upload was gone, or never assessed, when the report came
        path = folder / data["training_image"].rsplit("/", 1)[-1]
        try:
            store.blob_at(data["training_image"]).download_to_filename(str(path))
        except NotFound:
            path.unlink(missing_ok=True)
            continue
        rows.append({"image_id": report.id, "label": data["label"], "path": path})
    return pd.DataFrame(rows, columns=["image_id", "label", "path"])


def training_set(config: TrainConfig, paths: dict[str, Path], feedback: pd.DataFrame) -> ConcatDataset:
    split = load_split()
    base = split[(split.split == "train") & split.image_id.isin(paths)]
    if config.limit_train:
        base = base.sample(config.limit_train, random_state=config.seed)
    spec = config.preprocess()
    parts = [LesionImages(base, paths, spec, train=True, seed=config.seed)]
    if len(feedback):
        # LesionImages reads targets from `dx`; coarse labels are then set to their group targets.
        files = {**paths, **dict(zip(feedback.image_id, feedback.path))}
        labelled = LesionImages(feedback.assign(dx=CLASSES[0]), files, spec, train=True, seed=config.seed)
        labelled.targets = [TARGETS[label] for label in feedback.label]
        parts.append(labelled)
    return ConcatDataset(parts)


def loss_per_image(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Class-weighted cross-entropy for class labels; -log P(group) for benign/malignant labels."""
    fine = y < len(CLASSES)
    ce = F.cross_entropy(logits, y.clamp(max=len(CLASSES) - 1), weight=weights, label_smoothing=smoothing,
                         reduction="none")
    log_p = logits.log_softmax(1)
    group = torch.where(y == TARGETS["malignant"], log_p[:, list(MALIGNANT_INDEX)].logsumexp(1),
                        log_p[:, list(BENIGN_INDEX)].logsumexp(1))
    return torch.where(fine, ce, -group)


def fine_tune(net: EfficientNetLite, config: TrainConfig, train_set: ConcatDataset, paths: dict[str, Path],
              out: Path) -> Path:
    """Train the unfrozen layers (AdamW, cosine decay); keep the epoch that is best on validation."""
    split = load_split()
    val = split[(split.split == "val") & split.image_id.isin(paths)]
    if config.limit_val:
        val = val.sample(config.limit_val, random_state=config.seed)
    val_loader = DataLoader(LesionImages(val, paths, config.preprocess(), train=False),
                            batch_size=2 * config.batch_size, num_workers=config.workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device)
    frozen = freeze(net, config.freeze_blocks)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train_set) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    fine = [t for part in train_set.datasets for t in part.targets if t < len(CLASSES)]
    weights = class_weights(fine, config.class_weight_power).to(device)
    best, history = -1.0, []
    for epoch in range(config.epochs):
        net.train()
        for module in frozen:
            module.eval()  # frozen BatchNorm keeps its statistics
        for part in train_set.datasets:
            part.epoch = epoch
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, num_workers=config.workers,
                            generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        for x, y in loader:
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                logits = net(x.to(device)).float()
            loss = loss_per_image(logits, y.to(device), weights, config.label_smoothing).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        metrics = quick_metrics(*predict_logits(net, val_loader, device))
        history.append({"epoch": epoch + 1, "loss": loss.item(), **metrics})
        print(json.dumps(history[-1]), flush=True)
        score = metrics["val_auc"] + metrics["val_bacc"]
        if not score <= best:  # also true for a first NaN score (tiny validation sets)
            best = score
            torch.save(checkpoint(net, config, epoch=epoch + 1, val=metrics), out / registry.CHECKPOINT)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return out / registry.CHECKPOINT


def run(job_id: str, config: TrainConfig, root: Path, work: Path, eval_limit: int) -> dict:
    seed_everything(config.seed)
    candidate = work / "candidate"
    candidate.mkdir(parents=True, exist_ok=True)
    record = promote.current_record()
    net, config, init = starting_point(config, record, work)
    feedback = feedback_images(jobs.scratch_dir(job_id))
    jobs.mark_running(job_id, init=init, feedback_images=len(feedback))
    paths = image_paths(root)
    best = fine_tune(net, config, training_set(config, paths, feedback), paths, candidate)
    onnx = candidate / registry.ONNX
    subprocess.run([sys.executable, "-m", "training.export", "--checkpoint", str(best), "--out", str(onnx),
                    "--data", str(root), "--limit", str(config.limit_val)], check=True)
    card = json.loads(card_path(onnx).read_text())
    card["training"].update(init=init, job_id=job_id, base_model=record["version"],
                            feedback_labels=feedback.label.value_counts().to_dict())
    card_path(onnx).write_text(json.dumps(card, indent=1) + "\n")
    return promote.gate(candidate, job_id, root, eval_limit, job_id=job_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-id", required=True, help="the jobs/{id} document deepskin.jobs created")
    parser.add_argument("--config", required=True, help="JSON config (training/configs/*.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    parser.add_argument("--data", help="HAM10000 folder (default: $DEEPSKIN_HAM10000 or ../shared/data/ham10000)")
    parser.add_argument("--work", type=Path, help="run folder (default: a temporary folder)")
    parser.add_argument("--eval-limit", type=int, default=0, help="gate on a fixed subset of N test images")
    args = parser.parse_args()
    config = TrainConfig.load(args.config, args.set)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"deepskin-retrain-{args.job_id}-"))
    try:
        decision = run(args.job_id, config, data_root(args.data), work, args.eval_limit)
    except BaseException as exc:
        jobs.finish(store.firestore_client().transaction(), args.job_id,
                    {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    finally:
        shutil.rmtree(jobs.scratch_dir(args.job_id), ignore_errors=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    jobs.finish(store.firestore_client().transaction(), args.job_id,
                {"status": "done", "decision": promote.json_safe(decision)})
    print(json.dumps(promote.json_safe(decision), indent=1))


if __name__ == "__main__":
    main()
