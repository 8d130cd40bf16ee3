"""The training data as one table: HAM10000 (dermoscopy), PAD-UFES-20 (phone photos), non-lesion photos, and
the other clinics' sources (ISIC archive/MSK and BCN20000 dermoscopy, DermNet clinical photos).

One row per image: image_id, source, split, path, dx (empty for a non-lesion), lesion, clinical, age, sex,
site (HAM10000's vocabulary), group (lesion, patient or photo: what must not straddle splits) and crop (a box
of the photo, as fractions, that training keeps: DermNet's corner logo is cut away so that no network learns
it as a shortcut; None keeps all). Splits: HAM10000 by lesion (training/splits/ham10000_split.csv),
PAD-UFES-20 by patient and the other clinics by lesion (the split column their metadata ships), non-lesion
photos by category (training/splits/non_lesion_split.csv); the validation
rows of the promotion gate's frozen set (training/splits/gate_split.csv) are split "gate" instead, kept
from every training run. Each folder comes from a flag, an environment variable, or ../shared/data/<name>.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from deepskin.core.patient import PAD_REGIONS
from training.data import FOLDER_ENV, data_root, folder, image_paths, load_split, metadata, stratified_assignment

SPLITS = Path(__file__).parent / "splits"
NON_LESION_SPLIT_CSV = SPLITS / "non_lesion_split.csv"
GATE_CSV = SPLITS / "gate_split.csv"  # training.gate_set
NON_LESION_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
NON_LESION_SEED = 20261129
COLUMNS = ["image_id", "source", "split", "path", "dx", "lesion", "clinical", "age", "sex", "site", "group", "crop"]
# DermNet's logo sits in the bottom-left corner of every photo (x < 0.28, y > 0.65 of the frame): training
# keeps the right part, which holds the centre of the photo where the lesion is.
DERMNET_CROP = (0.3, 0.0, 1.0, 1.0)


def _rows(frame: pd.DataFrame, **columns) -> pd.DataFrame:
    return frame.assign(**columns).reindex(columns=COLUMNS)


def ham10000(root: Path) -> pd.DataFrame:
    meta = metadata(root).set_index("image_id")
    split = load_split()
    paths = image_paths(root)
    split = split[split.image_id.isin(paths)]
    return _rows(
        split, source="ham10000", path=split.image_id.map(paths), lesion=True, clinical=False,
        age=split.image_id.map(meta.age), sex=split.image_id.map(meta.sex),
        site=split.image_id.map(meta.localization), group=split.lesion_id,
    )


def pad_ufes20(root: Path) -> pd.DataFrame:
    meta = pd.read_csv(root / "metadata.csv")
    return _rows(
        meta, source="pad_ufes20", path=[root / "images" / f"{i}.jpg" for i in meta.image_id], dx=meta.dx_ham,
        lesion=True, clinical=True, sex=meta.gender.str.lower(), site=meta.region.map(PAD_REGIONS),
        group=meta.patient_id,
    )


def make_non_lesion_split(labels: pd.DataFrame, seed: int = NON_LESION_SEED) -> pd.DataFrame:
    """Stratified by category, so faces, animals, food ... are in every split."""
    strata = (rows.image_id for _, rows in sorted(labels.groupby("category")))
    assignment = stratified_assignment(strata, NON_LESION_FRACTIONS, seed)
    out = labels[["image_id", "category"]].copy()
    out["split"] = out.image_id.map(assignment)
    return out.sort_values("image_id").reset_index(drop=True)


def non_lesion(root: Path) -> pd.DataFrame:
    split = pd.read_csv(NON_LESION_SPLIT_CSV)
    paths = {p.stem: p for p in (root / "images").iterdir()}
    split = split[split.image_id.isin(paths)]
    return _rows(split, source="non_lesion", path=split.image_id.map(paths), lesion=False, clinical=False,
                 group=split.image_id)


def other_clinic(source: str, crop: tuple | None = None):
    """A loader for one of the sources in the shared metadata layout (isic_archive, bcn20000_84px, dermnet):
    HAM10000's classes, a lesion-grouped split column, image_type dermoscopy or clinical."""

    def load(root: Path) -> pd.DataFrame:
        meta = pd.read_csv(root / "metadata.csv")
        return _rows(meta, source=source, path=[root / "images" / f"{i}.jpg" for i in meta.image_id], lesion=True,
                     clinical=meta.image_type == "clinical", site=meta.localization, group=meta.lesion_id,
                     crop=[crop] * len(meta))

    return load


LOADERS = {"ham10000": ham10000, "pad_ufes20": pad_ufes20, "non_lesion": non_lesion,
           "isic_archive": other_clinic("isic_archive"), "bcn20000_84px": other_clinic("bcn20000_84px"),
           "dermnet": other_clinic("dermnet", DERMNET_CROP)}
EXTERNAL = ("isic_archive", "bcn20000_84px", "dermnet")  # other clinics than HAM10000's and PAD-UFES-20's


FLAGS = {"ham10000": ("--data", "HAM10000"), "pad_ufes20": ("--pad", "PAD-UFES-20"),
         "non_lesion": ("--non-lesion", "non-lesion photos"), "isic_archive": ("--isic", "ISIC archive"),
         "bcn20000_84px": ("--bcn", "BCN20000 thumbnails"), "dermnet": ("--dermnet", "DermNet photos")}


def add_folder_arguments(parser: argparse.ArgumentParser, which: tuple[str, ...] = tuple(FLAGS)) -> None:
    """--data, --pad, --non-lesion: where each data set is, when not at its variable or ../shared/data."""
    for source in which:
        flag, what = FLAGS[source]
        parser.add_argument(flag, dest=source, help=f"{what} folder (default: ${FOLDER_ENV[source]} or ../shared/data/{source})")


def folders_from(args: argparse.Namespace) -> dict[str, str | None]:
    """The folders add_folder_arguments read, for `table`."""
    return {source: getattr(args, source) for source in FLAGS if hasattr(args, source)}


def folder_arguments(folders: dict[str, str | None]) -> list[str]:
    """The flags that hand `folders` on to another training command: folders_from's inverse."""
    return [arg for source, path in folders.items() if path for arg in (FLAGS[source][0], str(path))]


def table(sources: list[str], folders: dict[str, str | None] | None = None) -> pd.DataFrame:
    """Every image of the named sources, with its split."""
    folders = folders or {}
    parts = []
    for source in sources:
        root = data_root(folders.get(source)) if source == "ham10000" else folder(source, folders.get(source))
        parts.append(LOADERS[source](root))
    out = pd.concat(parts, ignore_index=True)
    gate = set(pd.read_csv(GATE_CSV, dtype=str).image_id) if GATE_CSV.exists() else set()
    out.loc[out.image_id.isin(gate) & (out.split == "val"), "split"] = "gate"
    return out
