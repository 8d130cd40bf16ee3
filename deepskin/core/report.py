"""A report on a prediction: its fields, their validation, its id, and what it counts as.

Only a clinician's report is a training label; a user's is a signal (counted, never trained on).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from deepskin.core.labels import CLASSES, COARSE_LABELS
from deepskin.core.refused import Refused

LABELS = (*CLASSES, *COARSE_LABELS)
ROLES = ("user", "clinician")
TRAINING_LABEL, SIGNAL = "training_label", "signal"
MAX_BODY = 8 * 1024
MAX_COMMENT = 500
MAX_KEY = 128
FIELDS = {"prediction_id", "label", "role", "histopathology", "comment", "idempotency_key"}
PREDICTION_ID = re.compile(r"^[0-9a-f]{32}$")


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


def report_id(report: Report, clinician: str | None = None) -> str:
    """A user's report: the same key on the same prediction is the same report, whoever retries it.
    A clinician's: one per (prediction, clinician), whatever the key, so one label cannot count twice."""
    if clinician:
        return clinician_report_id(report.prediction_id, clinician)
    return hashlib.sha256(f"{report.prediction_id}\n{report.idempotency_key}".encode()).hexdigest()[:32]


def clinician_report_id(prediction_id: str, clinician: str) -> str:
    """The id of a clinician's report on a prediction: whoever reads a stored report can check it against the
    report's own prediction and reporter."""
    return hashlib.sha256(f"{prediction_id}\nclinician {clinician}".encode()).hexdigest()[:32]
