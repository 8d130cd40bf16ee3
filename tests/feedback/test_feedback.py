"""The feedback HTTP function against the real emulators: validation, ownership, identity, idempotency."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from feedback_support import CLINICIAN, RETRAIN_SUBSCRIPTION, pull, report

from deepskin.core.report import MAX_BODY
from deepskin.loop import feedback
from deepskin.services import identity, store
from deepskin.services.config import settings

ORIGIN = "http://localhost:8080"


def post(client, body, headers=None, **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post("/feedback", data=data, headers=headers or {}, **kwargs)


def feedback_docs() -> list[dict]:
    return [s.to_dict() for s in store.firestore_client().collection(store.FEEDBACK).stream()]


def test_invalid_requests_get_clear_4xx_and_change_nothing(feedback_client, prediction):
    id_, token = prediction
    owner = {"X-DeepSkin-Token": token}
    cases = [
        (post(feedback_client, report(id_), owner, content_type="text/plain"), 415, "unsupported_media_type"),
        (post(feedback_client, "{not json", owner), 400, "malformed_json"),
        (post(feedback_client, "[1, 2]", owner), 400, "malformed_json"),
        (post(feedback_client, report(id_, label="melanoma"), owner), 422, "invalid_label"),
        (post(feedback_client, report(id_, role="admin"), owner), 422, "invalid_role"),
        (post(feedback_client, report(id_, histopathology="yes"), owner), 422, "invalid_histopathology"),
        (post(feedback_client, report(id_, comment="x" * 501), owner), 422, "invalid_comment"),
        (post(feedback_client, report(id_, idempotency_key="k" * 129), owner), 422, "invalid_idempotency_key"),
        (post(feedback_client, {k: v for k, v in report(id_).items() if k != "idempotency_key"}, owner), 422,
         "invalid_idempotency_key"),
        (post(feedback_client, report(id_, extra=1), owner), 422, "unknown_field"),
        (post(feedback_client, report("zz"), owner), 422, "invalid_prediction_id"),
        (post(feedback_client, report("0" * 32), owner), 404, "unknown_prediction"),
        (post(feedback_client, report(id_), {"X-DeepSkin-Token": "not-the-owner"}), 404, "unknown_prediction"),
        (post(feedback_client, report(id_)), 404, "unknown_prediction"),
        (post(feedback_client, report(id_, role="clinician"), owner), 403, "clinician_identity_required"),
        (post(feedback_client, report(id_, role="clinician"), {"X-DeepSkin-Clinician": "guess"}), 403,
         "clinician_identity_required"),
        (post(feedback_client, report(id_, comment="x" * 9000), owner), 413, "too_large"),
        (feedback_client.get("/feedback"), 405, "method_not_allowed"),
        (feedback_client.post("/elsewhere", json=report(id_)), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.get_json()["error"]) == (status, code), response.get_json()
        assert response.mimetype == "application/json"
    assert feedback_docs() == [] and pull(RETRAIN_SUBSCRIPTION) == []


class Unreadable(io.BytesIO):
    """A request body that fails the test if anything reads it."""

    def read(self, *_):
        pytest.fail("the body was read")

    readline = readinto = read


def test_declared_oversize_body_is_refused_before_reading(feedback_client, prediction):
    response = feedback_client.post("/feedback", input_stream=Unreadable(), content_type="application/json",
                                    environ_overrides={"CONTENT_LENGTH": str(MAX_BODY + 1)})
    assert response.status_code == 413 and response.get_json()["error"] == "too_large"


def test_user_report_is_a_signal_stored_and_published_once(feedback_client, prediction):
    id_, token = prediction
    body = report(id_, label="nv", comment="my GP said it is a mole", idempotency_key="key-1")
    answers = [post(feedback_client, body, {"X-DeepSkin-Token": token, "Origin": ORIGIN}) for _ in range(3)]
    assert {a.status_code for a in answers} == {202}
    assert answers[0].headers["Access-Control-Allow-Origin"] == ORIGIN
    assert len({a.get_json()["report_id"] for a in answers}) == 1
    assert answers[0].get_json()["counts_as"] == "signal"

    messages = pull(RETRAIN_SUBSCRIPTION)
    assert len(messages) == 1  # the repeated key did not publish again
    assert dict(messages[0].attributes) == {"report_id": answers[0].get_json()["report_id"], "prediction_id": id_,
                                            "role": "user", "label": "nv", "counts_as": "signal"}
    assert "comment" not in json.loads(messages[0].data)  # free text stays in Firestore
    [doc] = feedback_docs()
    assert doc["comment"] == "my GP said it is a mole" and doc["published"] and doc["reporter"] is None
    assert "training_image" not in doc and doc["model_version"]

    reused = post(feedback_client, {**body, "label": "mel"}, {"X-DeepSkin-Token": token})
    assert reused.status_code == 409 and pull(RETRAIN_SUBSCRIPTION) == []


def test_a_users_report_expires_with_its_prediction_and_a_clinicians_label_is_kept_longer(feedback_client, prediction,
                                                                                          monkeypatch):
    monkeypatch.setenv("DEEPSKIN_LABELLED_RETENTION_DAYS", "365")
    id_, token = prediction
    soon = datetime.now(UTC) + timedelta(days=3)  # a prediction made 27 days ago
    store.prediction(id_).update({"expire_at": soon})
    assert post(feedback_client, report(id_), {"X-DeepSkin-Token": token}).status_code == 202
    assert post(feedback_client, report(id_, role="clinician"), CLINICIAN).status_code == 202
    docs = {doc["counts_as"]: doc for doc in feedback_docs()}
    assert docs["signal"]["expire_at"] == soon
    assert round((docs["training_label"]["expire_at"] - datetime.now(UTC)) / timedelta(days=1)) == 365
    copy = store.blob_at(docs["training_label"]["training_image"])
    copy.reload()
    assert abs(copy.custom_time - datetime.now(UTC)) < timedelta(minutes=5)  # its lifecycle counts from the label


def test_a_prediction_takes_a_few_reports_per_role(feedback_client, prediction):
    id_, token = prediction
    owner = {"X-DeepSkin-Token": token}
    accepted = [report(id_, idempotency_key=f"key-{i}") for i in range(feedback.REPORTS_PER_PREDICTION["user"])]
    assert [post(feedback_client, body, owner).status_code for body in accepted] == [202] * len(accepted)
    refused = post(feedback_client, report(id_, idempotency_key="one-too-many"), owner)
    assert (refused.status_code, refused.get_json()["error"]) == (429, "too_many_reports")
    assert post(feedback_client, accepted[0], owner).status_code == 202  # a retry is not a new report
    assert post(feedback_client, report(id_, role="clinician"), CLINICIAN).status_code == 202  # its own share
    assert len(feedback_docs()) == len(accepted) + 1
    assert len(pull(RETRAIN_SUBSCRIPTION)) == len(accepted) + 1  # the refused report reached no ledger


def test_clinician_report_is_a_training_label_with_its_image_copied(feedback_client, prediction):
    id_, _ = prediction
    response = post(feedback_client, report(id_, role="clinician", label="bcc", histopathology=True), CLINICIAN)
    assert response.status_code == 202
    answer = response.get_json()
    assert answer["counts_as"] == "training_label"
    [message] = pull(RETRAIN_SUBSCRIPTION)
    assert message.attributes["counts_as"] == "training_label" and message.attributes["role"] == "clinician"
    [doc] = feedback_docs()
    assert doc["reporter"].startswith("local:")
    name = f"feedback/{answer['report_id']}.bcc.jpg"
    assert doc["training_image"] == f"gs://{settings().training_bucket}/{name}"
    copy = store.storage_client().bucket(settings().training_bucket).get_blob(name)
    upload = store.get_result(id_)["upload"]
    original = store.storage_client().bucket(upload["bucket"]).get_blob(upload["name"])
    assert copy.metadata == {"label": "bcc", "report_id": answer["report_id"], "group": id_}  # no followed spot
    assert copy.md5_hash == original.md5_hash

    deleted = store.delete_result(id_)  # the owner's delete reaches the training copy too
    assert doc["training_image"] in deleted["objects"]
    assert store.storage_client().bucket(settings().training_bucket).get_blob(name) is None


def test_on_google_cloud_only_a_verified_allowlisted_google_identity_is_a_clinician(feedback_client, prediction,
                                                                                 monkeypatch, google_tokens):
    id_, _ = prediction
    audience = "https://feedback.example.run.app"
    monkeypatch.setenv("K_SERVICE", "deepskin-feedback")  # as on Cloud Run: the local key means nothing
    monkeypatch.setenv("DEEPSKIN_FEEDBACK_AUDIENCE", audience)
    monkeypatch.setenv("DEEPSKIN_CLINICIANS", "derm@example.org, other@example.org")
    good = google_tokens.bearer("Derm@example.org", audience)
    as_clinician = report(id_, role="clinician")
    for headers in (CLINICIAN, {"Authorization": "Bearer forged"},
                    google_tokens.bearer("derm@example.org", audience, email_verified=False),
                    google_tokens.bearer("someone@example.org", audience),
                    google_tokens.bearer("derm@example.org", "https://elsewhere.example"),
                    google_tokens.bearer("derm@example.org", audience, iss="https://evil.example"),
                    google_tokens.bearer("derm@example.org", audience, exp=int(time.time()) - 3600),
                    {"Authorization": good["Authorization"].replace("Bearer", "Basic")}):
        assert post(feedback_client, as_clinician, headers).status_code == 403, headers
    response = post(feedback_client, as_clinician, good)
    assert response.status_code == 202 and response.get_json()["counts_as"] == "training_label"
    assert feedback_docs()[0]["reporter"] == "google:derm@example.org"
    monkeypatch.delenv("DEEPSKIN_FEEDBACK_AUDIENCE")  # misconfigured: never an open door
    assert post(feedback_client, report(id_, role="clinician"), good).status_code == 403


def test_a_failed_certificate_fetch_is_never_a_500(feedback_client, prediction, monkeypatch, google_tokens):
    """Google's certificates are cached: a fetch that fails once is answered from the cache; with nothing cached
    the clinician is told to try again (503), and the user's own report is unaffected."""
    id_, token = prediction
    audience = "https://feedback.example.run.app"
    monkeypatch.setenv("K_SERVICE", "deepskin-feedback")
    monkeypatch.setenv("DEEPSKIN_FEEDBACK_AUDIENCE", audience)
    monkeypatch.setenv("DEEPSKIN_CLINICIANS", "derm@example.org")
    clinician = google_tokens.bearer("derm@example.org", audience)

    def unreachable():
        raise OSError("network unreachable")

    monkeypatch.setattr(identity, "google_certs", identity.Certificates(unreachable))
    refused = post(feedback_client, report(id_, role="clinician"), clinician)
    assert (refused.status_code, refused.get_json()["error"]) == (503, "identity_unavailable")
    assert post(feedback_client, report(id_), {"X-DeepSkin-Token": token}).status_code == 202

    fetches = iter([google_tokens.certs])
    now = [0.0]
    certs = identity.Certificates(lambda: next(fetches) if now[0] == 0 else unreachable(), clock=lambda: now[0])
    monkeypatch.setattr(identity, "google_certs", certs)
    assert post(feedback_client, report(id_, role="clinician"), clinician).status_code == 202
    now[0] = identity.CERTS_REFRESH_S + 1  # due for a refresh, which fails: the cached certificates answer
    assert post(feedback_client, report(id_, role="clinician", label="nv"), clinician).status_code == 202


def test_manual_retrain_request_needs_a_clinician(feedback_client):
    assert feedback_client.post("/retrain").status_code == 403
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202
    [message] = pull(RETRAIN_SUBSCRIPTION)
    assert dict(message.attributes) == {"manual": "true", "role": "clinician"}


def test_cors_preflight(feedback_client):
    allowed = feedback_client.options("/feedback", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 204 and allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    for header in ("X-DeepSkin-Token", "Authorization", "Content-Type"):
        assert header in allowed.headers["Access-Control-Allow-Headers"]
    refused = feedback_client.options("/feedback", headers={"Origin": "https://evil.example",
                                                            "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
