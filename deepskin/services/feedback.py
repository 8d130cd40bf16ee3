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
`feedback/<report id>.<ext>` (the uploads bucket expires, and the training job may not read it).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from google.api_core.exceptions import AlreadyExists, NotFound

from deepskin.core.metadata import strip_metadata
from deepskin.core.refused import Refused
from deepskin.core.report import SIGNAL, TRAINING_LABEL, Report, report_id
from deepskin.services import results, store
from deepskin.services.config import settings
from deepskin.services.identity import clinician_identity
from deepskin.services.pubsub import publish_message

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
TRAINING_PREFIX = "feedback/"


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
              "model_version": result.get("model_version"),
              **store.lifecycle_fields(at_least=result.get("expire_at"))}
    fields.pop("idempotency_key")  # the id already encodes it; a client's key is not ours to keep
    try:
        doc.create(fields)
        stored = fields
    except AlreadyExists:
        stored = doc.get().to_dict() or {}
        changed = (stored.get("label"), stored.get("role")) != (report.label, report.role)
        if changed and reporter is None:
            raise Refused(409, "idempotency_key_reused", "This idempotency_key was used for another report.") from None
        if changed:  # the clinician's later word replaces the earlier; published again so the change is seen
            replaced = {k: fields[k] for k in ("label", "histopathology", "comment", "model_version")}
            doc.update({**replaced, "published": False})
            stored = {**stored, **replaced, "published": False}
        if stored.get("published"):
            return {"report_id": id_, "counts_as": counts_as}
        # Otherwise the first attempt stored the report but died before publishing: finish its work.
    wanted = counts_as == TRAINING_LABEL and result.get("status") == "done" and result.get("upload")
    if wanted and "training_image" not in stored:  # the copy's name is fixed: copying again is harmless
        doc.update({"training_image": copy_for_training(id_, report.label, result["upload"])})
    publish(id_, report, counts_as)
    doc.update({"published": True})
    return {"report_id": id_, "counts_as": counts_as}


def copy_for_training(id_: str, label: str, upload: dict) -> str | None:
    """Copy the labelled upload to training/feedback/<id>.<ext> without its metadata (EXIF, GPS, comments:
    a training set keeps pixels and labels only); None when the upload is already gone."""
    gcs = store.storage_client()
    source = gcs.bucket(upload["bucket"]).get_blob(upload["name"], generation=int(upload["generation"]))
    if source is None:
        return None
    try:
        data = source.download_as_bytes()
    except NotFound:  # deleted between the lookup and the download
        return None
    copy = gcs.bucket(settings().training_bucket).blob(
        f"{TRAINING_PREFIX}{id_}.{EXTENSIONS.get(source.content_type, 'img')}")
    # Set in the upload request itself: the function may create objects there, not update them (iam.tf).
    copy.metadata = {"label": label, "report_id": id_}
    # The upload's creation time: a lifecycle rule on daysSinceCustomTime keeps the upload's deadline.
    copy.custom_time = source.time_created
    copy.upload_from_string(strip_metadata(data), content_type=source.content_type)
    return f"gs://{copy.bucket.name}/{copy.name}"


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
