"""Where each data set is (flag, variable, ../shared/data), and HAM10000: metadata, image lookup, its split."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from deepskin.core.labels import CLASSES

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDER_ENV = {"ham10000": "DEEPSKIN_HAM10000", "pad_ufes20": "DEEPSKIN_PAD_UFES20",
              "non_lesion": "DEEPSKIN_NON_LESION", "isic_archive": "DEEPSKIN_ISIC_ARCHIVE",
              "bcn20000_84px": "DEEPSKIN_BCN20000", "dermnet": "DEEPSKIN_DERMNET"}
SPLIT_CSV = Path(__file__).parent / "splits" / "ham10000_split.csv"
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLIT_SEED = 20261125


def folder(source: str, path: str | os.PathLike | None = None) -> Path:
    """A data set's folder: a flag wins, then its environment variable, then ../shared/data/<source>."""
    root = Path(path or os.environ.get(FOLDER_ENV[source]) or SHARED_DATA / source)
    if not root.is_dir():
        raise FileNotFoundError(f"no {source} folder at {root}: pass its flag or set ${FOLDER_ENV[source]}")
    return root


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The HAM10000 folder (see `folder`), checked for its metadata."""
    root = folder("ham10000", path)
    if not (root / "HAM10000_metadata.csv").exists():
        raise FileNotFoundError(f"no HAM10000_metadata.csv under {root}: pass --data or set ${FOLDER_ENV['ham10000']}")
    return root


def image_paths(root: Path) -> dict[str, Path]:
    """image_id -> file, for the flat folder of copies or the official HAM10000_images_part_{1,2} layout."""
    paths = {p.stem: p for p in root.rglob("ISIC_*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    if not paths:
        raise FileNotFoundError(f"no ISIC_*.jpg images under {root}")
    return paths


def metadata(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "HAM10000_metadata.csv")


def stratified_assignment(strata: Iterable[Iterable[str]], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """id -> train, val or test: each stratum's ids shuffled by one seeded generator, then cut by `fractions`."""
    rng = random.Random(seed)  # a seeded split, not a secret  # nosec B311
    assignment = {}
    for stratum in strata:
        ids = sorted(stratum)
        rng.shuffle(ids)
        n_train = round(fractions["train"] * len(ids))
        n_val = round(fractions["val"] * len(ids))
        for i, id_ in enumerate(ids):
            assignment[id_] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return assignment


def make_split(meta: pd.DataFrame, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """Lesion-grouped, class-stratified split: every image of a lesion lands in the same split."""
    lesions = meta.groupby("lesion_id")["dx"].first().reset_index()
    assignment = stratified_assignment((lesions.lesion_id[lesions.dx == dx] for dx in CLASSES), SPLIT_FRACTIONS, seed)
    out = meta[["image_id", "lesion_id", "dx"]].copy()
    out["split"] = out.lesion_id.map(assignment)
    return out.sort_values("image_id").reset_index(drop=True)


def load_split(path: Path = SPLIT_CSV) -> pd.DataFrame:
    return pd.read_csv(path)


def split_hash(path: Path = SPLIT_CSV) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
