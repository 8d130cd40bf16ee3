"""The committed split: lesion-grouped, stratified, reproducible."""

import pandas as pd

from training.data import SPLIT_CSV, data_root, make_split, metadata


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
