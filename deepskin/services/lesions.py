"""A followed spot: one lesion's results over time, kept with the owner's consent for the time they chose.

    lesions/{id}   owner_token_sha256 (the lesion's capability token, hashed), months, days, started_at,
                   created_at, expire_at (the Firestore TTL field: started_at + days), result_ids

Following a result, or adding a later one, ties the result to the lesion (`lesion_id` on its document) and keeps it
as long as the lesion: the result document and its reports get the lesion's expire_at, and the photo moves from
the uploads bucket (deleted after the retention period) to `lesions/<days>d/<lesion>/<result>` in the results
bucket, with custom_time = started_at: infra/storage.tf deletes each `lesions/<days>d/` object that many days after
its custom time, so a photo added late still goes when the lesion does. The heatmap keeps its own 30 days.

Adding is idempotent (result_ids is a set, written with ArrayUnion; moving the photo again is a no-op), so a
retried or duplicated request lists the photo once. Deleting the lesion erases every result in it with
everything derived from it (store.delete_result), any photo copy a crashed move left, then the lesion itself.
"""

from __future__ import annotations

import hmac
import random
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta

from google.api_core.exceptions import Aborted, FailedPrecondition, NotFound, PreconditionFailed
from google.cloud import firestore

from deepskin.core import follow, spot
from deepskin.core.patient import QUESTIONS
from deepskin.core.refused import Refused
from deepskin.services import results, store
from deepskin.services.config import settings

PHOTOS_PREFIX = "lesions/"
ATTEMPTS = 5
NOT_FOUND = Refused(404, "not_found")
SAME_SPOT_NOTE = ("A hint, not a check: it compares the photos' framing, brightness pattern and colours, not the "
                  "spot itself. Photos of one spot taken differently can fail it, and two spots photographed alike "
                  "can pass it.")


def lesion_doc(id_: str) -> firestore.DocumentReference:
    return store.firestore_client().collection(store.LESIONS).document(id_)


def owned_lesion(id_: str, token: str | None) -> dict | None:
    """The lesion's document if `token` is its owner's; None otherwise, whether or not it exists."""
    snapshot = lesion_doc(id_).get()
    owner = (snapshot.to_dict() or {}).get("owner_token_sha256") if snapshot.exists else None
    if not token or not owner or not hmac.compare_digest(owner, results.token_sha256(token)):
        return None
    return snapshot.to_dict()


def start(result_id: str, result_token: str | None, consent: object, months: object) -> tuple[str, str, dict]:
    """Follow the owner's result: (lesion id, the lesion's capability token, its history)."""
    days = follow.days_consented(consent, months)
    owned_assessed(result_id, result_token)
    id_, token = uuid.uuid4().hex, secrets.token_urlsafe(24)
    started = datetime.now(UTC)
    lesion = {"owner_token_sha256": results.token_sha256(token), "months": months, "days": days,
              "started_at": started, "created_at": firestore.SERVER_TIMESTAMP,
              "expire_at": started + timedelta(days=days), "result_ids": [result_id]}
    if not tie(result_id, id_, lesion["expire_at"], lesion):
        raise Refused(409, "already_followed", "This result is already in a followed spot's history.")
    keep(result_id, id_, lesion)
    return id_, token, history(id_, lesion_doc(id_).get().to_dict())


def add(id_: str, lesion: dict, result_id: str, result_token: str | None) -> dict:
    """Add the owner's later result to the owned lesion (owned_lesion); again, or concurrently, it is listed once."""
    result = owned_assessed(result_id, result_token)
    listed = result.get("lesion_id") == id_ and result_id in lesion.get("result_ids", [])  # a retry or duplicate
    if not listed:
        # Listed first (a server-side set union, no read): a lesion deleted meanwhile refuses it here.
        try:
            lesion_doc(id_).update({"result_ids": firestore.ArrayUnion([result_id])})
        except NotFound:
            raise NOT_FOUND from None
        if not tie(result_id, id_, lesion["expire_at"]):
            lesion_doc(id_).update({"result_ids": firestore.ArrayRemove([result_id])})
            raise Refused(409, "in_another_history", "This result is already in the history of another spot.")
    keep(result_id, id_, lesion)
    return history(id_, lesion_doc(id_).get().to_dict())


def owned_assessed(result_id: str, token: str | None) -> dict:
    result = results.owned_result(result_id, token)
    if result is None:
        raise Refused(404, "unknown_result", "No such result for this token.")
    if result.get("status") != "done":
        raise Refused(409, "not_assessed", "Only an assessed photo can join a spot's history.")
    return result


