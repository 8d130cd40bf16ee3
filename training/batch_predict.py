"""Score every image in a folder with the served model, through the predict function's own path.

    python -m training.batch_predict --images DIR --out FILE.csv [--model PATH] [--ids FILE]

One row per image: image_id (file name without extension), status (done, or why not), one column per
class (akiec ... vasc), malignant, risk, ood. The evaluation report is computed from such a file, so
anyone can score the model on their own labelled images. Images run through `deepskin.pipeline.assess`
exactly as uploads do; inference is batched across images for throughput.
"""

from __future__ import annotations

import argparse
import csv
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deepskin import checks
from deepskin.labels import CLASSES
from deepskin.model import BUNDLED_MODEL, Model
from deepskin.pipeline import prepare

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
COLUMNS = ("image_id", "status", *CLASSES, "malignant", "risk", "ood")


def _prepared(path: Path, model: Model) -> tuple[str, np.ndarray | None]:
    """The same checks as an upload (decode, size, photo quality); returns (status, input or None)."""
    try:
        image = checks.decode(path.read_bytes())
        square, x = prepare(image, model)
        checks.photo_quality(square)
        return "done", x
    except checks.Refusal as refusal:
        return f"{refusal.status}:{refusal.reason}", None


def score_folder(images: list[Path], model: Model, batch: int = 32, workers: int = 2) -> list[dict]:
    rows = []
    with ThreadPoolExecutor(workers) as pool:  # decoding overlaps with inference (PIL releases the GIL)
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            prepared = list(pool.map(lambda p: _prepared(p, model), chunk))
            ready = [i for i, (_, x) in enumerate(prepared) if x is not None]
            scores = model.score(np.stack([prepared[i][1] for i in ready])) if ready else None
            position = {i: j for j, i in enumerate(ready)}
            for i, path in enumerate(chunk):
                row = {"image_id": path.stem, "status": prepared[i][0]}
                if i in position:
                    j = position[i]
                    ood = float(scores.ood[j])
                    row.update({c: float(p) for c, p in zip(CLASSES, scores.probabilities[j])})
                    row.update(malignant=float(scores.malignant[j]), ood=ood, risk=model.band(float(scores.malignant[j])))
                    if not model.in_scope(ood):
                        row["status"] = "unusable:not_a_lesion"
                rows.append(row)
    return rows


def list_images(folder: Path, ids: set[str] | None = None) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [p for p in paths if ids is None or p.stem in ids]


def write_csv(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, type=Path, help="folder of JPEG/PNG/WebP images (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write")
    parser.add_argument("--model", default=str(BUNDLED_MODEL), help="ONNX file with its .card.json beside it")
    parser.add_argument("--ids", type=Path, help="optional text file of image_ids to score (one per line)")
    args = parser.parse_args()
    ids = set(args.ids.read_text().split()) if args.ids else None
    images = list_images(args.images, ids)
    if not images:
        raise SystemExit(f"no images under {args.images}")
    model = Model(args.model)
    started = time.perf_counter()
    rows = score_folder(images, model)
    elapsed = time.perf_counter() - started
    write_csv(rows, args.out)
    done = sum(r["status"] == "done" for r in rows)
    print(f"{len(rows)} images ({done} done) in {elapsed:.1f} s: {len(rows) / elapsed:.0f} images/s -> {args.out}")


if __name__ == "__main__":
    main()
