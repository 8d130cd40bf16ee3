"""Who is asking: the one place where clinicians and operators are recognised.

- A clinician (training labels, a manual retrain): on Google Cloud, a Google ID token (Authorization: Bearer)
  minted for the feedback function's URL ($DEEPSKIN_FEEDBACK_AUDIENCE) whose verified e-mail is in
  $DEEPSKIN_CLINICIANS.
- An operator (the ops function): a Google ID token minted for one of $DEEPSKIN_OPS_AUDIENCES whose verified
  e-mail is in $DEEPSKIN_OPERATORS. Being invoked on Cloud Run proves nothing by itself: IAM checks that some
  caller may invoke the function, this checks that the caller is an operator.
- Locally (the emulators in use, not Google Cloud) the stand-in for both is the header X-DeepSkin-Clinician with a
  key whose sha256 is in $DEEPSKIN_LOCAL_CLINICIAN_KEYS.
Unset lists admit nobody. Settings come from deepskin.services.config.

Google's signing certificates are fetched once and reused: refreshed after CERTS_REFRESH_S; a failed refresh
keeps the cached ones for up to CERTS_MAX_AGE_S (trying again every CERTS_RETRY_S), so one failed fetch never
fails a request; with no usable certificates the answer is 503 identity_unavailable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from google.auth import exceptions, jwt
from google.auth.transport import requests as google_requests

from deepskin.core.refused import Refused
from deepskin.services.config import EMULATORS, settings

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"  # PEM certificates by key id
ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CERTS_REFRESH_S = 3600.0  # Google publishes a new key well before signing with it
CERTS_RETRY_S = 60.0  # after a failed refresh, while the cached certificates still serve
CERTS_MAX_AGE_S = 24 * 3600.0  # how long cached certificates may stand in for a refresh that keeps failing


def fetch_google_certs() -> dict[str, str]:
    response = google_requests.Request()(url=GOOGLE_CERTS_URL, method="GET", timeout=10)
    if response.status != 200:
        raise exceptions.TransportError(f"{GOOGLE_CERTS_URL} answered {response.status}")
    return json.loads(response.data)


class Certificates:
    """Signing certificates from `fetch`, cached with a bounded refresh (see the module's docstring)."""

    def __init__(self, fetch: Callable[[], dict[str, str]], clock: Callable[[], float] = time.monotonic):
        self.fetch, self.clock = fetch, clock
        self.certs: dict[str, str] | None = None
        self.fetched_at = self.tried_at = float("-inf")
        self.lock = threading.Lock()  # one fetch at a time for the instance's concurrent requests

    def current(self) -> dict[str, str]:
        with self.lock:
            now = self.clock()
            due = now - self.fetched_at >= CERTS_REFRESH_S and now - self.tried_at >= CERTS_RETRY_S
            if self.certs is None or due:
                self.tried_at = now
                try:
                    self.certs, self.fetched_at = self.fetch(), now
                except (exceptions.GoogleAuthError, ValueError, OSError):
                    log.warning("could not fetch Google's signing certificates", exc_info=True)
            if self.certs is None or now - self.fetched_at > CERTS_MAX_AGE_S:
                raise Refused(503, "identity_unavailable", "Identities cannot be checked right now; try again soon.")
            return self.certs


google_certs = Certificates(fetch_google_certs)
LOCAL_ID_CHARS = 12  # a local clinician is named by this much of their key's hash


def local_stand_in() -> bool:
    """The emulators in use, not Google Cloud (deepskin.services.config.runs_on): only then is the local
    clinician key accepted."""
    return settings().runs_on == EMULATORS


def clinician_identity(headers: Any) -> str | None:
    """Who the verified clinician is ("google:<email>" or "local:<key hash prefix>"), or None."""
    if local_stand_in():
        return local_key_holder(headers)
    config = settings()
    audiences = (config.clinician_audience,) if config.clinician_audience else ()
    return google_identity(headers.get("Authorization", ""), audiences, config.clinicians)


def operator_identity(headers: Any) -> str | None:
    """Who the verified operator is ("google:<email>" or, locally, "local:<key hash prefix>"), or None."""
    if local_stand_in():
        return local_key_holder(headers)
    config = settings()
    return google_identity(headers.get("Authorization", ""), config.operator_audiences, config.operators)


def local_key_holder(headers: Any) -> str | None:
    key = headers.get("X-DeepSkin-Clinician")
    if not key:
        return None
    digest = hashlib.sha256(key.encode()).hexdigest()
    known = any(hmac.compare_digest(digest, key_hash) for key_hash in settings().local_clinician_keys)
    return f"local:{digest[:LOCAL_ID_CHARS]}" if known else None


def google_identity(authorization: str, audiences: Iterable[str], allowed: Iterable[str]) -> str | None:
    """"google:<email>" for a Google ID token signed by Google, issued by Google, minted for one of `audiences`,
    unexpired, whose e-mail is verified and `allowed`; None otherwise."""
    scheme, _, token = authorization.partition(" ")
    audiences = list(audiences)
    if scheme.lower() != "bearer" or not token:
        return None
    if not audiences:
        log.error("no audience is configured for these ID tokens: every one is refused")
        return None
    try:
        claims = jwt.decode(token, certs=google_certs.current(), audience=audiences)
    except ValueError:  # bad signature, unknown key, expired, wrong audience, malformed
        return None
    email = str(claims.get("email", "")).lower()
    verified = claims.get("iss") in ISSUERS and claims.get("email_verified") is True
    return f"google:{email}" if verified and email in allowed else None


def still_clinician(reporter: str | None) -> bool:
    """A stored reporter (as clinician_identity wrote it) who is a clinician now: the allow-lists may have
    changed since, and the stored name may not be one clinician_identity wrote at all (training.retrain)."""
    kind, _, who = str(reporter).partition(":")
    if kind == "google":
        return bool(who) and who.lower() in settings().clinicians
    if kind == "local" and local_stand_in() and len(who) == LOCAL_ID_CHARS:
        return any(key_hash.startswith(who) for key_hash in settings().local_clinician_keys)
    return False
