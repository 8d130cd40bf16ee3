"""Write the committed splits: `python -m training.split [--data DIR] [--non-lesion DIR]`.

HAM10000 by lesion, stratified by class (training/splits/ham10000_split.csv); the non-lesion photos by
category, from their labels.csv (training/splits/non_lesion_split.csv).
"""

import argparse

import pandas as pd

from training import sources
from training.data import SPLIT_CSV, data_root, folder, make_split, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sources.add_folder_arguments(parser, ("ham10000", "non_lesion"))
    args = parser.parse_args()
    split = make_split(metadata(data_root(args.ham10000)))
    SPLIT_CSV.parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(SPLIT_CSV, index=False)
    print(split.groupby(["split", "dx"]).size().unstack(fill_value=0).to_string())
    print("lesions per split:", split.groupby("split").lesion_id.nunique().to_dict())
    labels = pd.read_csv(folder("non_lesion", args.non_lesion) / "labels.csv")
    non_lesion = sources.make_non_lesion_split(labels)
    non_lesion.to_csv(sources.NON_LESION_SPLIT_CSV, index=False)
    print(non_lesion.groupby(["split", "category"]).size().unstack(fill_value=0).to_string())


if __name__ == "__main__":
    main()
