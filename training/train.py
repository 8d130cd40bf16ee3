"""Fine-tune EfficientNet-Lite on the HAM10000 training split.

    python -m training.train --config training/configs/cpu.json [--data DIR] [--out runs/NAME] [--resume]

One config (a JSON file, any field overridable by `--set key=value`) drives CPU and CUDA alike; CUDA adds
bf16 autocast. Each epoch writes `last.pt` (resumable) and, when validation improves, `best.pt`; both carry
the config and the preprocessing contract, and `best.pt` holds the EMA weights that are evaluated.
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
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from deepskin.labels import CLASSES, MALIGNANT_INDEX
from deepskin.preprocess import Preprocess
from training.data import LesionImages, data_root, image_paths, load_split
from training.net import EfficientNetLite, LiteConfig, pretrained


@dataclass
class TrainConfig:
    name: str = "cpu"
    net: LiteConfig = field(default_factory=LiteConfig)
    image_size: int = 192
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
    limit_train: int = 0  # >0: first N training images only (smoke runs)
    limit_val: int = 0

    @classmethod
    def load(cls, path: str | None, overrides: list[str]) -> TrainConfig:
        raw = json.loads(Path(path).read_text()) if path else {}
        for item in overrides:
            key, value = item.split("=", 1)
            raw[key] = json.loads(value) if value[:1] in "[{0123456789.-tf" else value
        net = LiteConfig(**raw.pop("net", {}))
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(net=net, **raw)

    def preprocess(self) -> Preprocess:
        return Preprocess(image_size=self.image_size)


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


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            logits.append(model(x.to(device, non_blocking=True)).float().cpu())
        targets.append(y)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def quick_metrics(logits: np.ndarray, targets: np.ndarray) -> dict:
    """The two numbers that choose the best epoch: malignant AUC and 7-class balanced accuracy (on val)."""
    probs = torch.from_numpy(logits).softmax(1).numpy()
    malignant = probs[:, list(MALIGNANT_INDEX)].sum(1)
    is_malignant = np.isin(targets, MALIGNANT_INDEX)
    auc = roc_auc_score(is_malignant, malignant) if 0 < is_malignant.sum() < len(targets) else float("nan")
    return {"val_auc": float(auc), "val_bacc": float(balanced_accuracy_score(targets, probs.argmax(1)))}


def checkpoint(model: nn.Module, config: TrainConfig, **extra) -> dict:
    return {
        "model": model.state_dict(),
        "config": asdict(config),
        "preprocess": config.preprocess().to_dict(),
        "classes": list(CLASSES),
        **extra,
    }


def load_model(path: str | Path) -> tuple[EfficientNetLite, dict]:
    """Rebuild a trained network from any checkpoint this script wrote."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = EfficientNetLite(LiteConfig(**ckpt["config"]["net"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def train(config: TrainConfig, data: str | None, out: Path, resume: bool) -> Path:
    seed_everything(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    root = data_root(data)
    paths, split = image_paths(root), load_split()
    rows = {name: split[split.split == name] for name in ("train", "val")}
    if config.limit_train:
        rows["train"] = rows["train"].sample(config.limit_train, random_state=config.seed)
    if config.limit_val:
        rows["val"] = rows["val"].sample(config.limit_val, random_state=config.seed)
    spec = config.preprocess()
    train_set = LesionImages(rows["train"], paths, spec, train=True, seed=config.seed)
    val_set = LesionImages(rows["val"], paths, spec, train=False)
    loader_args = {"num_workers": config.workers, "pin_memory": device.type == "cuda"}
    val_loader = DataLoader(val_set, batch_size=2 * config.batch_size, **loader_args)

    model = pretrained(config.net).to(device).to(memory_format=torch.channels_last)
    frozen = freeze(model, config.freeze_blocks)
    ema = copy.deepcopy(model).requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total, warmup = config.epochs * steps_per_epoch, max(1, int(config.warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:  # linear warmup, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(train_set.targets, config.class_weight_power).to(device),
        label_smoothing=config.label_smoothing,
    )
    start_epoch, best, history = 0, -1.0, []
    if resume and (out / "last.pt").exists():
        state = torch.load(out / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        torch.set_rng_state(state["rng"])
        print(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")

    for epoch in range(start_epoch, config.epochs):
        model.train()
        for module in frozen:
            module.eval()  # frozen BatchNorm keeps its ImageNet statistics
        train_set.epoch = epoch
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                            generator=generator, **loader_args)
        started, running = time.time(), 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", mininterval=10, dynamic_ncols=True)
        for i, (x, y) in enumerate(bar):
            x = x.to(device, non_blocking=True).to(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model(x).float(), y)
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
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        metrics = quick_metrics(*predict_logits(ema, val_loader, device))
        record = {"epoch": epoch + 1, "loss": running, "seconds": round(time.time() - started), **metrics}
        history.append(record)
        print(json.dumps(record), flush=True)
        score = metrics["val_auc"] + metrics["val_bacc"]
        if not score <= best:  # also true for the first, possibly NaN, score of a smoke run
            best = score
            torch.save(checkpoint(ema, config, epoch=epoch + 1, val=metrics), out / "best.pt")
        torch.save({**checkpoint(model, config), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best, "history": history,
                    "rng": torch.get_rng_state()}, out / "last.pt")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return out / "best.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON config (training/configs/*.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    parser.add_argument("--data", help="HAM10000 folder (default: $DEEPSKIN_HAM10000 or ../shared/data/ham10000)")
    parser.add_argument("--out", help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    args = parser.parse_args()
    config = TrainConfig.load(args.config, args.set)
    best = train(config, args.data, Path(args.out or f"runs/{config.name}"), args.resume)
    print(f"best checkpoint: {best}")


if __name__ == "__main__":
    main()
