"""Checkpoint files: written with their SHA-256 beside them, loaded only when they still match it.

`torch.load` unpickles; with `weights_only=True` it accepts tensors and plain containers only, so a checkpoint
carries its config as a dict (`dataclasses.asdict`), never as an object. The digest catches a file that was
changed or truncated after training wrote it: `<name>.pt.sha256` sits beside every checkpoint this project
writes (training/checkpoints/ too), and the registry records it with a promoted version.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch


class CheckpointMismatch(ValueError):
    """A checkpoint whose bytes are not the ones recorded when it was written (or with nothing recorded)."""


def sidecar(path: Path) -> Path:
    return Path(f"{path}.sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(state: dict, path: Path) -> None:
    torch.save(state, path)
    sidecar(path).write_text(file_sha256(path) + "\n", encoding="ascii")


def copy(source: Path, dest: Path) -> None:
    """Copy a checkpoint with its digest, checked first: a bad file must not travel on under a fresh digest."""
    verify(source)
    shutil.copy(source, dest)
    shutil.copy(sidecar(source), sidecar(dest))


def verify(path: Path, expected: str | None = None) -> str:
    """The file's SHA-256 when it equals `expected` (default: the one recorded beside it); else CheckpointMismatch."""
    if expected is None:
        if not sidecar(path).is_file():
            raise CheckpointMismatch(f"{path}: no SHA-256 recorded beside it ({sidecar(path).name})")
        expected = sidecar(path).read_text(encoding="ascii").strip()
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointMismatch(f"{path}: SHA-256 {actual} differs from the recorded {expected}")
    return actual


def load(path: Path, expected: str | None = None, map_location: str | torch.device = "cpu") -> dict:
    verify(path, expected)
    return torch.load(path, map_location=map_location, weights_only=True)
