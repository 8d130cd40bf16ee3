"""Feedback on a prediction: validate a report, check who may make it, store it once, publish it once.

Who may report:
- a user, on their own prediction only: the request carries the prediction's capability token
  (X-DeepSkin-Token), the same proof of ownership as GET /results/<id>;
- a clinician, on any prediction, with a verified identity (deepskin.services.identity); a clinician
  claim without one is refused.
Only a clinician's report is a training label; a user's is a signal (it is counted, never trained on).
A label counts once per (prediction, clinician): a clinician's reports on one prediction share one
document, so a retry (whatever its idempotency key) is the same report and a later label replaces the
earlier one; the ledger counts the document once, and retraining reads its latest label.
A clinician's label on an assessed image also copies that image into the training bucket as
`feedback/<report id>.<label>.<ext>` (the uploads bucket expires, and the training job may not read it): the
name holds the label, so that a report's label cannot be changed in Firestore, which every function may
write, without a copy that only this function can make (training.retrain checks it). A later label makes
another copy; the report lists them all (`training_images`) for the owner's delete. Every step
can be retried after a failure at any point: the copy's name is recorded on the report before the copy is
made (so an owner's delete that comes in between finds it), and the copy is created only if absent, which
is all this function may do there (infra/permissions.py: create under feedback/, never replace).
A user's report expires with its prediction (the same `expire_at`); a clinician's label, and its training copy,
are kept for the labelled retention ($DEEPSKIN_LABELLED_RETENTION_DAYS, the retention the product's consent
states; the uploads' by default), so that the feedback set can grow past the uploads' 30 days. The owner's
delete of the result removes both, while the result exists (after it expires the owner has nothing to name it
by). A report names its `group` (the followed spot, else the prediction), by which training.feedback_set holds
labels out; its training copy carries the same group in its metadata, where the job reads it (a group rewritten
in Firestore could move a label from the training side to the feedback test set). And a prediction takes at most
REPORTS_PER_PREDICTION reports of each role (counted on the prediction's document): past that, 429
too_many_reports, so that one token cannot fill Firestore and the ledger.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import firestore

from deepskin.core.metadata import strip_metadata
from deepskin.core.refused import Refused
from deepskin.core.report import SIGNAL, TRAINING_LABEL, Report, report_id
from deepskin.services import results, store
from deepskin.services.config import settings
from deepskin.services.identity import clinician_identity
from deepskin.services.pubsub import publish_message

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
OTHER_EXTENSION = "img"
TRAINING_PREFIX = "feedback/"
# Distinct reports a prediction takes from each role: a user may change their mind a few times; a clinician's
# reports on one prediction are one document each (a later label replaces the earlier), so this caps clinicians.
REPORTS_PER_PREDICTION = {"user": 3, "clinician": 10}


def submit(report: Report, token: str | None, headers: Any) -> dict:
    """Check the reporter, store the report once, publish it once; returns {report_id, counts_as}."""
    reporter = None
    if report.role == "clinician":
        reporter = clinician_identity(headers)
        if reporter is None:
            raise Refused(403, "clinician_identity_required", "A clinician report needs a verified clinician.")
        result = store.get_result(report.prediction_id)
    else:
        result = results.owned_result(report.prediction_id, token)
    if result is None:  # the same answer for a missing prediction and someone else's
        raise Refused(404, "unknown_prediction", "No such prediction for this token.")

    id_ = report_id(report, reporter)
    counts_as = TRAINING_LABEL if report.role == "clinician" else SIGNAL
    doc = store.firestore_client().collection(store.FEEDBACK).document(id_)
    fields = {**asdict(report), "counts_as": counts_as, "reporter": reporter, "published": False,
              "model_version": result.get("model_version"), "group": result.get("lesion_id") or report.prediction_id,
              **store.lifecycle_fields(report_expiry(result, counts_as))}
    fields.pop("idempotency_key")  # the id already encodes it; a client's key is not ours to keep
    stored = create_within_cap(store.firestore_client().transaction(), doc, store.prediction(report.prediction_id),
                               fields)
    if stored is None:
        stored = fields
    else:
        changed = (stored.get("label"), stored.get("role")) != (report.label, report.role)
        if changed and reporter is None:
            raise Refused(409, "idempotency_key_reused", "This idempotency_key was used for another report.")
        if changed:  # the clinician's later word replaces the earlier; published again so the change is seen
            replaced = {k: fields[k] for k in ("label", "histopathology", "comment", "model_version")}
            doc.update({**replaced, "published": False})
            stored = {**stored, **replaced, "published": False}
        if stored.get("published"):
            return {"report_id": id_, "counts_as": counts_as}
        # Otherwise the first attempt stored the report but died before publishing: finish its work.
    if counts_as == TRAINING_LABEL and result.get("status") == "done" and result.get("upload"):
        copy_for_training(doc, id_, report.label, result["upload"], fields["group"])
    publish(id_, report, counts_as)
    doc.update({"published": True})
    return {"report_id": id_, "counts_as": counts_as}


def report_expiry(result: dict, counts_as: str) -> datetime | None:
    """A signal expires with its prediction; a clinician's label is kept for the labelled retention (the
    consented one, DEEPSKIN_LABELLED_RETENTION_DAYS), or with its prediction when that is later (a followed spot)."""
    theirs, kept = result.get("expire_at"), datetime.now(UTC) + timedelta(days=settings().labelled_retention_days)
    return max(theirs or kept, kept) if counts_as == TRAINING_LABEL else theirs


@firestore.transactional
def create_within_cap(transaction: firestore.Transaction, doc: firestore.DocumentReference,
                      prediction: firestore.DocumentReference, fields: dict) -> dict | None:
    """Create the report and count it on its prediction; the stored report instead when it exists already (a
    retry, or a clinician's later word), and Refused(429) when the prediction has had its share of this role."""
    existing = doc.get(transaction=transaction)
    if existing.exists:
        return existing.to_dict() or {}
    role = fields["role"]
    counted = ((prediction.get(transaction=transaction).to_dict() or {}).get("reports") or {}).get(role, 0)
    if counted >= REPORTS_PER_PREDICTION[role]:
        raise Refused(429, "too_many_reports",
                      f"This prediction has had {counted} reports of this kind; no more are taken.")
    transaction.create(doc, fields)
    transaction.update(prediction, {f"reports.{role}": firestore.Increment(1)})
    return None


def training_copy_name(id_: str, label: str, extension: str) -> str:
    return f"{TRAINING_PREFIX}{id_}.{label}.{extension}"


def copy_for_training(doc: Any, id_: str, label: str, upload: dict, group: str) -> None:
    """Copy the labelled upload to training/feedback/<id>.<label>.<ext> without its metadata (EXIF, GPS, comments:
    a training set keeps pixels and labels only) but with the label, the report and the group as the object's
    own, its name recorded on the report first; nothing when the upload is already gone. A copy already there is
    an earlier attempt's: done."""
    gcs = store.storage_client()
    source = gcs.bucket(upload["bucket"]).get_blob(upload["name"], generation=int(upload["generation"]))
    if source is None:
        return
    copy = gcs.bucket(settings().training_bucket).blob(
        training_copy_name(id_, label, EXTENSIONS.get(source.content_type, OTHER_EXTENSION)))
    uri = f"gs://{copy.bucket.name}/{copy.name}"
    doc.update({"training_image": uri, "training_images": firestore.ArrayUnion([uri])})
    try:
        data = source.download_as_bytes()
    except NotFound:  # deleted between the lookup and the download: the report keeps a name with no copy
        return
    # Set in the upload request itself: the function may create objects there, not update them.
    copy.metadata = {"label": label, "report_id": id_, "group": group}
    # The label's time: a lifecycle rule on daysSinceCustomTime keeps it for the labelled retention
    # (infra/storage.tf), not the upload's, as its report in Firestore.
    copy.custom_time = datetime.now(UTC)
    try:
        copy.upload_from_string(strip_metadata(data), content_type=source.content_type, if_generation_match=0)
    except PreconditionFailed:
        pass  # an earlier attempt made this copy of the same upload


def publish(id_: str, report: Report, counts_as: str) -> None:
    """The message names document ids and the label only: no comment, no image, no reporter."""
    data = {"report_id": id_, "prediction_id": report.prediction_id, "label": report.label, "role": report.role,
            "histopathology": report.histopathology, "counts_as": counts_as}
    attributes = {"report_id": id_, "prediction_id": report.prediction_id, "role": report.role,
                  "label": report.label, "counts_as": counts_as}
    publish_message(settings().feedback_topic, json.dumps(data).encode(), attributes)


def request_retrain(clinician: str) -> str:
    """A clinician's manual trigger; only the feedback function may publish to the topic (IAM)."""
    return publish_message(settings().feedback_topic, json.dumps({"manual": True, "requested_by": clinician}).encode(),
                           {"manual": "true", "role": "clinician"})
