"""The registry's side of the promotion gate: which model is current, which one candidates are compared with,
and what a decision does. training.promote scores and decides; this module acts on its decision.

What decides (the pointer, the pinned baseline, a candidate awaiting approval) is read from and written to the
models bucket only, which the functions cannot write (deepskin.services.registry, infra/permissions.py); every
decision is also logged in Firestore (models/decisions/jobs/{id}) for people to read, never to decide from.
With $DEEPSKIN_PROMOTION_APPROVAL=required (the default on Google Cloud, deepskin.services.config), or when the
feedback test set was too small to prove anything, a passing candidate waits for a person (`approve`).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path

from google.cloud import firestore

from deepskin.core.bundle import BUNDLED_MODEL, load_card
from deepskin.services import registry
from deepskin.services.config import settings


class NotAwaitingApproval(LookupError):
    """An approval of a decision with no candidate record waiting in the models bucket."""


def current_record(shipped_checkpoint: Callable[[str], Path | None]) -> dict:
    """The registry's current version; the first time, the model being served is registered as current, with
    the checkpoint shipped for its version (`shipped_checkpoint(version)`: checked, or None when there is none),
    so that the first retrain fine-tunes the served weights instead of starting from ImageNet."""
    record = registry.current()
    if record is None:
        served = Path(settings().model_path or BUNDLED_MODEL)
        try:
            record = registry.set_current(registry.upload(served, shipped_checkpoint(load_card(served)["version"])),
                                          expected=None)
        except RuntimeError:  # registered meanwhile by another gate
            record = registry.current()
    return record


def pinned_baseline(current: dict) -> dict:
    """The registry's baseline record; the first gate pins the current version."""
    registry.write_anchor(registry.BASELINE, {k: current.get(k) for k in registry.RECORD_FIELDS}, replace=False)
    return registry.read_anchor(registry.BASELINE)


def pin_baseline() -> dict:
    """An operator's deliberate choice: from now on candidates are compared with the current version."""
    record = {k: registry.current().get(k) for k in registry.RECORD_FIELDS}
    registry.write_anchor(registry.BASELINE, record)
    return record


def act(decision_id: str, decision: dict, onnx: Path, checkpoint: Path | None, current: dict, proven: bool) -> dict:
    """Carry out the gate's `decision` (JSON-safe) and record it; returns it as recorded. A passing candidate is
    uploaded (its checkpoint too: the next retrain fine-tunes from it), then awaits a person when approval is
    required or the feedback check could not apply (`proven` False), else becomes current if `current` still is."""
    if decision["promoted"]:
        new = registry.upload(onnx, checkpoint)
        if settings().approval_required or not proven:
            registry.write_anchor(registry.pending_name(decision_id), new)
            decision.update(promoted=False, status="approved_pending", candidate_record=new)
        else:
            registry.set_current(new, expected=current["version"])
            decision.update(status="promoted")
    registry.record_decision(decision_id, decision)
    return decision


def approve(decision_id: str) -> dict:
    """A person's approval of a candidate the gate passed: its record, kept in the models bucket by the gate,
    becomes current. The Firestore decision is only the log: anything could have written it."""
    pending = registry.pending_name(decision_id)
    record = registry.read_anchor(pending)
    if record is None:
        raise NotAwaitingApproval(f"decision {decision_id} is not awaiting approval (no {pending} in the models bucket)")
    registry.set_current(record, expected=registry.current()["version"])
    registry.anchor_blob(pending).delete()
    doc = registry.decision_doc(decision_id)
    doc.set({"status": "promoted", "promoted": True, "approved_by": getpass.getuser(),
             "approved_at": firestore.SERVER_TIMESTAMP}, merge=True)
    return doc.get().to_dict()
