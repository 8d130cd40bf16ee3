"""Thin wrappers over Firestore and Cloud Storage for prediction results.

Clients are created lazily, once per process (a function instance serves many requests). Transient Google
errors (ServiceUnavailable, DeadlineExceeded, InternalServerError, ConnectionError) are not caught here:
they propagate so that the platform retries the event.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.api_core.exceptions import AlreadyExists, NotFound
from google.cloud import firestore, storage

from deepskin.services.config import settings

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
LESIONS = "lesions"  # followed spots (deepskin.services.lesions)
HEATMAPS_PREFIX = "heatmaps/"
# A claim older than this belongs to an attempt that died (the functions time out at 60 s).
STALE_CLAIM = timedelta(seconds=120)
# A claim nobody has taken over for this long is abandoned (deepskin.loop.sweeper): far past STALE_CLAIM, so
# that a storage event's redeliveries have had their chance to finish it.
ABANDONED_AFTER = timedelta(minutes=15)
ABANDONED = {"status": "failed", "reason": "abandoned",
             "message": "The assessment did not finish. Please send the photo again."}

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


def lifecycle_fields(expire_at: datetime | None = None, days: int | None = None) -> dict[str, Any]:
    """Every document carries its creation time and the Firestore TTL field that deletes it (infra/firestore.tf):
    `expire_at` when it must go with another document (a report with its prediction), else `days` from now
    (by default the retention period of health data)."""
    days = settings().retention_days if days is None else days
    expire_at = expire_at or datetime.now(UTC) + timedelta(days=days)
    return {"created_at": firestore.SERVER_TIMESTAMP, "expire_at": expire_at}


def prediction(id_: str) -> firestore.DocumentReference:
    return firestore_client().collection(PREDICTIONS).document(id_)


class ClaimLost(Exception):
    """The claim an attempt held is gone: its result was deleted, swept as abandoned, or taken over."""


def claim(id_: str, upload_info: dict | None, owner_token_sha256: str | None = None) -> str | None:
    """Create the `pending` document if absent, or take over a stale one; the claim's id when this caller now
    owns the work (finish and release need it), None when another attempt does or the result is final.
    The owner, when known, can read and delete the result while it is pending. An HTTP photo that was not
    kept (deepskin.services.predict_service) has no upload."""
    claim_id = uuid.uuid4().hex
    owner = {"owner_token_sha256": owner_token_sha256} if owner_token_sha256 else {}
    upload = {"upload": upload_info} if upload_info else {}
    try:
        prediction(id_).create({"status": "pending", **upload, "claim_id": claim_id, **owner,
                                "claimed_at": firestore.SERVER_TIMESTAMP, **lifecycle_fields()})
        return claim_id
    except AlreadyExists:
        return claim_id if reclaim_stale(firestore_client().transaction(), prediction(id_), claim_id) else None


@firestore.transactional
def reclaim_stale(transaction: firestore.Transaction, doc: firestore.DocumentReference, claim_id: str) -> bool:
    snapshot = doc.get(transaction=transaction)
    data = snapshot.to_dict() or {}
    claimed_at = data.get("claimed_at")
    if data.get("status") != "pending" or claimed_at is None:
        return False
    if datetime.now(UTC) - claimed_at < STALE_CLAIM:
        return False
    transaction.update(doc, {"claimed_at": firestore.SERVER_TIMESTAMP, "claim_id": claim_id})
    return True


def release(id_: str, claim_id: str) -> None:
    """Give a claim back (delete it while still this attempt's) so that the platform's retry can do the work."""
    release_claimed(firestore_client().transaction(), prediction(id_), claim_id)


@firestore.transactional
def release_claimed(transaction: firestore.Transaction, doc: firestore.DocumentReference, claim_id: str) -> None:
    if holds_claim(doc.get(transaction=transaction), claim_id):
        transaction.delete(doc)


def holds_claim(snapshot: firestore.DocumentSnapshot, claim_id: str) -> bool:
    data = snapshot.to_dict() or {}
    return data.get("status") == "pending" and data.get("claim_id") == claim_id


def finish(id_: str, claim_id: str, fields: dict) -> None:
    """Write the outcome over this attempt's claim, keeping its created_at and expire_at; ClaimLost when the
    claim is no longer held, so that a result deleted meanwhile is never recreated."""
    if not finish_claimed(firestore_client().transaction(), prediction(id_), claim_id, fields):
        raise ClaimLost(id_)


@firestore.transactional
def finish_claimed(transaction: firestore.Transaction, doc: firestore.DocumentReference, claim_id: str,
                   fields: dict) -> bool:
    if not holds_claim(doc.get(transaction=transaction), claim_id):
        return False
    transaction.update(doc, {**fields, "finished_at": firestore.SERVER_TIMESTAMP})
    return True


def sweep_abandoned(older_than: timedelta = ABANDONED_AFTER) -> list[str]:
    """Turn every claim untouched for `older_than` into a final `failed` result (an HTTP request that died
    has no retry to finish it); the ids swept. A claim taken over meanwhile is left to its new holder."""
    cutoff = datetime.now(UTC) - older_than
    stale = (firestore_client().collection(PREDICTIONS)
             .where(filter=firestore.FieldFilter("status", "==", "pending"))
             .where(filter=firestore.FieldFilter("claimed_at", "<", cutoff)).stream())
    return [snapshot.id for snapshot in stale
            if finish_claimed(firestore_client().transaction(), snapshot.reference,
                              (snapshot.to_dict() or {}).get("claim_id"), ABANDONED)]


def fail_unfinished(id_: str, upload_info: dict, fields: dict) -> bool:
    """Give an upload whose every attempt failed a final result: create it, or end its pending claim; a final
    result is kept. True when this wrote one."""
    return fail_unless_final(firestore_client().transaction(), prediction(id_), upload_info, fields)


@firestore.transactional
def fail_unless_final(transaction: firestore.Transaction, doc: firestore.DocumentReference, upload_info: dict,
                      fields: dict) -> bool:
    snapshot = doc.get(transaction=transaction)
    if snapshot.exists and snapshot.get("status") != "pending":
        return False
    final = {**fields, "upload": upload_info, "finished_at": firestore.SERVER_TIMESTAMP}
    if snapshot.exists:
        transaction.update(doc, final)
    else:
        transaction.create(doc, {**final, **lifecycle_fields()})
    return True


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
    """Erase everything derived from one upload: the image (where it was uploaded, and its copy once followed),
    the heatmap, the result and its feedback; a followed spot's history no longer lists it. Resumable: the
    objects go first, then the documents that name them, the result (which proves ownership) last, so that a
    delete that fails at any step finds on retry what is left and erases it."""
    db = firestore_client()
    result = get_result(id_) or {}
    blobs = [storage_client().bucket(upload["bucket"]).blob(upload["name"])
             for upload in (result.get("upload"), result.get("upload_before_follow")) if upload]
    blobs.append(heatmap_blob(id_))
    feedback = list(db.collection(FEEDBACK).where(filter=firestore.FieldFilter("prediction_id", "==", id_)).stream())
    # A clinician-labelled upload was also copied to the training bucket (a copy per label the clinician gave):
    # the owner's delete erases them too.
    reports = [snapshot.to_dict() for snapshot in feedback]
    copies = {uri for report in reports for uri in [report.get("training_image"), *report.get("training_images", [])]}
    blobs += [blob_at(uri) for uri in sorted(copies - {None})]
    objects = [path for path in map(delete_blob, blobs) if path]
    for snapshot in feedback:
        snapshot.reference.delete()
    documents = [f"{FEEDBACK}/{snapshot.id}" for snapshot in feedback]
    if result.get("lesion_id"):
        try:
            db.collection(LESIONS).document(result["lesion_id"]).update({"result_ids": firestore.ArrayRemove([id_])})
        except NotFound:
            pass  # the spot's history is gone already
    if result:
        prediction(id_).delete()
        documents.insert(0, f"{PREDICTIONS}/{id_}")
    return {"objects": objects, "documents": documents}
