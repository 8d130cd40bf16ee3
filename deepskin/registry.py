"""The model registry: versioned ONNX + card in the models bucket, the current version in Firestore.

  gs://<models bucket>/models/<version>/deepskin.onnx, deepskin.card.json, and checkpoint.pt when the
      version was trained by training.retrain (the next retrain fine-tunes from those weights)
  models/current                {version, onnx_uri, card_uri, checkpoint_uri, promoted_at, previous, history}
  models/decisions/jobs/{id}    every promotion-gate decision, promoted or refused (training.promote)

Serving asks `refreshed()` from deepskin.model.default_model, so a promotion or a rollback reaches every
instance within $DEEPSKIN_MODEL_CHECK_SECONDS without a redeploy. Without the cloud extras installed
(the CLI, batch scoring) there is no registry and deepskin.model serves its file as before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from deepskin.config import settings
from deepskin.model import Model, card_path

try:
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import firestore

    from deepskin import store
except ImportError:  # the serving core without the cloud extras
    firestore = None

log = logging.getLogger(__name__)

ONNX, CARD, CHECKPOINT = "deepskin.onnx", "deepskin.card.json", "checkpoint.pt"
RECORD_FIELDS = ("version", "onnx_uri", "card_uri", "checkpoint_uri")
HISTORY_KEPT = 20
CACHE = Path(tempfile.gettempdir()) / "deepskin-models"
_next_check = 0.0


def configured() -> bool:
    """A registry exists where the emulators or Google Cloud (K_SERVICE: Cloud Run functions) are in use."""
    if firestore is None or os.environ.get("DEEPSKIN_MODEL_REGISTRY", "").lower() == "off":
        return False
    return bool(os.environ.get("FIRESTORE_EMULATOR_HOST") or os.environ.get("K_SERVICE"))


def refreshed(model: Model) -> Model:
    """The registry's current model if it differs from `model`; `model` itself between checks or on any error.

    The caller holds deepskin.model's lock, so one request per instance checks and loads.
    """
    global _next_check  # pylint: disable=global-statement
    now = time.monotonic()
    if not configured() or now < _next_check:
        return model
    _next_check = now + float(os.environ.get("DEEPSKIN_MODEL_CHECK_SECONDS", "60"))
    try:
        record = current()
        if record is None or record["version"] == model.version:
            return model
        loaded = Model(fetch(record))
    except Exception:  # pylint: disable=broad-except
        log.exception("model registry check failed: still serving %s", model.version)
        return model
    log.info("serving model %s from the registry (was %s)", loaded.version, model.version)
    return loaded


def current_doc():
    return store.firestore_client().collection("models").document("current")


def decision_doc(id_: str):
    return store.firestore_client().collection("models").document("decisions").collection("jobs").document(id_)


def current() -> dict | None:
    snapshot = current_doc().get()
    return snapshot.to_dict() if snapshot.exists else None


def upload(onnx_path: Path, checkpoint: Path | None = None) -> dict:
    """Store a model version (ONNX + its card, and its checkpoint); returns its record. Idempotent per version."""
    version = str(json.loads(card_path(onnx_path).read_text())["version"])
    bucket = store.storage_client().bucket(settings().models_bucket)
    files = {"onnx_uri": (onnx_path, ONNX), "card_uri": (card_path(onnx_path), CARD)}
    if checkpoint is not None:
        files["checkpoint_uri"] = (checkpoint, CHECKPOINT)
    record = {"version": version, "onnx_uri": None, "card_uri": None, "checkpoint_uri": None}
    for field, (path, name) in files.items():
        target = bucket.blob(f"models/{version}/{name}")
        try:  # a version is immutable: never overwrite what may already be served
            target.upload_from_filename(str(path), if_generation_match=0)
        except PreconditionFailed:
            pass
        record[field] = f"gs://{bucket.name}/{target.name}"
    return record


def fetch(record: dict, root: Path = CACHE) -> Path:
    """The version's ONNX (card beside it) under `root`, downloaded once; returns the ONNX path."""
    final = root / record["version"]
    if not (final / ONNX).exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root))  # whole or nothing: a crash leaves no half model behind
        store.blob_at(record["card_uri"]).download_to_filename(str(staging / CARD))
        store.blob_at(record["onnx_uri"]).download_to_filename(str(staging / ONNX))
        try:
            staging.rename(final)
        except OSError:  # another request or process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return final / ONNX


def fetch_checkpoint(record: dict, dest: Path) -> Path | None:
    if not record.get("checkpoint_uri"):
        return None
    store.blob_at(record["checkpoint_uri"]).download_to_filename(str(dest))
    return dest


def set_current(record: dict, expected: str | None) -> dict:
    """Make `record` current if the current version is still `expected` (None: no current yet)."""
    @firestore.transactional
    def swap(transaction: firestore.Transaction) -> dict:
        snapshot = current_doc().get(transaction=transaction)
        old = snapshot.to_dict() if snapshot.exists else None
        if (old or {}).get("version") != expected:
            raise RuntimeError(f"the current model changed to {(old or {}).get('version')} during the gate")
        previous = {k: old.get(k) for k in RECORD_FIELDS} if old else None
        history = [*(old or {}).get("history", []), previous][-HISTORY_KEPT:] if previous else []
        doc = {**{k: record.get(k) for k in RECORD_FIELDS}, "promoted_at": firestore.SERVER_TIMESTAMP,
               "previous": previous, "history": history}
        transaction.set(current_doc(), doc)
        return doc

    return swap(store.firestore_client().transaction())


def rollback() -> dict:
    """The previous version becomes current again; the one rolled back stays in the bucket, unserved."""
    @firestore.transactional
    def back(transaction: firestore.Transaction) -> dict:
        snapshot = current_doc().get(transaction=transaction)
        history = (snapshot.to_dict() or {}).get("history", []) if snapshot.exists else []
        if not history:
            raise RuntimeError("no previous model version to roll back to")
        restored, history = history[-1], history[:-1]
        doc = {**restored, "promoted_at": firestore.SERVER_TIMESTAMP, "rolled_back_from": snapshot.get("version"),
               "previous": history[-1] if history else None, "history": history}
        transaction.set(current_doc(), doc)
        return doc

    return back(store.firestore_client().transaction())


def record_decision(id_: str, decision: dict) -> None:
    decision_doc(id_).set({**decision, "decided_at": firestore.SERVER_TIMESTAMP})


def decisions(limit: int = 5) -> list[dict]:
    query = (store.firestore_client().collection("models").document("decisions").collection("jobs")
             .order_by("decided_at", direction=firestore.Query.DESCENDING).limit(limit))
    return [{"id": s.id, **s.to_dict()} for s in query.stream()]
