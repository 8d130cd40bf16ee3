"""Thin wrappers over Firestore and Cloud Storage for prediction results.

Clients are created lazily, once per process (a function instance serves many requests). Transient Google
errors (ServiceUnavailable, DeadlineExceeded, InternalServerError, ConnectionError) are not caught here:
they propagate so that the platform retries the event.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.api_core.exceptions import AlreadyExists, NotFound
from google.cloud import firestore, storage

from deepskin.config import settings

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
HEATMAPS_PREFIX = "heatmaps/"
# A claim older than this belongs to an attempt that died (the functions time out at 60 s).
STALE_CLAIM = timedelta(seconds=120)

T = TypeVar("T")


def once(factory: Callable[[], T]) -> Callable[[], T]:
    """Call `factory` on first use only, thread-safely (requests of one instance may run concurrently)."""
    lock, made = threading.Lock(), []

    def get() -> T:
        with lock:
            if not made:
                made.append(factory())
            return made[0]

    return get


firestore_client = once(lambda: firestore.Client(project=settings().project))
storage_client = once(lambda: storage.Client(project=settings().project))


def result_id(bucket: str, name: str, generation: int | str) -> str:
    """Stable per object version, so a retried or duplicated event maps onto the same document."""
    return hashlib.sha256(f"{bucket}/{name}#{generation}".encode()).hexdigest()[:32]


def lifecycle_fields() -> dict[str, Any]:
    """Every document carries its creation time and the Firestore TTL field that deletes it."""
    now = datetime.now(UTC)
    return {"created_at": firestore.SERVER_TIMESTAMP, "expire_at": now + timedelta(days=settings().retention_days)}


def prediction(id_: str) -> firestore.DocumentReference:
    return firestore_client().collection(PREDICTIONS).document(id_)


def claim(id_: str, upload_info: dict) -> bool:
    """Create the `pending` document if absent; True when this caller owns the work."""
    try:
        prediction(id_).create({"status": "pending", "upload": upload_info, "claimed_at": firestore.SERVER_TIMESTAMP,
                                **lifecycle_fields()})
        return True
    except AlreadyExists:
        return reclaim_stale(firestore_client().transaction(), prediction(id_))


@firestore.transactional
def reclaim_stale(transaction: firestore.Transaction, doc: firestore.DocumentReference) -> bool:
    snapshot = doc.get(transaction=transaction)
    data = snapshot.to_dict() or {}
    claimed_at = data.get("claimed_at")
    if data.get("status") != "pending" or claimed_at is None:
        return False
    if datetime.now(UTC) - claimed_at < STALE_CLAIM:
        return False
    transaction.update(doc, {"claimed_at": firestore.SERVER_TIMESTAMP})
    return True


def release(id_: str) -> None:
    """Give a claim back (delete it while still pending) so that the platform's retry can do the work."""
    release_pending(firestore_client().transaction(), prediction(id_))


@firestore.transactional
def release_pending(transaction: firestore.Transaction, doc: firestore.DocumentReference) -> None:
    snapshot = doc.get(transaction=transaction)
    if snapshot.exists and snapshot.get("status") == "pending":
        transaction.delete(doc)


def finish(id_: str, fields: dict) -> None:
    """Write the outcome over the claim, keeping its created_at and expire_at."""
    prediction(id_).set({**fields, "finished_at": firestore.SERVER_TIMESTAMP}, merge=True)


def get_result(id_: str) -> dict | None:
    snapshot = prediction(id_).get()
    return snapshot.to_dict() if snapshot.exists else None


def heatmap_blob(id_: str) -> storage.Blob:
    return storage_client().bucket(settings().results_bucket).blob(f"{HEATMAPS_PREFIX}{id_}.png")


def save_heatmap(id_: str, png: bytes) -> str:
    blob = heatmap_blob(id_)
    blob.upload_from_string(png, content_type="image/png")
    return f"gs://{blob.bucket.name}/{blob.name}"


def read_heatmap(id_: str) -> bytes | None:
    try:
        return heatmap_blob(id_).download_as_bytes()
    except NotFound:
        return None


def put_upload(name: str, data: bytes, content_type: str, metadata: dict[str, str]) -> dict:
    """Store an upload; returns its {bucket, name, generation}, the identity a result id is derived from."""
    blob = storage_client().bucket(settings().uploads_bucket).blob(name)
    blob.metadata = metadata
    blob.upload_from_string(data, content_type=content_type)
    return {"bucket": blob.bucket.name, "name": blob.name, "generation": str(blob.generation)}


def read_upload(bucket: str, name: str, generation: int | str) -> bytes:
    """The exact object version the event announced; raises NotFound if it is gone."""
    return storage_client().bucket(bucket).blob(name, generation=int(generation)).download_as_bytes()


def delete_blob(blob: storage.Blob) -> str | None:
    try:
        blob.delete()
    except NotFound:
        return None
    return f"gs://{blob.bucket.name}/{blob.name}"


def blob_at(uri: str) -> storage.Blob:
    """gs://bucket/name -> Blob."""
    bucket, name = uri.removeprefix("gs://").split("/", 1)
    return storage_client().bucket(bucket).blob(name)


def delete_result(id_: str) -> dict[str, list[str]]:
    """Erase everything derived from one upload: the image, the heatmap, the result and its feedback."""
    db = firestore_client()
    result = get_result(id_) or {}
    blobs = [heatmap_blob(id_)]
    upload = result.get("upload")
    if upload:
        blobs.insert(0, storage_client().bucket(upload["bucket"]).blob(upload["name"]))
    feedback = list(db.collection(FEEDBACK).where(filter=firestore.FieldFilter("prediction_id", "==", id_)).stream())
    # A clinician-labelled upload was also copied to the training bucket: the owner's delete erases it too.
    blobs += [blob_at(uri) for uri in (s.to_dict().get("training_image") for s in feedback) if uri]
    objects = [path for path in map(delete_blob, blobs) if path]
    for snapshot in feedback:
        snapshot.reference.delete()
    documents = [f"{FEEDBACK}/{snapshot.id}" for snapshot in feedback]
    if result:
        prediction(id_).delete()
        documents.insert(0, f"{PREDICTIONS}/{id_}")
    return {"objects": objects, "documents": documents}
