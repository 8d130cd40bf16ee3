"""The predict path, shared by the storage-event and HTTP entry points: claim, assess, store, answer.

A result is keyed by the uploaded object's version (`store.result_id`), so the HTTP path and a retried or
duplicated storage event agree on one document, and only the caller that claims it does the work.
Image bytes and their metadata (EXIF) are never logged: only result ids, statuses and reasons.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from google.api_core.exceptions import NotFound

from deepskin.core import checks
from deepskin.core.metadata import strip_metadata
from deepskin.core.patient import FIELDS, UNKNOWN, InvalidPatientInfo, PatientInfo
from deepskin.core.pipeline import assess
from deepskin.services import store
from deepskin.services.config import settings
from deepskin.services.results import TOKEN_KEY, patient_key, token_sha256
from deepskin.services.served_model import served_model

log = logging.getLogger(__name__)

SOURCE_KEY = "deepskin-source"  # object metadata: "http" when the HTTP path already scored the object
# How long a duplicate delivery waits for the attempt holding the claim before failing to be redelivered.
CLAIM_WAIT_S = 10.0
CLAIM_POLL_S = 0.5  # each poll is a create that fails and a transaction: two Firestore calls
INTERNAL_ERROR = {"status": "failed", "reason": "internal_error",
                  "message": "The image could not be assessed because of an internal error. Please try again later."}
RETRIES_EXHAUSTED = {"status": "failed", "reason": "retries_exhausted",
                     "message": "The image could not be assessed after repeated attempts. Please send it again."}


class ClaimHeld(Exception):
    """Another attempt holds the claim and has not finished: this delivery must not be acknowledged yet."""


@dataclass
class Outcome:
    id: str
    fields: dict
    heatmap_png: bytes | None = None


def handle_upload(bucket: str, name: str, generation: int | str, size: int | str,
                  metadata: dict[str, str] | None) -> Outcome | None:
    """A finalized object in the uploads bucket -> its stored result; None when there is nothing to do."""
    metadata = metadata or {}
    if metadata.get(SOURCE_KEY) == "http" or bucket != settings().uploads_bucket:
        return None
    upload = {"bucket": bucket, "name": name, "generation": str(generation)}
    id_ = store.result_id(bucket, name, generation)
    extra = event_fields(upload, metadata)
    claim_id = claim_or_wait(id_, upload, extra.get("owner_token_sha256"))
    if claim_id is None:
        return None
    with released_on_error(id_, claim_id), ignored_if_claim_lost(id_):
        # The event states the size: refuse before downloading, so a huge object never reaches memory.
        if int(size) > checks.MAX_BYTES:
            refusal = checks.reject("too_large", f"The file is {int(size) / 1e6:.1f} MB; the limit is "
                                                 f"{checks.MAX_BYTES / 1e6:.0f} MB.")
            return record(id_, claim_id, {"status": refusal.status, "reason": refusal.reason,
                                          "message": refusal.message}, extra)
        try:
            patient = PatientInfo.parse(**{field: metadata.get(patient_key(field)) for field in FIELDS})
        except InvalidPatientInfo as exc:
            return record(id_, claim_id, {"status": "rejected", "reason": "invalid_patient_info",
                                          "message": str(exc)}, extra)
        try:
            data = store.read_upload(bucket, name, generation)
        except NotFound:
            return record(id_, claim_id, {"status": "rejected", "reason": "upload_missing",
                                          "message": "The uploaded file was deleted before it could be assessed."},
                          extra)
        return assess_and_record(id_, claim_id, data, extra, patient)
    return None


def event_fields(upload: dict, metadata: dict[str, str]) -> dict:
    """What an event-path result records besides the assessment: where the upload is, and its owner."""
    extra = {"upload": upload, "source": "event"}
    if TOKEN_KEY in metadata:
        extra["owner_token_sha256"] = metadata[TOKEN_KEY]
    return extra


def handle_exhausted(bucket: str, name: str, generation: int | str, metadata: dict[str, str] | None) -> bool:
    """The storage trigger's dead letter: an upload whose every delivery failed gets a final `failed` result
    (kept if it already has one), so that its owner learns of it instead of waiting for ever."""
    upload = {"bucket": bucket, "name": name, "generation": str(generation)}
    id_ = store.result_id(bucket, name, generation)
    written = store.fail_unfinished(id_, upload, {**RETRIES_EXHAUSTED, **event_fields(upload, metadata or {})})
    log.warning("result %s: deliveries exhausted%s", id_, "" if written else ", but it already had a final result")
    return written


def claim_or_wait(id_: str, upload: dict, owner_token_sha256: str | None) -> str | None:
    """This attempt's claim on the result; None once another attempt has finished it. While another attempt
    holds the claim, wait up to CLAIM_WAIT_S for it to finish, or to turn stale (store.STALE_CLAIM) and be
    taken over here; raise ClaimHeld after that.

    Acknowledging a duplicate while the holder works would lose the upload if the holder then dies (its
    claim would stay pending with no event left to retry it). Failing instead makes Pub/Sub redeliver.
    """
    deadline = time.monotonic() + CLAIM_WAIT_S
    while (claim_id := store.claim(id_, upload, owner_token_sha256)) is None:
        if (store.get_result(id_) or {}).get("status") != "pending":
            log.info("result %s already claimed and finished: duplicate or retried event", id_)
            return None
        if time.monotonic() > deadline:
            raise ClaimHeld(f"result {id_} is still pending in another attempt")
        time.sleep(CLAIM_POLL_S)
    return claim_id


def predict_bytes(data: bytes, content_type: str, token: str, patient: PatientInfo = UNKNOWN) -> Outcome:
    """An image sent over HTTP: score it, then keep it as an upload (so delete and retention treat it alike)
    only when it was answered.

    A photo the checks (or the scope gate) refuse is never stored: only an answered photo can become training
    data (deepskin.loop.feedback), and a rejected POST must not leave up to 20 MB in the bucket for the
    retention period. Its result document, which the caller's token reads and deletes, is kept either way.
    What is stored is the image without its metadata (EXIF, GPS, comments): the HTTP caller sent it to be
    assessed, not archived. The returned fields are the stored document's, as GET /results/<id> shows them.
    """
    owner = token_sha256(token)
    fields, heatmap_png = assessed(data, patient)
    name = f"http/{uuid.uuid4()}"
    upload = store.put_upload(name, strip_metadata(data), content_type, {SOURCE_KEY: "http", TOKEN_KEY: owner}) \
        if fields["status"] == "done" else None
    id_ = store.result_id(settings().uploads_bucket, name, upload["generation"] if upload else "not-kept")
    extra = {"source": "http", "owner_token_sha256": owner, **({"upload": upload} if upload else {})}
    try:
        claim_id = store.claim(id_, upload, owner)  # a fresh object name: nobody else can hold this claim
        with released_on_error(id_, claim_id):
            outcome = record_assessed(id_, claim_id, fields, heatmap_png, extra)
    except Exception:
        if upload:
            discard_upload(upload)
        raise
    outcome.fields = store.get_result(id_) or outcome.fields
    return outcome


def discard_upload(upload: dict) -> None:
    """Without a result the caller holds no token that could delete the image, so it is not kept."""
    try:
        store.delete_blob(store.blob_at(f"gs://{upload['bucket']}/{upload['name']}"))
    except Exception:  # pylint: disable=broad-except
        # Storage itself is failing: the uploads bucket's lifecycle rule deletes it after the retention period.
        log.warning("could not delete the unassessed upload %s", upload["name"], exc_info=True)


@contextmanager
def released_on_error(id_: str, claim_id: str) -> Iterator[None]:
    """On any error, give the claim back and re-raise, so that the platform's retry redoes the work."""
    try:
        yield
    except Exception:
        try:
            store.release(id_, claim_id)
        except Exception:  # pylint: disable=broad-except
            # Firestore itself is failing: the claim turns stale after store.STALE_CLAIM and is re-claimed.
            log.warning("could not release the claim on %s", id_, exc_info=True)
        raise


