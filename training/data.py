"""HAM10000: metadata, image lookup and the lesion-grouped split."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pandas as pd

from deepskin.core.labels import CLASSES

DATA_ENV = "DEEPSKIN_HAM10000"
SPLIT_CSV = Path(__file__).parent / "splits" / "ham10000_split.csv"
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLIT_SEED = 20261125


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The HAM10000 folder: a flag wins, then $DEEPSKIN_HAM10000, then ../shared/data/ham10000."""
    root = Path(path or os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[2] / "shared/data/ham10000")
    if not (root / "HAM10000_metadata.csv").exists():
        raise FileNotFoundError(f"no HAM10000_metadata.csv under {root}: pass --data or set ${DATA_ENV}")
    return root


def image_paths(root: Path) -> dict[str, Path]:
    """image_id -> file, for the flat folder of copies or the official HAM10000_images_part_{1,2} layout."""
    paths = {p.stem: p for p in root.rglob("ISIC_*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    if not paths:
        raise FileNotFoundError(f"no ISIC_*.jpg images under {root}")
    return paths


def metadata(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "HAM10000_metadata.csv")


def make_split(meta: pd.DataFrame, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """Lesion-grouped, class-stratified split: every image of a lesion lands in the same split."""
    lesions = meta.groupby("lesion_id")["dx"].first().reset_index()
    rng = random.Random(seed)
    assignment = {}
    for dx in CLASSES:
        ids = sorted(lesions.loc[lesions.dx == dx, "lesion_id"])
        rng.shuffle(ids)
        n_train = round(SPLIT_FRACTIONS["train"] * len(ids))
        n_val = round(SPLIT_FRACTIONS["val"] * len(ids))
        for i, lesion in enumerate(ids):
            assignment[lesion] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    out = meta[["image_id", "lesion_id", "dx"]].copy()
    out["split"] = out.lesion_id.map(assignment)
    return out.sort_values("image_id").reset_index(drop=True)


def load_split(path: Path = SPLIT_CSV) -> pd.DataFrame:
    return pd.read_csv(path)


def split_hash(path: Path = SPLIT_CSV) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