def tie(result_id: str, lesion_id: str, expire_at: datetime, new_lesion: dict | None = None) -> bool:
    """The result names the lesion and expires with it (and the new lesion, if any, is created with it, in one
    batch); False when the result belongs to another lesion.

    Optimistic, with no transaction: the write holds only if the result is unchanged since it was read, and is
    read again otherwise. Concurrent adds of one result would otherwise wait on each other's locks (a transaction
    reads before it writes) until Firestore aborts them all."""
    db = store.firestore_client()
    for _ in range(ATTEMPTS):
        snapshot = store.prediction(result_id).get()
        result = snapshot.to_dict() or {}
        if result.get("lesion_id", lesion_id) != lesion_id:
            return False
        if new_lesion is None and result.get("lesion_id") == lesion_id and result.get("expire_at") == expire_at:
            return True  # tied already: a retry or a duplicate
        batch = db.batch()
        if new_lesion is not None:
            batch.create(lesion_doc(lesion_id), new_lesion)
        batch.update(snapshot.reference, {"lesion_id": lesion_id, "expire_at": expire_at},
                     option=db.write_option(last_update_time=snapshot.update_time))
        try:
            batch.commit()
            return True
        except FailedPrecondition:
            time.sleep(random.uniform(0, 0.05))  # changed meanwhile: read again, apart from the other writer  # nosec B311 jitter, not a secret
    raise Aborted(f"result {result_id} kept changing while it was added to a lesion")


def keep(result_id: str, lesion_id: str, lesion: dict) -> None:
    """Keep what the result's history needs as long as the lesion: its reports, and its photo (moved, with its
    fingerprint for the same-spot hint). Each step can be repeated: a retry finishes what a crash left."""
    reports = store.firestore_client().collection(store.FEEDBACK).where(
        filter=firestore.FieldFilter("prediction_id", "==", result_id)).stream()
    for report in reports:
        report.reference.update({"expire_at": lesion["expire_at"]})
    result = store.get_result(result_id) or {}
    upload = result.get("upload")
    if upload and not upload["name"].startswith(PHOTOS_PREFIX):
        move_photo(result_id, lesion_id, lesion, upload)
    elif result.get("upload_before_follow"):  # moved, but the original outlived a crash
        before = result["upload_before_follow"]
        store.delete_blob(store.storage_client().bucket(before["bucket"]).blob(before["name"]))


def move_photo(result_id: str, lesion_id: str, lesion: dict, upload: dict) -> None:
    """Copy (once: only the first of concurrent adds creates it), then point the result at the copy, then delete
    the original: a crash leaves at most a second copy that a retry, the lesion's delete or the lifecycle rules
    remove."""
    gcs = store.storage_client()
    source = gcs.bucket(upload["bucket"]).get_blob(upload["name"], generation=int(upload["generation"]))
    copy = gcs.bucket(settings().results_bucket).blob(f"{PHOTOS_PREFIX}{lesion['days']}d/{lesion_id}/{result_id}")
    copy.custom_time = lesion["started_at"]  # set in the upload request: the lifecycle rule counts from it
    try:
        data = source.download_as_bytes() if source else b""
        if not data:  # deleted meanwhile: the history shows the result without its photo
            return
        copy.upload_from_string(data, content_type=source.content_type, if_generation_match=0)
    except (NotFound, PreconditionFailed):  # a concurrent add of the same result moved it first
        return
    moved = {"bucket": copy.bucket.name, "name": copy.name, "generation": str(copy.generation)}
    fields = {"upload": moved, "upload_before_follow": upload, "spot": spot.fingerprint(data)}
    store.prediction(result_id).update(fields)
    store.delete_blob(source)


def history(id_: str, lesion: dict) -> dict:
    """What the owner sees: each photo's date, band and reports, oldest first; how the band moved; whether
    consecutive photos look alike; the retention and a suggested reminder day."""
    docs = {rid: doc for rid in lesion.get("result_ids", []) if (doc := store.get_result(rid))}
    ordered = sorted(docs, key=lambda rid: docs[rid].get("created_at") or datetime.min.replace(tzinfo=UTC))
    entries = [entry(rid, docs[rid]) for rid in ordered]
    changes = follow.band_changes(entries)
    for change in changes:
        a, b = docs[change["from"]].get("spot"), docs[change["to"]].get("spot")
        change["looks_alike"] = spot.looks_same(a, b) if a and b else None
    expires = lesion["expire_at"]
    latest = max((docs[rid]["created_at"] for rid in ordered if docs[rid].get("created_at")), default=expires)
    remind_on = follow.suggested_reminder(latest.date(), expires.date(), datetime.now(UTC).date())
    return results.jsonable({"id": id_, "months": lesion["months"], "started_at": lesion["started_at"],
                             "expire_at": expires, "entries": entries, "changes": changes,
                             "moved_up": any(c["moved_up"] for c in changes), "same_spot_note": SAME_SPOT_NOTE,
                             "same_spot_threshold": spot.SAME_SPOT_BELOW,
                             "suggested_reminder": remind_on.isoformat() if remind_on else None})


