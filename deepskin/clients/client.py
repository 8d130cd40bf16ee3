"""A Python client for DeepSkin, for scripts and the `deepskin` CLI.

Two ways in, the same result document out:
- `upload` puts the image in the uploads bucket (the event path: Eventarc -> on_upload) and waits for the
  Firestore document of that object version;
- `predict` POSTs it to predict_http and gets the result in the answer.
Either way the caller gets a capability token: only its holder can read, report on or delete the result.

    client = Client()  # URLs from DEEPSKIN_PREDICT_URL, DEEPSKIN_FEEDBACK_URL, DEEPSKIN_WEB_URL
    result = client.upload("lesion.jpg", wait=True)
    print(result["risk"], result["advice"])
"""

from __future__ import annotations

import mimetypes
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from deepskin.core.metadata import strip_metadata
from deepskin.core.patient import UNKNOWN, PatientInfo
from deepskin.core.refused import DeepSkinError, Refused  # a 4xx other than 404: the request itself was found wanting

DEFAULT_URLS = {
    "DEEPSKIN_PREDICT_URL": "http://127.0.0.1:8081",
    "DEEPSKIN_FEEDBACK_URL": "http://127.0.0.1:8082",
    "DEEPSKIN_WEB_URL": "http://127.0.0.1:8080",
}
# Where `make run` (local/stack.py) puts the emulators; used only when talking to a loopback stack.
LOCAL_EMULATORS = {
    "GOOGLE_CLOUD_PROJECT": "deepskin-local",
    "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086",
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:8087",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:8088",
    "NO_GCE_CHECK": "true",
}
TOKEN_HEADER = "X-DeepSkin-Token"  # a name, no secret  # nosec B105
LESION_TOKEN_HEADER = "X-DeepSkin-Lesion-Token"  # a name, no secret  # nosec B105
POLL_INTERVAL_S = 0.05  # a Firestore emulator read costs ~2 ms; the result lands within ~1 s


class NotFound(DeepSkinError):
    """No such result, or not for this token (the service does not say which)."""


class Unavailable(DeepSkinError):
    """The service did not answer, answered 5xx, or no result came in time."""


@dataclass(frozen=True)
class Urls:
    predict: str
    feedback: str
    web: str


def urls_from_env() -> Urls:
    """The service URLs, from the environment or the local stack's fixed ports."""
    env = {name: os.environ.get(name) or default for name, default in DEFAULT_URLS.items()}
    return Urls(*(env[name].rstrip("/") for name in DEFAULT_URLS))


def use_local_emulators(urls: Urls) -> None:
    """Point the Google clients at the local stack's emulators when the services are on loopback.

    Explicit variables win; against the cloud nothing changes and the clients use Application Default
    Credentials as usual.
    """
    if urlsplit(urls.predict).hostname in ("127.0.0.1", "localhost", "::1"):
        for name, value in LOCAL_EMULATORS.items():
            os.environ.setdefault(name, value)


@dataclass
class ComponentStatus:
    name: str
    url: str
    up: bool
    detail: str


