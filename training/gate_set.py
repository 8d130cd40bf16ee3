"""The promotion gate's frozen image set, apart from the test split that the evaluation report quotes.

    python -m training.gate_set [--data DIR] [--pad DIR]   # writes training/splits/gate_split.csv

Drawn once and committed (rewriting it would let a gate be chosen after the fact): half of the HAM10000
validation lesions (every image of a lesion together) and half of the PAD-UFES-20 validation patients,
stratified by malignancy, with a fixed seed. training.sources calls these rows split "gate", so no
training run selects its epochs or calibrates its card on them. Non-lesion photos for the gate are the
non-lesion validation split (they choose epochs, never a threshold), or the repository's fixtures when
that folder is absent. The gate fails closed: a source whose folder is missing raises MissingDataSource,
unless $DEEPSKIN_ALLOW_PARTIAL_GATE=fixtures (set by the repository's tests alone, which gate on
tests/fixtures/ham10000_mini); then it gates on the part of the set it has, the non-lesion photos
falling back to the fixtures, and the decision records which sources were missing and how many images
of each source it used.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pandas as pd

from deepskin.core.labels import MALIGNANT
from deepskin.services.config import settings
from training import sources

GATE_FRACTION = 0.5
GATE_SEED = 20261129
LESION_SOURCES = ("ham10000", "pad_ufes20")
NON_LESION_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "non_lesion"


class MissingDataSource(FileNotFoundError):
    """A source of the gate set has no folder here: gating on the rest would judge on another set."""


def missing_sources(folders: dict) -> list[str]:
    """The gate set's sources (lesions and non-lesion photos) whose folder this machine lacks."""
    missing = []
    for source in (*LESION_SOURCES, "non_lesion"):
        try:
            sources.table([source], folders)
        except FileNotFoundError:
            missing.append(source)
    return missing


def require_sources(folders: dict) -> list[str]:
    """The missing sources, allowed only on the fixture runs; otherwise MissingDataSource."""
    missing = missing_sources(folders)
    if missing and not settings().allow_partial_gate:
        raise MissingDataSource(f"no folder for {', '.join(missing)}: the gate and retraining need every source "
                                "of the gate set (a partial gate is for the repository's fixture tests only)")
    return missing


def make_gate_set(validation: pd.DataFrame, seed: int = GATE_SEED) -> pd.DataFrame:
    """GATE_FRACTION of each source's validation groups, malignant and benign groups drawn separately."""
    rng = random.Random(seed)  # a seeded split, not a secret  # nosec B311
    chosen = []
    for source, rows in sorted(validation.groupby("source")):
        malignant = rows.groupby("group").dx.agg(lambda dx: dx.isin(MALIGNANT).any())
        for flag in (True, False):
            groups = sorted(malignant.index[malignant == flag].astype(str))
            rng.shuffle(groups)
            chosen += [(source, g) for g in groups[:round(GATE_FRACTION * len(groups))]]
    picked = pd.DataFrame(chosen, columns=["source", "group"])
    out = validation.assign(group=validation.group.astype(str)).merge(picked, on=["source", "group"])
    return out[["image_id", "source", "group"]].sort_values(["source", "image_id"]).reset_index(drop=True)


def gate_lesions(folders: dict, limit: int = 0) -> pd.DataFrame:
    """The gate's lesion rows (sources.COLUMNS) from every source (require_sources); with `limit`, a fixed
    subset of whole groups holding both classes (smoke runs on the full data)."""
    present = [s for s in LESION_SOURCES if s not in require_sources(folders)]
    parts = [table[table.split == "gate"] for table in (sources.table([s], folders) for s in present)]
    if not parts or not sum(map(len, parts)):
        raise FileNotFoundError(f"none of the gate set's images ({sources.GATE_CSV}) is on this machine")
    rows = pd.concat(parts, ignore_index=True).sort_values("image_id")
    if not limit:
        return rows
    malignant = rows.dx.isin(MALIGNANT)
    groups = [*rows[malignant].group.unique()[:(limit + 1) // 2], *rows[~malignant].group.unique()[:limit // 2]]
    return rows[rows.group.isin(groups)]


def gate_non_lesions(folders: dict) -> pd.DataFrame:
    if "non_lesion" not in require_sources(folders):
        table = sources.table(["non_lesion"], folders)
        return table[table.split == "val"]
    paths = sorted(NON_LESION_FIXTURES.glob("*.jpg"))
    return pd.DataFrame({"image_id": [p.stem for p in paths], "source": "non_lesion", "path": paths,
                         "lesion": False, "group": [p.stem for p in paths]}).reindex(columns=sources.COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sources.add_folder_arguments(parser, ("ham10000", "pad_ufes20"))
    args = parser.parse_args()
    table = sources.table(list(LESION_SOURCES), sources.folders_from(args))
    gate = make_gate_set(table[table.split.isin(["val", "gate"])])
    gate.to_csv(sources.GATE_CSV, index=False)
    print(f"{sources.GATE_CSV}: {gate.source.value_counts().to_dict()} images")


if __name__ == "__main__":
    main()