@contextmanager
def ignored_if_claim_lost(id_: str) -> Iterator[None]:
    """An event whose claim went meanwhile (result deleted, swept, or taken over) has nothing left to do."""
    try:
        yield
    except store.ClaimLost:
        log.info("result %s: the claim was lost before the result was written; nothing recorded", id_)


def assess_and_record(id_: str, claim_id: str, data: bytes, extra: dict, patient: PatientInfo = UNKNOWN) -> Outcome:
    fields, heatmap_png = assessed(data, patient)
    return record_assessed(id_, claim_id, fields, heatmap_png, extra)


def assessed(data: bytes, patient: PatientInfo) -> tuple[dict, bytes | None]:
    """The result fields of an assessment and its heatmap; an internal error's fields when assess has a bug."""
    # Outside the try below: a missing or corrupt model is the service's fault, not this upload's; it must
    # fail the request (claim released, event retried) rather than record a permanent failure.
    model = served_model()
    try:
        assessment = assess(data, model, patient)
    except Exception:  # pylint: disable=broad-except
        # A bug, not bad input (assess refuses bad input with a status): record it rather than crash-loop on
        # retries of the same bytes.
        log.exception("assess failed")
        return dict(INTERNAL_ERROR), None
    return assessment.fields(), assessment.heatmap_png


def record_assessed(id_: str, claim_id: str, fields: dict, heatmap_png: bytes | None, extra: dict) -> Outcome:
    if heatmap_png:
        fields["heatmap"] = store.save_heatmap(id_, heatmap_png)
    try:
        return record(id_, claim_id, fields, extra, heatmap_png)
    except store.ClaimLost:
        if store.get_result(id_) is None:  # deleted by its owner meanwhile: the heatmap must not outlive it
            store.delete_blob(store.heatmap_blob(id_))
        raise


def record(id_: str, claim_id: str, fields: dict, extra: dict, heatmap_png: bytes | None = None) -> Outcome:
    fields = {**fields, **extra}
    store.finish(id_, claim_id, fields)
    log.info("result %s: %s %s", id_, fields["status"], fields.get("reason") or fields.get("risk", ""))
    return Outcome(id_, fields, heatmap_png)
