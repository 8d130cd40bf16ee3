"""Write the committed lesion-grouped split: `python -m training.split [--data DIR]`."""

import argparse

from training.data import SPLIT_CSV, data_root, make_split, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="HAM10000 folder (default: $DEEPSKIN_HAM10000 or ../shared/data/ham10000)")
    args = parser.parse_args()
    split = make_split(metadata(data_root(args.data)))
    SPLIT_CSV.parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(SPLIT_CSV, index=False)
    print(split.groupby(["split", "dx"]).size().unstack(fill_value=0).to_string())
    print("lesions per split:", split.groupby("split").lesion_id.nunique().to_dict())


if __name__ == "__main__":
    main()
