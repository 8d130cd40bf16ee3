"""Score every image in a folder with the served model, through the very code the predict function runs.

    python -m training.batch_predict --images DIR --out FILE.csv [--model PATH] [--ids FILE] [--metadata CSV]

One row per image: image_id (file name without extension), status (done, or status:reason of a refusal),
one column per class (akiec ... vasc), malignant, risk, then top_class (the type the page names first),
image_type, caveats, not_lesion and ood. `--metadata` takes a CSV with columns image_id, age, sex,
localization (HAM10000's vocabulary) and, optionally, the answers about the lesion under PAD-UFES-20's names:
itch, grew, hurt, changed, bleed, elevation (True/False, yes/no; blank or UNK for unknown); missing values
stay missing. Images go through
`deepskin.core.pipeline.assess_batch` exactly as uploads do, batched, with decoding spread over threads.
"""

from __future__ import annotations

import argparse
import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from deepskin.core.bundle import BUNDLED_MODEL
from deepskin.core.labels import CLASSES
from deepskin.core.model import Model
from deepskin.core.patient import QUESTIONS, UNKNOWN, InvalidPatientInfo, PatientInfo
from deepskin.core.pipeline import Assessment, assess_batch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
COLUMNS = ("image_id", "status", *CLASSES, "malignant", "risk", "top_class", "image_type", "caveats", "not_lesion",
           "ood")


def row(image_id: str, result: Assessment) -> dict:
    out = {"image_id": image_id, "status": "done" if result.status == "done" else f"{result.status}:{result.reason}",
           "not_lesion": result.not_lesion_probability, "ood": result.ood_score}
    if result.status == "done":
        out.update(result.probabilities, malignant=result.malignant_probability, risk=result.risk,
                   top_class=result.top_class, image_type=result.image_type, caveats=" ".join(result.caveats))
    return out


def score_items(items: list[tuple[str, bytes, PatientInfo]], model: Model, batch: int = 32,
                workers: int = 2) -> list[dict]:
    """(image_id, bytes, patient) -> one CSV row each."""
    rows = []
    with ThreadPoolExecutor(workers) as pool:  # decoding overlaps across images (PIL releases the GIL)
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            results = assess_batch([(data, patient) for _, data, patient in chunk], model, heatmaps=False,
                                   map_fn=pool.map)
            rows += [row(image_id, result) for (image_id, _, _), result in zip(chunk, results)]
    return rows


def score_folder(images: list[Path], model: Model, patients: dict[str, PatientInfo] | None = None) -> list[dict]:
    patients = patients or {}
    return score_items([(p.stem, p.read_bytes(), patients.get(p.stem, UNKNOWN)) for p in images], model)


def read_patients(path: Path) -> dict[str, PatientInfo]:
    """image_id -> PatientInfo from a CSV of image_id, age, sex, localization and any of the answer columns
    (PAD-UFES-20's names, QUESTIONS' values); any value may be blank."""
    frame = pd.read_csv(path, dtype={"image_id": str, **{column: str for column in QUESTIONS.values()}})
    missing = {"image_id", "age", "sex", "localization"} - set(frame.columns)
    if missing:
        raise SystemExit(f"{path}: missing columns {sorted(missing)}")
    patients = {}
    for r in frame.to_dict("records"):
        answers = {question: r.get(column) for question, column in QUESTIONS.items()}
        try:
            patients[r["image_id"]] = PatientInfo.parse(r["age"], r["sex"], r["localization"], **answers)
        except InvalidPatientInfo as exc:
            raise SystemExit(f"{path}: image {r['image_id']}: {exc}") from None
    return patients


def list_images(folder: Path, ids: set[str] | None = None) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [p for p in paths if ids is None or p.stem in ids]


def write_csv(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else "" if v is None else v) for k, v in r.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, type=Path, help="folder of JPEG/PNG/WebP images (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write")
    parser.add_argument("--model", default=str(BUNDLED_MODEL), help="ONNX file with its .card.json beside it")
    parser.add_argument("--ids", type=Path, help="optional text file of image_ids to score (one per line)")
    parser.add_argument("--metadata", type=Path, help="optional CSV: image_id, age, sex, localization "
                                                         "[, itch, grew, hurt, changed, bleed, elevation]")
    args = parser.parse_args()
    ids = set(args.ids.read_text().split()) if args.ids else None
    images = list_images(args.images, ids)
    if not images:
        raise SystemExit(f"no images under {args.images}")
    patients = read_patients(args.metadata) if args.metadata else None
    model = Model(args.model)
    started = time.perf_counter()
    rows = score_folder(images, model, patients)
    elapsed = time.perf_counter() - started
    write_csv(rows, args.out)
    done = sum(r["status"] == "done" for r in rows)
    print(f"{len(rows)} images ({done} done) in {elapsed:.1f} s: {len(rows) / elapsed:.0f} images/s -> {args.out}")


if __name__ == "__main__":
    main()