def entry(result_id: str, doc: dict) -> dict:
    reported = store.firestore_client().collection(store.FEEDBACK).where(
        filter=firestore.FieldFilter("prediction_id", "==", result_id)).stream()
    return {"result_id": result_id, **{k: doc.get(k) for k in ("created_at", "status", "risk", "malignant_probability",
                                                                "top_class", "caveat_text", "model_version")},
            "has_photo": bool(doc.get("upload")),
            # What the person said with the photo (the questions about the spot) and said of it afterwards.
            "answers": {q: a for q, a in (doc.get("patient") or {}).items() if q in QUESTIONS},
            "reported": [{k: r.get(k) for k in ("label", "comment", "created_at")}
                         for r in (s.to_dict() for s in reported) if r.get("role") == "user"]}


def photo(lesion: dict, result_id: str) -> tuple[bytes, str]:
    """The kept photo of one result in the lesion (already stripped of its metadata when it was uploaded)."""
    upload = (store.get_result(result_id) or {}).get("upload") if result_id in lesion.get("result_ids", []) else None
    if not upload:
        raise NOT_FOUND
    blob = store.storage_client().bucket(upload["bucket"]).get_blob(upload["name"])
    if blob is None:
        raise NOT_FOUND
    try:
        return blob.download_as_bytes(), blob.content_type or "application/octet-stream"
    except NotFound:
        raise NOT_FOUND from None


def reminder(id_: str, lesion: dict, day: str | None) -> str:
    """The calendar file for `day` (YYYY-MM-DD; default: the suggested one), a day while the history is kept."""
    expires = lesion["expire_at"].date()
    suggested = history(id_, lesion)["suggested_reminder"]
    try:
        chosen = datetime.strptime(day or suggested or "", "%Y-%m-%d").date()
    except ValueError:
        raise Refused(400, "invalid_date", "Give the day as YYYY-MM-DD.") from None
    if not datetime.now(UTC).date() < chosen < expires:
        raise Refused(400, "invalid_date", f"Choose a day after today and before {expires.isoformat()}, when this "
                                           "spot's history is deleted.")
    return follow.reminder_ics(id_, chosen, expires)


def delete(id_: str) -> dict[str, list[str]]:
    """Erase the lesion in one action: every result in it with its photos, heatmap and reports (wherever they
    are copied), then the lesion. A result added meanwhile is erased in the next round."""
    objects, documents = [], []
    while True:
        snapshot = lesion_doc(id_).get()
        if not snapshot.exists:
            return {"objects": objects, "documents": documents}
        lesion = snapshot.to_dict()
        for result_id in lesion.get("result_ids", []):
            # Another spot's result, listed for a moment by an add that was refused (`add`), is not this one's.
            if (store.get_result(result_id) or {}).get("lesion_id", id_) == id_:
                erased = store.delete_result(result_id)
                objects += erased["objects"]
                documents += erased["documents"]
            # Unlisted here whatever happened to it, so that the round ends (delete_result unlists it only from
            # the spot it names).
            lesion_doc(id_).update({"result_ids": firestore.ArrayRemove([result_id])})
        # A photo copied by a move that crashed before its result named it.
        prefix = f"{PHOTOS_PREFIX}{lesion['days']}d/{id_}/"
        for blob in store.storage_client().list_blobs(settings().results_bucket, prefix=prefix):
            if (path := store.delete_blob(blob)) is not None:
                objects.append(path)
        if delete_if_empty(store.firestore_client().transaction(), lesion_doc(id_)):
            return {"objects": objects, "documents": [*documents, f"{store.LESIONS}/{id_}"]}


@firestore.transactional
def delete_if_empty(transaction: firestore.Transaction, ref: firestore.DocumentReference) -> bool:
    snapshot = ref.get(transaction=transaction)
    if snapshot.exists and snapshot.to_dict().get("result_ids"):
        return False
    if snapshot.exists:
        transaction.delete(ref)
    return True
