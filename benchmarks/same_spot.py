"""How well `deepskin.core.spot` tells the same spot from another, on phone photos: prints a table, asserts nothing.

    python -m benchmarks.same_spot [--data ../shared/data/pad_ufes20]

PAD-UFES-20 holds several photos of some lesions (taken on one visit, framed differently). Pairs:
- same: two photos of one lesion;
- same patient: first photos of two lesions of one patient (same skin, same camera: the hard case);
- other patients: first photos of two lesions of different patients (2,000 random pairs, seed 0).
For each threshold, the share of each kind of pair whose distance falls below it ("looks like the same spot").
"""

from __future__ import annotations

import argparse
import itertools
import random

import numpy as np
import pandas as pd

from deepskin.core import spot
from training.data import folder

THRESHOLDS = (0.25, 0.30, 0.35, 0.40, 0.45)


def pair_distances(root) -> dict[str, np.ndarray]:
    table = pd.read_csv(root / "metadata.csv")
    lesions = table.groupby(["patient_id", "lesion_id"])["image_id"].apply(list)
    prints: dict[str, dict] = {}

    def distance(a: str, b: str) -> float:
        for image_id in (a, b):
            if image_id not in prints:
                prints[image_id] = spot.fingerprint((root / "images" / f"{image_id}.jpg").read_bytes())
        return spot.distance(prints[a], prints[b])

    firsts = lesions.map(lambda ids: ids[0])
    by_patient = firsts.groupby(level="patient_id").apply(list)
    rng = random.Random(0)
    keys = list(firsts.index)
    others = [(firsts[x], firsts[y]) for x, y in (rng.sample(keys, 2) for _ in range(2000)) if x[0] != y[0]]
    return {"same": np.array([distance(a, b) for ids in lesions for a, b in itertools.combinations(ids, 2)]),
            "same patient": np.array([distance(a, b) for ids in by_patient for a, b in itertools.combinations(ids, 2)]),
            "other patients": np.array([distance(a, b) for a, b in others])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--data", help="PAD-UFES-20 folder (default: $DEEPSKIN_PAD_UFES20 or ../shared/data)")
    distances = pair_distances(folder("pad_ufes20", parser.parse_args().data))
    print("pairs: " + ", ".join(f"{kind} {len(d)}" for kind, d in distances.items()))
    print("threshold  " + "  ".join(f"{kind:>15}" for kind in distances))
    for threshold in THRESHOLDS:
        marker = " <- deepskin.core.spot" if threshold == spot.SAME_SPOT_BELOW else ""
        print(f"{threshold:9.2f}  " + "  ".join(f"{np.mean(d < threshold):15.0%}" for d in distances.values())
              + marker)


if __name__ == "__main__":
    main()