class Client:
    def __init__(self, predict_url: str | None = None, feedback_url: str | None = None, web_url: str | None = None,
                 request_timeout: float = 60.0, clinician_key: str | None = None):
        defaults = urls_from_env()
        self.urls = Urls((predict_url or defaults.predict).rstrip("/"), (feedback_url or defaults.feedback).rstrip("/"),
                         (web_url or defaults.web).rstrip("/"))
        self.request_timeout = request_timeout
        self.clinician_key = clinician_key  # the local stack's stand-in for a clinician's Google identity
        self.http = requests.Session()

    # --- the event path ---------------------------------------------------------------------------------

    def upload(self, path: str | os.PathLike, wait: bool = True, timeout: float = 60.0,
               patient: PatientInfo = UNKNOWN) -> dict:
        """Put the image in the uploads bucket; with `wait`, return its finished result document.

        The file's metadata (EXIF with GPS, comments) is stripped before it leaves this machine; the
        optional patient facts travel as the object's metadata.
        """
        # Imported here so that HTTP-only use needs neither the Google clients nor the time to load them.
        try:
            from google.api_core.exceptions import GoogleAPIError

            from deepskin.services import results, store
        except ImportError as exc:
            raise Unavailable("the upload path talks to Cloud Storage and Firestore: install deepskin[cloud], "
                              "or send the photo with predict") from exc

        path = Path(path)
        token = secrets.token_urlsafe(24)
        owner = {results.TOKEN_KEY: results.token_sha256(token)}  # the object keeps only the hash
        owner.update({results.patient_key(k): str(v) for k, v in patient.given().items()})
        try:
            upload = store.put_upload(f"uploads/{uuid.uuid4()}{path.suffix.lower()}",
                                      strip_metadata(path.read_bytes()), content_type(path), owner)
            id_ = store.result_id(upload["bucket"], upload["name"], upload["generation"])
            if not wait:
                return {"id": id_, "token": token, "status": "pending"}
            doc = self.wait_for(id_, timeout)
        except (GoogleAPIError, requests.RequestException) as exc:
            raise Unavailable(f"Cloud Storage or Firestore: {exc}") from exc
        return {"id": id_, "token": token, **results.public_fields(doc)}

    @staticmethod
    def wait_for(id_: str, timeout: float) -> dict:
        """Poll the result document until it is no longer pending (absent until on_upload claims it)."""
        from deepskin.services import store

        deadline = time.monotonic() + timeout
        while (doc := store.get_result(id_)) is None or doc.get("status") == "pending":
            if time.monotonic() > deadline:
                raise Unavailable(f"no result for {id_} within {timeout:.0f} s: is the event path (bridge, "
                                  "on_upload) running?")
            time.sleep(POLL_INTERVAL_S)
        return doc

    # --- the HTTP API -----------------------------------------------------------------------------------

    def predict(self, path: str | os.PathLike, patient: PatientInfo = UNKNOWN) -> dict:
        """POST the image (patient facts as query parameters); the answer holds id, token, the result fields
        and heatmap_png_base64."""
        path = Path(path)
        return self.call("POST", self.urls.predict + "/", data=path.read_bytes(), params=patient.given(),
                         headers={"Content-Type": content_type(path)})

    def result(self, id_: str, token: str) -> dict:
        return self.call("GET", f"{self.urls.predict}/results/{id_}", headers={TOKEN_HEADER: token})

    def heatmap(self, id_: str, token: str) -> bytes:
        response = self.send("GET", f"{self.urls.predict}/results/{id_}/heatmap", headers={TOKEN_HEADER: token})
        return response.content

    def delete(self, id_: str, token: str) -> dict:
        return self.call("DELETE", f"{self.urls.predict}/results/{id_}", headers={TOKEN_HEADER: token})

    # --- following a spot (a lesion's history, kept for the chosen months with consent) ---------------------

    def follow(self, id_: str, token: str, months: int, consent: bool = False) -> dict:
        """Start following the spot of your result `id_`: the answer holds the lesion's id, its token (keep it:
        it is the only key to the history) and the history. Without consent=True the service refuses
        (consent_required): following keeps the photo and result for `months` (1, 3, 6 or 12) instead of 30 days."""
        return self.call("POST", f"{self.urls.predict}/lesions", headers={TOKEN_HEADER: token},
                         json={"result_id": id_, "consent": consent, "months": months})

    def add_to_lesion(self, lesion_id: str, lesion_token: str, id_: str, token: str) -> dict:
        """Add a later result of the same spot; repeating it is harmless (listed once). Returns the history."""
        return self.call("POST", f"{self.urls.predict}/lesions/{lesion_id}/results", json={"result_id": id_},
                         headers={LESION_TOKEN_HEADER: lesion_token, TOKEN_HEADER: token})

    def lesion(self, lesion_id: str, lesion_token: str) -> dict:
        """The history: entries (date, band, reports), changes (moved_up, looks_alike), expire_at."""
        return self.call("GET", f"{self.urls.predict}/lesions/{lesion_id}",
                         headers={LESION_TOKEN_HEADER: lesion_token})

    def lesion_photo(self, lesion_id: str, lesion_token: str, id_: str) -> bytes:
        return self.send("GET", f"{self.urls.predict}/lesions/{lesion_id}/photos/{id_}",
                         headers={LESION_TOKEN_HEADER: lesion_token}).content

    def lesion_reminder(self, lesion_id: str, lesion_token: str, day: str | None = None) -> str:
        """An .ics calendar file (RFC 5545) for `day` (YYYY-MM-DD), or for the suggested day."""
        return self.send("GET", f"{self.urls.predict}/lesions/{lesion_id}/reminder.ics",
                         params={"date": day} if day else None, headers={LESION_TOKEN_HEADER: lesion_token}).text

    def delete_lesion(self, lesion_id: str, lesion_token: str) -> dict:
        """Erase the history in one action: every photo, result and report in it."""
        return self.call("DELETE", f"{self.urls.predict}/lesions/{lesion_id}",
                         headers={LESION_TOKEN_HEADER: lesion_token})

    def feedback(self, id_: str, label: str, token: str | None = None, role: str = "user",
                 histopathology: bool = False, comment: str | None = None,
                 idempotency_key: str | None = None) -> dict:
        """Report the true label; retrying with the same idempotency_key is stored once."""
        report = {"prediction_id": id_, "label": label, "role": role, "histopathology": histopathology,
                  "comment": comment, "idempotency_key": idempotency_key or str(uuid.uuid4())}
        headers = {TOKEN_HEADER: token} if token else {}
        if self.clinician_key:
            headers["X-DeepSkin-Clinician"] = self.clinician_key
        return self.call("POST", self.urls.feedback + "/", json=report, headers=headers)

    def status(self) -> list[ComponentStatus]:
        """Whether each part the client talks to answers; the emulators only when the environment names them."""
        probes = [("web", self.urls.web + "/"), ("predict", self.urls.predict + "/"),
                  ("feedback", self.urls.feedback + "/")]
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            probes.append(("storage", os.environ["STORAGE_EMULATOR_HOST"].rstrip("/") + "/storage/v1/b"))
        if os.environ.get("FIRESTORE_EMULATOR_HOST"):
            probes.append(("firestore", f"http://{os.environ['FIRESTORE_EMULATOR_HOST']}/"))
        return [self.probe(name, url) for name, url in probes]

    def probe(self, name: str, url: str) -> ComponentStatus:
        """Up when it answers below 500: a GET that a function refuses (404, 405) still proves it serves."""
        try:
            status = self.http.get(url, timeout=5).status_code
        except requests.RequestException as exc:
            return ComponentStatus(name, url, False, type(exc).__name__)
        return ComponentStatus(name, url, status < 500, f"HTTP {status}")

    def send(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            response = self.http.request(method, url, timeout=self.request_timeout, **kwargs)
        except requests.RequestException as exc:
            raise Unavailable(f"{method} {url}: {exc}") from exc
        if response.status_code == 404:
            raise NotFound(f"{url}: not found (or not for this token)")
        if response.status_code >= 500:
            raise Unavailable(f"{method} {url}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                error = response.json()
            except ValueError:
                error = {}
            raise Refused(response.status_code, error.get("error", "refused"), error.get("detail") or "")
        return response

    def call(self, method: str, url: str, **kwargs) -> dict:
        return self.send(method, url, **kwargs).json()


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
