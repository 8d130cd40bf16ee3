"""Who a clinician is: the one check behind every clinician-only action (labels, manual retrain, the operator
page locally).

On Google Cloud, a Google ID token (Authorization: Bearer) verified for this function's audience
($DEEPSKIN_FEEDBACK_AUDIENCE, the function's URL) whose verified e-mail is in $DEEPSKIN_CLINICIANS. Locally
(emulators, not on Cloud Run) the stand-in is the header X-DeepSkin-Clinician with a key whose sha256 is in
$DEEPSKIN_LOCAL_CLINICIAN_KEYS. Unset lists admit nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from typing import Any

from google.auth.transport import requests as google_requests
from google.oauth2 import id_token

log = logging.getLogger(__name__)

LOCAL_ID_CHARS = 12  # a local clinician is named by this much of their key's hash


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
        return f"local:{digest[:LOCAL_ID_CHARS]}" if known else None
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


def still_clinician(reporter: str | None) -> bool:
    """A stored reporter (as clinician_identity wrote it) who is a clinician now: the allow-lists may have
    changed since, and the stored name may not be one clinician_identity wrote at all (training.retrain)."""
    kind, _, who = str(reporter).partition(":")
    if kind == "google":
        return bool(who) and who.lower() in {e.lower() for e in env_list("DEEPSKIN_CLINICIANS")}
    if kind == "local" and local_stand_in() and len(who) == LOCAL_ID_CHARS:
        return any(key_hash.lower().startswith(who) for key_hash in env_list("DEEPSKIN_LOCAL_CLINICIAN_KEYS"))
    return False
