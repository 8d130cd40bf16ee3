"""Feedback on a prediction: validate a report, check who may make it, store it once, publish it once.

Who may report:
- a user, on their own prediction only: the request carries the prediction's capability token
  (X-DeepSkin-Token), the same proof of ownership as GET /results/<id>;
- a clinician, on any prediction: on Google Cloud a Google ID token (Authorization: Bearer) verified for
  this function's audience ($DEEPSKIN_FEEDBACK_AUDIENCE, the function's URL) whose verified e-mail is in
  $DEEPSKIN_CLINICIANS. Locally (emulators, not on Cloud Run) the stand-in is the header
  X-DeepSkin-Clinician with a key whose sha256 is in $DEEPSKIN_LOCAL_CLINICIAN_KEYS. Unset lists admit
  nobody: a clinician claim without a valid identity is refused.
Only a clinician's report is a training label; a user's is a signal (it is counted, never trained on).
A label counts once per (prediction, clinician): a clinician's reports on one prediction share one
document, so a retry (whatever its idempotency key) is the same report and a later label replaces the
earlier one; the ledger counts the document once, and retraining reads its latest label.
A clinician's label on an assessed image also copies that image into the training bucket as
`feedback/<report id>.<ext>` (the uploads bucket expires, and the training job may not read it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from google.api_core.exceptions import AlreadyExists, NotFound
from google.auth.transport import requests as google_requests
from google.cloud import pubsub_v1
from google.oauth2 import id_token

from deepskin import predict_service, store
from deepskin.config import settings
from deepskin.labels import CLASSES, COARSE_LABELS
from deepskin.metadata import strip_metadata

log = logging.getLogger(__name__)

LABELS = (*CLASSES, *COARSE_LABELS)
ROLES = ("user", "clinician")
TRAINING_LABEL, SIGNAL = "training_label", "signal"
MAX_BODY = 8 * 1024
MAX_COMMENT = 500
MAX_KEY = 128
FIELDS = {"prediction_id", "label", "role", "histopathology", "comment", "idempotency_key"}
PREDICTION_ID = re.compile(r"^[0-9a-f]{32}$")
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
TRAINING_PREFIX = "feedback/"


class Refused(Exception):
    """A 4xx answer: status, a stable code for clients, and a sentence for people."""

    def __init__(self, status: int, code: str, detail: str = ""):
        super().__init__(code)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class Report:
    prediction_id: str
    label: str
    role: str
    histopathology: bool
    comment: str | None
    idempotency_key: str


def parse_report(body: bytes) -> Report:
    """JSON bytes -> Report, or Refused(400 malformed, 422 invalid field)."""
    # ValueError also covers integers too long to convert; RecursionError, nesting deep enough to blow the stack.
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "malformed_json", "The body is not valid JSON.") from None
    if not isinstance(raw, dict):
        raise Refused(400, "malformed_json", "The body must be a JSON object.")
    unknown = set(raw) - FIELDS
    if unknown:
        raise Refused(422, "unknown_field", f"Unknown fields: {', '.join(sorted(unknown))}.")
    id_, key, comment = raw.get("prediction_id"), raw.get("idempotency_key"), raw.get("comment")
    if not isinstance(id_, str) or not PREDICTION_ID.match(id_):
        raise Refused(422, "invalid_prediction_id", "prediction_id must be the 32-character id of a result.")
    if raw.get("label") not in LABELS:
        raise Refused(422, "invalid_label", f"label must be one of {', '.join(LABELS)}.")
    if raw.get("role") not in ROLES:
        raise Refused(422, "invalid_role", "role must be user or clinician.")
    if not isinstance(raw.get("histopathology", False), bool):
        raise Refused(422, "invalid_histopathology", "histopathology must be true or false.")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise Refused(422, "invalid_comment", f"comment must be text of at most {MAX_COMMENT} characters.")
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or not key.isprintable():
        raise Refused(422, "invalid_idempotency_key", f"idempotency_key must be 1-{MAX_KEY} printable characters.")
    return Report(id_, raw["label"], raw["role"], raw.get("histopathology", False), comment or None, key)


def local_stand_in() -> bool:
    """Emulators in use and not running on Cloud Run: only then is the local clinician key accepted."""
    return bool(os.environ.get("FIRESTORE_EMULATOR_HOST")) and not os.environ.get("K_SERVICE")


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def clinician_identity(headers: Any) -> str | None:
    """Who the verified clinician is ("google:<email>" or "local:<key hash prefix>"), or None."""
    if local_stand_in():
        key = headers.get("X-DeepSkin-Clinician")
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()
        allowed = env_list("DEEPSKIN_LOCAL_CLINICIAN_KEYS")
        known = any(hmac.compare_digest(digest, key_hash.lower()) for key_hash in allowed)
        return f"local:{digest[:12]}" if known else None
    return google_clinician(headers.get("Authorization", ""))


def google_clinician(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    audience = os.environ.get("DEEPSKIN_FEEDBACK_AUDIENCE")
    if scheme.lower() != "bearer" or not token:
        return None
    if not audience:
        log.error("DEEPSKIN_FEEDBACK_AUDIENCE is unset: clinician reports are refused")
        return None
    try:
        claims = id_token.verify_oauth2_token(token, google_requests.Request(), audience)
    except ValueError:  # bad signature, expired, wrong audience or issuer
        return None
    email = str(claims.get("email", "")).lower()
    allowed = {e.lower() for e in env_list("DEEPSKIN_CLINICIANS")}
    return f"google:{email}" if claims.get("email_verified") and email in allowed else None


def report_id(report: Report, clinician: str | None = None) -> str:
    """A user's report: the same key on the same prediction is the same report, whoever retries it.
    A clinician's: one per (prediction, clinician), whatever the key, so one label cannot count twice."""
    owner = f"clinician {clinician}" if clinician else report.idempotency_key
    return hashlib.sha256(f"{report.prediction_id}\n{owner}".encode()).hexdigest()[:32]


def submit(report: Report, token: str | None, headers: Any) -> dict:
    """Check the reporter, store the report once, publish it once; returns {report_id, counts_as}."""
    reporter = None
    if report.role == "clinician":
        reporter = clinician_identity(headers)
        if reporter is None:
            raise Refused(403, "clinician_identity_required", "A clinician report needs a verified clinician.")
        result = store.get_result(report.prediction_id)
    else:
        result = predict_service.owned_result(report.prediction_id, token)
    if result is None:  # the same answer for a missing prediction and someone else's
        raise Refused(404, "unknown_prediction", "No such prediction for this token.")

    id_ = report_id(report, reporter)
    counts_as = TRAINING_LABEL if report.role == "clinician" else SIGNAL
    doc = store.firestore_client().collection(store.FEEDBACK).document(id_)
    fields = {**asdict(report), "counts_as": counts_as, "reporter": reporter, "published": False,
              "model_version": result.get("model_version"), **store.lifecycle_fields()}
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


def publish_message(topic: str, data: bytes, attributes: dict[str, str]) -> str:
    """Publish and wait for the server's id, so a 202 means the message is in Pub/Sub."""
    client = publisher()
    return client.publish(client.topic_path(settings().project, topic), data, **attributes).result(timeout=30)


publisher = store.once(pubsub_v1.PublisherClient)
