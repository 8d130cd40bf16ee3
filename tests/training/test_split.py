"""The committed splits: grouped, stratified, reproducible; the data-folder flags."""

import argparse

import pandas as pd

from training.data import SPLIT_CSV, data_root, make_split, metadata
from training.sources import (
    NON_LESION_SPLIT_CSV,
    add_folder_arguments,
    folder_arguments,
    folders_from,
    make_non_lesion_split,
)


def test_no_lesion_in_two_splits():
    split = pd.read_csv(SPLIT_CSV)
    splits_per_lesion = split.groupby("lesion_id").split.nunique()
    assert splits_per_lesion.max() == 1, splits_per_lesion[splits_per_lesion > 1].index.tolist()[:5]


def test_split_covers_every_image_once_in_roughly_70_15_15():
    split = pd.read_csv(SPLIT_CSV)
    meta = metadata(data_root())
    assert sorted(split.image_id) == sorted(meta.image_id)
    lesion_share = split.groupby("split").lesion_id.nunique() / split.lesion_id.nunique()
    assert abs(lesion_share["train"] - 0.70) < 0.01 and abs(lesion_share["test"] - 0.15) < 0.01


def test_every_class_is_in_every_split():
    split = pd.read_csv(SPLIT_CSV)
    assert (split.groupby(["split", "dx"]).size().unstack(fill_value=0) > 0).all().all()


def test_committed_split_is_what_the_command_makes():
    regenerated = make_split(metadata(data_root()))
    committed = pd.read_csv(SPLIT_CSV)
    pd.testing.assert_frame_equal(regenerated.reset_index(drop=True), committed, check_dtype=False)


def test_byte_identical_images_share_a_split():
    split = pd.read_csv(SPLIT_CSV).set_index("image_id").split
    for a, b in (("ISIC_0024366", "ISIC_0029861"), ("ISIC_0024777", "ISIC_0029938")):
        assert split[a] == split[b]


def test_committed_non_lesion_split_is_what_the_command_makes_and_has_every_category_in_every_split():
    """The labels are outside the repository; the committed split carries each photo's category."""
    committed = pd.read_csv(NON_LESION_SPLIT_CSV)
    pd.testing.assert_frame_equal(make_non_lesion_split(committed[["image_id", "category"]]), committed)
    assert (committed.groupby(["split", "category"]).size().unstack(fill_value=0) > 0).all().all()


def test_folder_arguments_hand_on_the_folders_they_were_given():
    parser = argparse.ArgumentParser()
    add_folder_arguments(parser)
    folders = {"ham10000": "/data/ham", "pad_ufes20": "/data/pad", "non_lesion": None, "isic_archive": "/data/isic",
               "bcn20000_84px": None, "dermnet": "/data/dermnet"}
    assert folders_from(parser.parse_args(folder_arguments(folders))) == folders
