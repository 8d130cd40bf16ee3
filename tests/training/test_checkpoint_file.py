"""Checkpoints load only as written: their SHA-256 beside them, tensors and plain containers only."""

import pickle

import pytest
import torch

from training import checkpoint_file
from training.promote import SHIPPED_CHECKPOINTS


def test_a_checkpoint_loads_back_as_written(tmp_path):
    path = tmp_path / "best.pt"
    checkpoint_file.save({"model": {"w": torch.ones(2)}, "config": {"image_size": 64}}, path)
    assert checkpoint_file.sidecar(path).read_text().strip() == checkpoint_file.file_sha256(path)
    assert checkpoint_file.load(path)["config"] == {"image_size": 64}
    checkpoint_file.copy(path, tmp_path / "copy.pt")
    assert torch.equal(checkpoint_file.load(tmp_path / "copy.pt")["model"]["w"], torch.ones(2))


def test_a_changed_or_unrecorded_checkpoint_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    checkpoint_file.save({"model": {"w": torch.ones(2)}}, path)
    with pytest.raises(checkpoint_file.CheckpointMismatch, match="differs"):
        checkpoint_file.load(path, expected="0" * 64)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(checkpoint_file.CheckpointMismatch, match="differs"):
        checkpoint_file.load(path)
    with pytest.raises(checkpoint_file.CheckpointMismatch, match="differs"):
        checkpoint_file.copy(path, tmp_path / "copy.pt")
    checkpoint_file.sidecar(path).unlink()
    with pytest.raises(checkpoint_file.CheckpointMismatch, match="no SHA-256"):
        checkpoint_file.load(path)


class Payload:  # any class: unpickling it could run code, so weights_only refuses it
    pass


def test_a_checkpoint_holding_an_object_is_refused_even_with_a_matching_digest(tmp_path):
    path = tmp_path / "object.pt"
    checkpoint_file.save({"config": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint_file.load(path)


def test_every_shipped_checkpoint_matches_its_digest():
    shipped = sorted(SHIPPED_CHECKPOINTS.glob("*.pt"))
    assert shipped, "the served model's checkpoint is missing"
    for path in shipped:
        assert checkpoint_file.load(path)["classes"][0] == "akiec"
