"""What a trained network is worth served at other input sizes, with and without a test-time mirror view.

    python -m training.sweep --checkpoint runs/NAME/best.pt [--sizes 192 224] [--out training/reports/sweep.json]

Validation split of every source (never test), in serving's view, through `training.train.evaluate_split`:
per source malignant AUC and balanced accuracy, the scope head's non-lesion refusals, and the selection score
that chooses epochs. The export's `serve_size` and the decision on test-time flips are read off this table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from deepskin.core.preprocess import Preprocess
from training import sources
from training.train import Split, TrainConfig, evaluate_split, load_model, selection_score, split_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 224])
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    sources.add_folder_arguments(parser)
    args = parser.parse_args()
    net, ckpt = load_model(args.checkpoint)
    config = TrainConfig.from_dict({**ckpt["config"], "sources": list(sources.LOADERS)})
    val = Split(split_rows(config, sources.folders_from(args))["val"], config.preprocess(), torch.device("cpu"), {})
    rows = []
    for size in args.sizes:
        for mirrored in (False, True):
            metrics = evaluate_split(net, val, Preprocess(image_size=size), 64, mirrored)
            rows.append({"size": size, "mirrored": mirrored, "score": round(selection_score(metrics), 4),
                         **{k: round(v, 4) for k, v in metrics.items()}})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
