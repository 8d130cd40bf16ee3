"""A result's owner and public face: the capability token, the object metadata an uploader may set, and the
fields an owner may read back. Shared by the predict path, feedback (a user reports on their own result
only) and the client's upload path.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from deepskin.services import store

TOKEN_KEY = "deepskin-token-sha256"  # object metadata naming the owner's hashed token  # nosec B105
# What an owner may read back; internal fields (upload location, token hash, claim times) stay private.
PUBLIC_FIELDS = ("status", "reason", "message", "probabilities", "malignant_probability", "risk", "top_class",
                 "image_type", "caveats", "caveat_text", "advice", "not_lesion_probability", "ood_score", "patient",
                 "model_version", "timings_ms", "source", "created_at", "expire_at")


def patient_key(field: str) -> str:
    """The object metadata an uploader may set for one of the optional facts the model can use
    (deepskin.core.patient.FIELDS): deepskin-age, deepskin-bled ... (Named here, not imported from there, so
    that the functions that need only tokens carry no numpy.)"""
    return f"deepskin-{field}"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_fields(doc: dict) -> dict:
    """What the result's owner is shown of its document, JSON-ready."""
    return jsonable({key: doc[key] for key in PUBLIC_FIELDS if key in doc})


def jsonable(value):
    """Firestore timestamps as ISO 8601 text, at any depth, so that the answer is plain JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value.isoformat() if isinstance(value, datetime) else value


def owned_result(id_: str, token: str | None) -> dict | None:
    """The result document if `token` is its owner's; None otherwise, whether or not it exists."""
    doc = store.get_result(id_)
    owner = (doc or {}).get("owner_token_sha256")
    if not token or not owner or not hmac.compare_digest(owner, token_sha256(token)):
        return None
    return doc
