"""The model registry: versioned ONNX + card in the models bucket, and the pointer to the current version.

  gs://<models bucket>/models/<version>/deepskin.onnx, deepskin.card.json, and checkpoint.pt when the
      version was trained by training.retrain (the next retrain fine-tunes from those weights)
  gs://<models bucket>/current.json  {version, onnx_uri, card_uri, checkpoint_uri, onnx_sha256, card_sha256,
                                      checkpoint_sha256, promoted_at, previous, history}
  gs://<models bucket>/baseline.json          the pinned baseline's record: what every candidate is compared with
  gs://<models bucket>/pending/<decision>.json the record of a candidate that passed the gate and awaits a person
  models/decisions/jobs/{id}    (Firestore) every promotion-gate decision, promoted or refused (training.promote):
                                the log the operator page shows, never read to decide anything

The pointer, the baseline and the candidates awaiting approval (the trust anchors) live in the models bucket,
not in Firestore, because Firestore's IAM is project-wide: the predict functions, which decode untrusted
images, must write their results there, and could then rewrite an anchor too. The models bucket is writable
by the training identity only (the promotion path); the functions read it (infra/permissions.py). The files'
SHA-256 are recorded at upload and checked by `fetch` before a model is loaded, so a file changed in the
bucket or the local cache is never served.

deepskin.services.served_model asks `current()` every $DEEPSKIN_MODEL_CHECK_SECONDS, so a promotion or a
rollback reaches every instance without a redeploy. This module only stores and finds files: it never loads
a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import firestore

from deepskin.core.bundle import card_path, load_card
from deepskin.services import store
from deepskin.services.config import settings

log = logging.getLogger(__name__)

ONNX, CARD, CHECKPOINT = "deepskin.onnx", "deepskin.card.json", "checkpoint.pt"
POINTER, BASELINE, PENDING = "current.json", "baseline.json", "pending/"
RECORD_FIELDS = ("version", "onnx_uri", "card_uri", "checkpoint_uri", "onnx_sha256", "card_sha256", "checkpoint_sha256")
HISTORY_KEPT = 20
CACHE = Path(tempfile.gettempdir()) / "deepskin-models"


class IntegrityError(RuntimeError):
    """A model file is not the one that was promoted."""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def anchor_blob(name: str):
    return store.storage_client().bucket(settings().models_bucket).blob(name)


def pointer_blob():
    return anchor_blob(POINTER)


def pending_name(decision_id: str) -> str:
    return f"{PENDING}{decision_id}.json"


def read_anchor(name: str) -> dict | None:
    """A record kept in the models bucket (the baseline, a pending candidate); None when there is none."""
    try:
        return json.loads(anchor_blob(name).download_as_bytes())
    except NotFound:
        return None


def write_anchor(name: str, record: dict, replace: bool = True) -> bool:
    """Store a record in the models bucket; with replace=False only if none is there yet. True when written."""
    try:
        anchor_blob(name).upload_from_string(json.dumps(record, indent=1), content_type="application/json",
                                             if_generation_match=None if replace else 0)
    except PreconditionFailed:
        return False
    return True


def decision_doc(id_: str):
    return store.firestore_client().collection("models").document("decisions").collection("jobs").document(id_)


def current() -> dict | None:
    return read_pointer()[0]


def read_pointer() -> tuple[dict | None, int]:
    """(the pointer's record, its object generation: 0 when there is none yet). One request: the download
    reports the generation of the bytes it read, which served_model checks under its lock."""
    blob = pointer_blob()
    try:
        data = blob.download_as_bytes()
    except NotFound:
        return None, 0
    return json.loads(data), blob.generation


def write_pointer(doc: dict, generation: int) -> None:
    """Replace the pointer only if it is still at `generation` (compare and swap)."""
    try:
        pointer_blob().upload_from_string(json.dumps(doc, indent=1), content_type="application/json",
                                          if_generation_match=generation)
    except PreconditionFailed:
        raise RuntimeError("the current model changed meanwhile") from None


def upload(onnx_path: Path, checkpoint: Path | None = None) -> dict:
    """Store a model version (ONNX + its card, and its checkpoint); returns its record. Idempotent per version."""
    version = str(load_card(onnx_path)["version"])
    bucket = store.storage_client().bucket(settings().models_bucket)
    files = {"onnx_uri": (onnx_path, ONNX), "card_uri": (card_path(onnx_path), CARD)}
    if checkpoint is not None:
        files["checkpoint_uri"] = (checkpoint, CHECKPOINT)
    record = {"version": version, "onnx_uri": None, "card_uri": None, "checkpoint_uri": None,
              "onnx_sha256": sha256(onnx_path), "card_sha256": sha256(card_path(onnx_path)),
              "checkpoint_sha256": sha256(checkpoint) if checkpoint is not None else None}
    for field, (path, name) in files.items():
        target = bucket.blob(f"models/{version}/{name}")
        try:  # a version is immutable: never overwrite what may already be served
            target.upload_from_filename(str(path), if_generation_match=0)
        except PreconditionFailed:
            pass
        record[field] = f"gs://{bucket.name}/{target.name}"
    return record


def fetch(record: dict, root: Path = CACHE) -> Path:
    """The version's ONNX (card beside it) under `root`, downloaded once and checked against the SHA-256
    recorded at promotion every time; returns the ONNX path. IntegrityError when a file differs."""
    final = root / record["version"]
    if (final / ONNX).exists():
        verify(record, final)  # the cache outlives this process: check it again
        return final / ONNX
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root))  # whole or nothing: a crash leaves no half model behind
    store.blob_at(record["card_uri"]).download_to_filename(str(staging / CARD))
    store.blob_at(record["onnx_uri"]).download_to_filename(str(staging / ONNX))
    verify(record, staging)
    try:
        staging.rename(final)
    except OSError:  # another request or process got there first: use its copy, checked
        shutil.rmtree(staging, ignore_errors=True)
        verify(record, final)
    return final / ONNX


def read_card(record: dict) -> dict:
    """The version's card alone, checked against its recorded SHA-256: the operator page never needs the ONNX."""
    data = store.blob_at(record["card_uri"]).download_as_bytes()
    if not record.get("card_sha256") or hashlib.sha256(data).hexdigest() != record["card_sha256"]:
        raise IntegrityError(f"model {record['version']}: {CARD} does not match its recorded SHA-256")
    return json.loads(data)


def verify(record: dict, folder: Path) -> None:
    for name, field in ((ONNX, "onnx_sha256"), (CARD, "card_sha256")):
        if not record.get(field) or sha256(folder / name) != record[field]:
            raise IntegrityError(f"model {record['version']}: {name} does not match its recorded SHA-256")


def fetch_checkpoint(record: dict, dest: Path) -> Path | None:
    """The version's checkpoint at `dest`, or None when it has none, or none with a recorded SHA-256 (registered
    before digests were kept) to check it against: the caller loads it with `checkpoint_sha256`."""
    if not (record.get("checkpoint_uri") and record.get("checkpoint_sha256")):
        return None
    store.blob_at(record["checkpoint_uri"]).download_to_filename(str(dest))
    return dest


def set_current(record: dict, expected: str | None) -> dict:
    """Make `record` current if the current version is still `expected` (None: no current yet)."""
    old, generation = read_pointer()
    if (old or {}).get("version") != expected:
        raise RuntimeError(f"the current model changed to {(old or {}).get('version')} during the gate")
    previous = {k: old.get(k) for k in RECORD_FIELDS} if old else None
    history = [*(old or {}).get("history", []), previous][-HISTORY_KEPT:] if previous else []
    doc = {**{k: record.get(k) for k in RECORD_FIELDS}, "promoted_at": datetime.now(UTC).isoformat(),
           "previous": previous, "history": history}
    write_pointer(doc, generation)
    return doc


def rollback() -> dict:
    """The previous version becomes current again; the one rolled back stays in the bucket, unserved."""
    old, generation = read_pointer()
    history = (old or {}).get("history", [])
    if not history:
        raise RuntimeError("no previous model version to roll back to")
    restored, history = history[-1], history[:-1]
    doc = {**restored, "promoted_at": datetime.now(UTC).isoformat(), "rolled_back_from": old["version"],
           "previous": history[-1] if history else None, "history": history}
    write_pointer(doc, generation)
    return doc


def record_decision(id_: str, decision: dict) -> None:
    """Kept for $DEEPSKIN_RECORD_RETENTION_DAYS: a rollback's note names its operator."""
    decision_doc(id_).set({**decision, "decided_at": firestore.SERVER_TIMESTAMP,
                           **store.lifecycle_fields(days=settings().record_retention_days)})


def decisions(limit: int = 5) -> list[dict]:
    query = (store.firestore_client().collection("models").document("decisions").collection("jobs")
             .order_by("decided_at", direction=firestore.Query.DESCENDING).limit(limit))
    return [{"id": s.id, **s.to_dict()} for s in query.stream()]
