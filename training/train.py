"""Fine-tune EfficientNet-Lite on HAM10000 dermoscopy, PAD-UFES-20 phone photos and non-lesion photos.

    python -m training.train --config training/configs/gpu.json [--data DIR] [--pad DIR] [--non-lesion DIR]
        [--out runs/NAME] [--resume]

One config (a JSON file, any field overridable by `--set key=value`) drives CPU and CUDA alike, with bf16
autocast (where the chip has it natively) and channels-last on both. The images are decoded once into memory
(training/augment.py) and augmented on the training device. Three losses: the seven classes (lesions only,
class-weighted), "a skin lesion at all?" (every image) and "a clinical, not dermoscopic, photo?" (lesions);
age, sex and site are an optional input, dropped at random so that the network answers as well without them.
Each epoch writes `last.pt` (resumable) and, when validation improves, `best.pt`; both carry the config and
the preprocessing contract, and `best.pt` holds the EMA weights that are evaluated. `fit` is the loop itself;
training.retrain runs it too, on a replay sample plus clinicians' labels, from the current model's weights,
with a fourth loss there (`distill_weight`): the replayed images keep the current model's answers.
A row's dx may also be a coarse label (benign, malignant): it trains the summed probability of its classes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn
from torch.nn import functional as F

from deepskin.core.labels import CLASSES, COARSE_LABELS, MALIGNANT_INDEX
from deepskin.core.patient import SEXES, VECTOR_SIZE, PatientInfo
from deepskin.core.preprocess import Preprocess
from training import checkpoint_file, sources
from training.augment import centre_view, load_canvas, normalise, random_view
from training.net import EfficientNetLite, LiteConfig, pretrained

# Coarse labels get targets past the classes; the loss reads them as a group of classes.
TARGETS = {**{c: i for i, c in enumerate(CLASSES)}, **{c: len(CLASSES) + i for i, c in enumerate(COARSE_LABELS)}}
GROUPS = {TARGETS["malignant"]: list(MALIGNANT_INDEX),
          TARGETS["benign"]: [i for i in range(len(CLASSES)) if i not in MALIGNANT_INDEX]}


@dataclass
class TrainConfig:
    name: str = "cpu"
    net: LiteConfig = field(default_factory=LiteConfig)
    image_size: int = 192
    # The exported model's input size (0: image_size), chosen on validation: random crops show the network
    # lesions larger than a centre view of the same size does, so serving a little larger matches their scale.
    serve_size: int = 0
    freeze_blocks: int = 8  # stem + this many MBConv blocks stay at their ImageNet weights (CPU budget)
    epochs: int = 7
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.02
    warmup_epochs: float = 0.3
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5  # loss weight per class = (1 / frequency) ** power
    ema_decay: float = 0.998
    seed: int = 0
    workers: int = 1
    sources: list = field(default_factory=lambda: ["ham10000"])  # training/sources.py names
    source_weight: dict = field(default_factory=dict)  # sampling weight per source (rare sources oversampled)
    meta_drop: float = 0.5  # chance that a training image is seen without age, sex and site
    lesion_loss_weight: float = 1.0
    domain_loss_weight: float = 0.3
    # >0: fine-tuning keeps the starting model's answers on replayed (not feedback) images, a distillation loss
    # of this weight at this temperature ("learning without forgetting"): the new labels may then move the
    # network without the old sources' rankings drifting with it.
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    init: str = ""  # a checkpoint whose weights start the run (fine-tuning); empty: the ImageNet backbone
    samples_per_epoch: int = 0  # >0: draws per epoch (validation and checkpoints that often); 0: the set's size
    limit_train: int = 0  # >0: first N training images only (smoke runs)
    limit_val: int = 0

    @classmethod
    def load(cls, path: str | None, overrides: list[str]) -> TrainConfig:
        raw = json.loads(Path(path).read_text()) if path else {}
        for item in overrides:
            key, value = item.split("=", 1)
            try:  # numbers, booleans, lists and objects; anything else is a plain string (name=tiny)
                raw[key] = json.loads(value)
            except json.JSONDecodeError:
                raw[key] = value
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        """A config from its fields (a JSON config, a checkpoint's "config"); an unknown key is an error."""
        raw = dict(raw)
        net = LiteConfig(**raw.pop("net", {}))
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(net=net, **raw)

    def preprocess(self) -> Preprocess:
        return Preprocess(image_size=self.image_size)

    def served(self) -> Preprocess:
        return Preprocess(image_size=self.serve_size or self.image_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(targets: list[int], power: float) -> torch.Tensor:
    counts = np.bincount(targets, minlength=len(CLASSES)).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** power
    return torch.tensor(w / (w * counts).sum() * counts.sum(), dtype=torch.float32)


def freeze(model: EfficientNetLite, n_blocks: int) -> list[nn.Module]:
    """Freeze the stem and the first n blocks, BatchNorm statistics included; returns the frozen modules."""
    frozen = [model._conv_stem, model._bn0, *model._blocks[:n_blocks]] if n_blocks > 0 else []
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def quick_metrics(logits: np.ndarray, targets: np.ndarray) -> dict:
    """One source's malignant AUC and 7-class balanced accuracy, of those that choose the best epoch."""
    probs = torch.from_numpy(logits).softmax(1).numpy()
    malignant = probs[:, list(MALIGNANT_INDEX)].sum(1)
    is_malignant = np.isin(targets, MALIGNANT_INDEX)
    auc = roc_auc_score(is_malignant, malignant) if 0 < is_malignant.sum() < len(targets) else float("nan")
    return {"auc": float(auc), "bacc": float(balanced_accuracy_score(targets, probs.argmax(1)))}


# bfloat16 is fast on a GPU's tensor cores and on a CPU with AMX or AVX-512 BF16; an AVX2-only CPU emulates it,
# about ten times slower than float32 for this network. Read once: head_outputs runs on every training step.
CPU_BFLOAT16 = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def native_bfloat16(device_type: str) -> bool:
    return device_type == "cuda" or CPU_BFLOAT16


def head_outputs(model: EfficientNetLite, x: torch.Tensor, meta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every head's output in float32: the backbone under bfloat16 autocast where that is fast
    (`native_bfloat16`), the small heads and the losses in float32."""
    with torch.autocast(x.device.type, torch.bfloat16, enabled=native_bfloat16(x.device.type)):
        pooled = model.features(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3)).float()
    return {k: v.float() for k, v in model.heads(pooled, meta).items()}


def checkpoint(model: nn.Module, config: TrainConfig, **extra) -> dict:
    return {
        "model": model.state_dict(),
        "config": asdict(config),
        "preprocess": config.preprocess().to_dict(),
        "classes": list(CLASSES),
        **extra,
    }


def load_model(path: str | Path, sha256: str | None = None) -> tuple[EfficientNetLite, dict]:
    """Rebuild a trained network from any checkpoint this script wrote, checked against `sha256` (default: the
    digest written beside it)."""
    ckpt = checkpoint_file.load(Path(path), sha256)
    model = EfficientNetLite(LiteConfig(**ckpt["config"]["net"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def patient_vectors(rows: pd.DataFrame) -> torch.Tensor:
    return torch.from_numpy(np.stack([PatientInfo.parse(a, s, l).vector() for a, s, l in
                                      zip(rows.age, rows.sex, rows.site)]))


def drop_fields(meta: torch.Tensor, p_all: float, generator: torch.Generator) -> torch.Tensor:
    """Teach the network that any field may be missing: all of them with p_all, else each with p_all / 2."""
    n, device = len(meta), meta.device
    keep_all = torch.rand(n, 1, generator=generator, device=device) >= p_all
    columns = [slice(0, 2), slice(2, 2 + len(SEXES)), slice(2 + len(SEXES), VECTOR_SIZE)]
    mask = torch.ones_like(meta)
    for cols in columns:
        mask[:, cols] = (torch.rand(n, 1, generator=generator, device=device) >= p_all / 2).float()
    return meta * mask * keep_all


class Split:
    """One split of the table, decoded onto the canvas and moved to the training device."""

    def __init__(self, rows: pd.DataFrame, spec: Preprocess, device: torch.device, source_weight: dict):
        self.rows = rows.reset_index(drop=True)
        images, valid = load_canvas(list(self.rows.path), spec, list(self.rows.crop))
        self.images, self.valid = images.to(device), valid.to(device)
        self.targets = torch.tensor([TARGETS[d] if isinstance(d, str) else -1 for d in self.rows.dx], device=device)
        self.lesion = torch.tensor(self.rows.lesion.astype(float).values, dtype=torch.float32, device=device)
        # NaN: not known (a clinician's label says nothing about the camera), left out of that loss.
        self.clinical = torch.tensor(self.rows.clinical.astype(float).values, dtype=torch.float32, device=device)
        self.meta = patient_vectors(self.rows).to(device)
        self.replayed = torch.tensor((self.rows.source != "feedback").to_numpy(bool), device=device)
        # How often a row is drawn: its source's weight times its own (a biopsy-confirmed clinician label's).
        own = self.rows.get("sample_weight", pd.Series(1.0, index=self.rows.index)).fillna(1.0).to_numpy(float)
        self.weights = torch.tensor([source_weight.get(s, 1.0) for s in self.rows.source], dtype=torch.float64) * \
            torch.tensor(own, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.rows)


def class_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Class-weighted cross-entropy for class labels and -log P(group) (weight 1) for coarse ones, averaged
    over both: exactly F.cross_entropy's weighted mean when every label is a class."""
    fine = y < len(CLASSES)
    total = F.cross_entropy(logits[fine], y[fine], weight=weights, label_smoothing=smoothing, reduction="sum")
    log_p = logits.log_softmax(1)
    for target, members in GROUPS.items():
        total = total - log_p[y == target][:, members].logsumexp(1).sum()
    return total / (weights[y[fine]].sum() + (~fine).sum())


def losses(outputs: dict, batch: Split, idx: torch.Tensor, config: TrainConfig, weights: torch.Tensor) -> dict:
    y = batch.targets[idx]
    is_lesion = y >= 0
    out = {"class": class_loss(outputs["logits"][is_lesion], y[is_lesion], weights, config.label_smoothing)
           if is_lesion.any() else 0.0}
    if config.net.aux_heads:
        out["lesion"] = config.lesion_loss_weight * F.binary_cross_entropy_with_logits(
            outputs["lesion"], batch.lesion[idx])
        known = is_lesion & ~batch.clinical[idx].isnan()
        if known.any():
            out["clinical"] = config.domain_loss_weight * F.binary_cross_entropy_with_logits(
                outputs["clinical"][known], batch.clinical[idx][known])
    return out


@torch.no_grad()
def evaluate_split(model: EfficientNetLite, data: Split, spec: Preprocess, batch_size: int,
                   mirrored: bool = False) -> dict:
    """Validation in serving's view (centre square), per source: AUC, balanced accuracy, the scope gate.
    `mirrored` averages every output with the mirror image's (a test-time flip, training.sweep weighs it)."""
    model.eval()
    outs = []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.images.device)
        x = normalise(centre_view(data.images[idx], data.valid[idx], spec.image_size), spec)
        out = head_outputs(model, x, data.meta[idx])
        if mirrored:
            flipped = head_outputs(model, x.flip(3), data.meta[idx])
            out = {k: (v + flipped[k]) / 2 for k, v in out.items()}
        outs.append(out)
    logits = torch.cat([o["logits"] for o in outs]).cpu().numpy()
    targets = data.targets.cpu().numpy()
    metrics = {}
    for source in sorted(set(data.rows.source)):
        mask = (data.rows.source == source).values & (targets >= 0)
        if mask.any():
            m = quick_metrics(logits[mask], targets[mask])
            metrics.update({f"{source}_auc": m["auc"], f"{source}_bacc": m["bacc"]})
    if model.config.aux_heads:
        not_lesion = -torch.cat([o["lesion"] for o in outs]).cpu().numpy()
        lesions = targets >= 0
        if lesions.any() and (~lesions).any():
            threshold = np.quantile(not_lesion[lesions], 0.99)  # 1% of validation lesions refused
            metrics["non_lesion_refused"] = float((not_lesion[~lesions] > threshold).mean())
    return metrics


def selection_score(metrics: dict) -> float:
    """What chooses the epoch: every validation number that matters to a user, equally weighted, the other
    clinics' sources included so that the chosen model is the one that travels."""
    keys = ("ham10000_auc", "ham10000_bacc", "pad_ufes20_auc", "non_lesion_refused",
            *(f"{source}_auc" for source in sources.EXTERNAL))
    return float(sum(metrics.get(k, 0.0) for k in keys if metrics.get(k) == metrics.get(k)))


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def split_rows(config: TrainConfig, folders: dict) -> dict[str, pd.DataFrame]:
    """The training and validation rows of the config's sources, a seeded sample of each when limited."""
    table = sources.table(config.sources, folders)
    rows = {name: table[table.split == name] for name in ("train", "val")}
    for name, limit in (("train", config.limit_train), ("val", config.limit_val)):
        if limit:
            rows[name] = rows[name].sample(min(limit, len(rows[name])), random_state=config.seed)
    return rows


def load_splits(rows: dict[str, pd.DataFrame], config: TrainConfig) -> tuple[Split, Split]:
    started = time.time()
    train_set, val_set = (Split(rows[n], config.preprocess(), training_device(), config.source_weight)
                          for n in ("train", "val"))
    print(f"{len(train_set)} training and {len(val_set)} validation images in memory "
          f"({time.time() - started:.0f} s): {rows['train'].source.value_counts().to_dict()}", flush=True)
    return train_set, val_set


def distillation(student: dict, teacher: dict, keep: torch.Tensor, temperature: float) -> torch.Tensor:
    """How far the student's class and lesion answers moved from the teacher's on the rows `keep`: the
    temperature-softened KL divergence of the seven classes plus the lesion head's binary one."""
    if not keep.any():
        return student["logits"].sum() * 0.0
    t = temperature
    moved = F.kl_div((student["logits"][keep] / t).log_softmax(1), (teacher["logits"][keep] / t).log_softmax(1),
                     log_target=True, reduction="batchmean") * t * t
    if "lesion" in student:
        target = teacher["lesion"][keep].sigmoid()
        moved = moved + F.binary_cross_entropy_with_logits(student["lesion"][keep], target) - \
            F.binary_cross_entropy_with_logits(teacher["lesion"][keep], target)  # minus the entropy: 0 when alike
    return moved


def train(config: TrainConfig, folders: dict, out: Path, resume: bool) -> Path:
    seed_everything(config.seed)
    train_set, val_set = load_splits(split_rows(config, folders), config)
    return fit(load_model(config.init)[0] if config.init else pretrained(config.net), train_set, val_set, config,
               out, resume)


def fit(model: EfficientNetLite, train_set: Split, val_set: Split, config: TrainConfig, out: Path,
        resume: bool = False) -> Path:
    """The training loop, from `model`'s weights: writes <out>/last.pt each epoch, returns <out>/best.pt."""
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True
    spec, device = config.preprocess(), train_set.images.device
    model = model.to(device).to(memory_format=torch.channels_last)
    frozen = freeze(model, config.freeze_blocks)
    ema = copy.deepcopy(model).requires_grad_(False)
    # The starting weights, before a resume loads later ones: what distillation keeps the network close to.
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if config.distill_weight > 0 else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    draws = config.samples_per_epoch or len(train_set)
    steps_per_epoch = max(1, draws // config.batch_size)
    total, warmup = config.epochs * steps_per_epoch, max(1, int(config.warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:  # linear warmup, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    lesion_targets = [t for t in train_set.targets.tolist() if 0 <= t < len(CLASSES)]
    weights = class_weights(lesion_targets, config.class_weight_power).to(device)
    start_epoch, best, history = 0, -1.0, []
    if resume and (out / "last.pt").exists():
        state = checkpoint_file.load(out / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        print(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")

    for epoch in range(start_epoch, config.epochs):
        model.train()
        for module in frozen:
            module.eval()  # frozen BatchNorm keeps its ImageNet statistics
        # Seeded per epoch: a resumed run sees exactly the batches it would have seen.
        generator = torch.Generator(device).manual_seed(config.seed * 1000 + epoch)
        order = torch.multinomial(train_set.weights, draws, replacement=True,
                                  generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).to(device)
        started, running = time.time(), 0.0
        for i in range(steps_per_epoch):
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            x = normalise(random_view(train_set.images[idx], train_set.valid[idx], spec.image_size, generator), spec)
            meta = drop_fields(train_set.meta[idx], config.meta_drop, generator)
            outputs = head_outputs(model, x, meta)
            parts = losses(outputs, train_set, idx, config, weights)
            if teacher is not None:
                with torch.no_grad():
                    taught = head_outputs(teacher, x, meta)
                parts["distill"] = config.distill_weight * distillation(
                    outputs, taught, train_set.replayed[idx], config.distill_temperature)
            loss = sum(parts.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
                    if e.dtype.is_floating_point:
                        e.lerp_(p, 1 - config.ema_decay)
                    else:
                        e.copy_(p)
            running = loss.item() if i == 0 else 0.98 * running + 0.02 * loss.item()
        metrics = evaluate_split(ema, val_set, spec, 2 * config.batch_size)
        record = {"epoch": epoch + 1, "loss": round(running, 4), "seconds": round(time.time() - started),
                  **{k: round(v, 4) for k, v in metrics.items()}}
        history.append(record)
        print(json.dumps(record), flush=True)
        score = selection_score(metrics)
        if not score <= best:  # also true for the first, possibly NaN, score of a smoke run
            best = score
            checkpoint_file.save(checkpoint(ema, config, epoch=epoch + 1, val=metrics), out / "best.pt")
        checkpoint_file.save({**checkpoint(model, config), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best, "history": history},
                             out / "last.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return out / "best.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON config (training/configs/*.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    sources.add_folder_arguments(parser)
    parser.add_argument("--out", help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    args = parser.parse_args()
    config = TrainConfig.load(args.config, args.set)
    folders = sources.folders_from(args)
    best = train(config, folders, Path(args.out or f"runs/{config.name}"), args.resume)
    print(f"best checkpoint: {best}")


if __name__ == "__main__":
    main()
