"""Hostile input through the real functions (in process, against the emulators): the nasty-file corpus on
both predict paths, malformed and oversized JSON to the feedback function, and odd object names.
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from pathlib import Path

import pytest
from support import LESIONS, deliver_upload, put_object, result_for

from deepskin.core.report import MAX_BODY
from deepskin.services import store
from deepskin.services.config import settings

NASTY = Path(__file__).resolve().parents[1] / "fixtures" / "nasty"
EXPECTED = json.loads((NASTY / "expected.json").read_text())

pytestmark = pytest.mark.usefixtures("clean_firestore")


def test_the_corpus_lists_every_nasty_file():
    files = {path.name for path in NASTY.iterdir() if path.suffix not in (".json", ".py")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nasty_file_through_the_http_function(http_client, name):
    expected = EXPECTED[name]
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = http_client.post("/predict", data=(NASTY / name).read_bytes(), content_type=content_type)
    body = response.get_json()
    if "http" in expected:  # refused as a request, before any assessment
        assert (response.status_code, body["error"]) == (expected["http"]["code"], expected["http"]["error"])
        return
    assert response.status_code == 200
    assert (body["status"], body.get("reason")) == (expected["status"], expected["reason"])
    assert ("heatmap_png_base64" in body) == (expected["status"] == "done")  # no half-answers
    assert store.get_result(body["id"])["status"] == expected["status"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nasty_file_through_the_event_path(event_client, name):
    expected = EXPECTED[name]
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    obj = put_object(f"nasty/{uuid.uuid4()}/{name}", (NASTY / name).read_bytes(), content_type)
    assert deliver_upload(event_client, obj) == 200
    doc = result_for(obj)
    assert (doc["status"], doc.get("reason")) == (expected["status"], expected["reason"])
    assert ("heatmap" in doc) == (expected["status"] == "done")


def test_the_polyglot_is_stored_without_its_zip(http_client):
    body = http_client.post("/predict", data=(NASTY / "polyglot-jpeg-zip.jpg").read_bytes(),
                            content_type="image/jpeg").get_json()
    upload = store.get_result(body["id"])["upload"]
    stored = store.storage_client().bucket(upload["bucket"]).blob(upload["name"]).download_as_bytes()
    assert b"PK\x03\x04" not in stored and stored.endswith(b"\xff\xd9")


# --- the feedback function ----------------------------------------------------------------------------------

def post_feedback(client, body: bytes):
    return client.post("/feedback", data=body, content_type="application/json")


# Already covered by tests/feedback: invalid JSON text, a non-object, each invalid field, a 9000-byte comment
# and a declared oversize length. Here: what a hostile client adds to those.
MALFORMED = {
    "invalid_utf8": b'{"label": "\xff\xfe"}',
    "nan_literal": b'{"prediction_id": NaN}',
    "duplicate_keys": b'{"label": "mel", "label": "nv"}',
    "lone_surrogate_key": json.dumps({"prediction_id": "a" * 32, "label": "mel", "role": "user",
                                      "idempotency_key": "\ud800"}).encode(),
    "binary_garbage": bytes(range(256)) * 4,
}
# Python's json raises RecursionError / plain ValueError here, which deepskin.core.report.parse_report does not
# turn into malformed_json: the function answers 500. Fix: catch ValueError and RecursionError there.
PARSER_CRASHES = {
    "nested_8000_deep": b"[" * 4000 + b"]" * 4000,
    "integer_of_5000_digits": b'{"prediction_id": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_feedback_is_a_clear_4xx(feedback_client, name):
    response = post_feedback(feedback_client, MALFORMED[name])
    assert 400 <= response.status_code < 500 and response.get_json()["error"]


@pytest.mark.parametrize("name", sorted(PARSER_CRASHES))
def test_json_that_crashes_the_parser_is_a_clear_4xx(feedback_client, name):
    response = post_feedback(feedback_client, PARSER_CRASHES[name])
    assert (response.status_code, response.get_json()["error"]) == (400, "malformed_json")


def test_oversized_feedback_is_413_whatever_its_shape(feedback_client):
    for body in (b"[" * (MAX_BODY + 1), b'{"comment": "' + b"x" * 1_000_000 + b'"}'):
        response = post_feedback(feedback_client, body)
        assert (response.status_code, response.get_json()["error"]) == (413, "too_large")


# --- object names -----------------------------------------------------------------------------------------

ODD_NAMES = ["../x.jpg", "a/b/c.jpg", "ünïcødé 😀.jpg", "..\\..\\windows.jpg", "%2e%2e/encoded.jpg",
             "heatmaps/forged.png", "x" * 1000 + ".jpg", "🙂" * 200 + ".jpg"]


def every_object() -> set[tuple[str, str]]:
    config, gcs = settings(), store.storage_client()
    buckets = (config.uploads_bucket, config.results_bucket, config.models_bucket, config.training_bucket)
    return {(bucket, blob.name) for bucket in buckets for blob in gcs.list_blobs(bucket)}


def test_odd_object_names_are_stored_under_their_derived_ids_only(event_client):
    before = every_object()
    uploaded = []
    for name in ODD_NAMES:
        obj = put_object(name, LESIONS[0].read_bytes())
        assert obj["name"] == name  # the bucket kept the name as given
        assert deliver_upload(event_client, obj) == 200
        uploaded.append(obj)
    ids = {store.result_id(obj["bucket"], obj["name"], obj["generation"]) for obj in uploaded}
    assert {result_for(obj)["status"] for obj in uploaded} == {"done"}
    documents = {snapshot.id for snapshot in store.firestore_client().collection(store.PREDICTIONS).stream()}
    assert documents == ids  # nothing else written, nothing keyed by the name
    # The only new objects: the uploads themselves and one heatmap per derived id.
    assert every_object() - before == ({(settings().uploads_bucket, name) for name in ODD_NAMES}
                                       | {(settings().results_bucket, f"{store.HEATMAPS_PREFIX}{id_}.png")
                                          for id_ in ids})
