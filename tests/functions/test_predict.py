"""The predict functions end to end against the real emulators: storage events and the HTTP API.

Events are real CloudEvents with Eventarc's attributes and StorageObjectData payload, delivered through
functions-framework the way Eventarc delivers them (binary content mode HTTP POST).
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from google.api_core.exceptions import ServiceUnavailable
from google.cloud import firestore
from PIL import Image

from deepskin.core import checks
from deepskin.core.patient import PatientInfo
from deepskin.core.pipeline import assess
from deepskin.services import predict_service, results, store
from deepskin.services.config import settings
from deepskin.services.served_model import served_model
from training import batch_predict, evaluate

REPO = Path(__file__).resolve().parents[2]
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))
FINALIZED = "google.cloud.storage.object.v1.finalized"
ORIGIN = "http://localhost:8080"
# Fields that legitimately differ between two assessments of the same bytes.
VOLATILE = {"timings_ms", "source", "created_at", "expire_at"}

pytestmark = pytest.mark.usefixtures("clean_firestore")


# --- inputs -----------------------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int = 30_000) -> bytes:
    """A tiny PNG whose header declares side x side pixels (900 MP): decoding it would need gigabytes."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def png_1x1() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 120, 100)).save(out, "PNG")
    return out.getvalue()


BAD_INPUTS = {  # name: (bytes, expected status, expected reason)
    "text": (b"this is not an image\n" * 20, "rejected", "unsupported_format"),
    "truncated_jpeg": (LESIONS[0].read_bytes()[:4000], "rejected", "corrupt"),
    "zero_bytes": (b"", "rejected", "empty"),
    "png_1x1": (png_1x1(), "rejected", "too_small"),
    "heic_header": (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 200, "rejected", "unsupported_format"),
    "bomb_png": (bomb_png(), "rejected", "too_many_pixels"),
}


# --- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def assess_calls(monkeypatch) -> list[int]:
    """Counts assess runs across threads."""
    calls, lock = [], threading.Lock()

    def counted(data, model, patient):
        with lock:
            calls.append(1)
        return assess(data, model, patient)

    monkeypatch.setattr(predict_service, "assess", counted)
    return calls


def upload(data: bytes, metadata: dict | None = None, content_type: str = "image/jpeg") -> dict:
    """Put an object in the uploads bucket; its JSON resource, which is what Eventarc's event data carries."""
    blob = store.storage_client().bucket(settings().uploads_bucket).blob(f"phone/{uuid.uuid4()}.jpg")
    blob.metadata = metadata
    blob.upload_from_string(data, content_type=content_type)
    return dict(blob._properties)  # pylint: disable=protected-access


def storage_event(data: dict) -> CloudEvent:
    """A CloudEvent exactly as Eventarc sends for a finalized object (StorageObjectData as JSON)."""
    attributes = {
        "type": FINALIZED,
        "source": f"//storage.googleapis.com/projects/_/buckets/{data['bucket']}",
        "subject": f"objects/{data['name']}",
        "id": str(uuid.uuid4().int)[:16],
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "specversion": "1.0",
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes, data)


def send(client, event: CloudEvent) -> int:
    headers, body = to_binary(event)
    return client.post("/", headers=headers, data=body).status_code


def result_for(object_data: dict) -> dict | None:
    return store.get_result(store.result_id(object_data["bucket"], object_data["name"], object_data["generation"]))


def all_results() -> list[dict]:
    return [snapshot.to_dict() for snapshot in store.firestore_client().collection(store.PREDICTIONS).stream()]


def stable(fields: dict) -> dict:
    return {key: value for key, value in results.public_fields(fields).items() if key not in VOLATILE}


def assert_matches_model(doc: dict, data: bytes) -> None:
    direct = assess(data, served_model())
    assert doc["status"] == direct.status == "done"
    assert doc["model_version"] == direct.model_version
    assert doc["risk"] == direct.risk
    assert doc["probabilities"].keys() == direct.probabilities.keys()
    for name, p in direct.probabilities.items():
        assert doc["probabilities"][name] == pytest.approx(p, abs=1e-6)
    assert doc["malignant_probability"] == pytest.approx(direct.malignant_probability, abs=1e-6)


# --- storage events ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lesion", LESIONS, ids=[p.stem for p in LESIONS])
def test_lesion_event_is_scored_like_the_model(event_client, lesion):
    data = lesion.read_bytes()
    obj = upload(data, metadata={results.TOKEN_KEY: "ab" * 32})
    assert send(event_client, storage_event(obj)) == 200
    doc = result_for(obj)
    assert_matches_model(doc, data)
    assert doc["source"] == "event"
    assert doc["upload"] == {"bucket": obj["bucket"], "name": obj["name"], "generation": obj["generation"]}
    assert doc["owner_token_sha256"] == "ab" * 32
    assert isinstance(doc["created_at"], datetime) and isinstance(doc["expire_at"], datetime)
    assert 29 <= (doc["expire_at"] - doc["created_at"]).days <= 30
    heatmap = store.heatmap_blob(store.result_id(obj["bucket"], obj["name"], obj["generation"]))
    assert doc["heatmap"] == f"gs://{heatmap.bucket.name}/{heatmap.name}"
    assert heatmap.exists()
    assert heatmap.download_as_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_event_is_refused_with_a_reason(event_client, name):
    data, status, reason = BAD_INPUTS[name]
    obj = upload(data)
    assert send(event_client, storage_event(obj)) == 200
    doc = result_for(obj)
    assert (doc["status"], doc["reason"]) == (status, reason)
    assert doc["message"] and "heatmap" not in doc


def test_oversize_event_is_refused_before_download(event_client, monkeypatch):
    obj = upload(LESIONS[0].read_bytes())
    obj["size"] = str(checks.MAX_BYTES + 1)  # what the event says is what counts
    monkeypatch.setattr(store, "read_upload", lambda *args: pytest.fail("downloaded an oversize object"))
    assert send(event_client, storage_event(obj)) == 200
    doc = result_for(obj)
    assert (doc["status"], doc["reason"]) == ("rejected", "too_large")


def test_event_for_a_deleted_object_records_upload_missing(event_client):
    obj = upload(LESIONS[0].read_bytes())
    store.storage_client().bucket(obj["bucket"]).blob(obj["name"]).delete()
    assert send(event_client, storage_event(obj)) == 200
    assert (result_for(obj)["status"], result_for(obj)["reason"]) == ("rejected", "upload_missing")


def test_http_uploads_and_other_buckets_are_skipped(event_client, assess_calls):
    from_http = upload(LESIONS[0].read_bytes(), metadata={predict_service.SOURCE_KEY: "http"})
    elsewhere = dict(upload(LESIONS[0].read_bytes()), bucket=settings().training_bucket)
    for obj in (from_http, elsewhere):
        assert send(event_client, storage_event(obj)) == 200
    assert all_results() == [] and assess_calls == []


def test_duplicated_event_does_the_work_once(event_client, assess_calls):
    obj = upload(LESIONS[1].read_bytes())
    event = storage_event(obj)
    assert send(event_client, event) == 200
    heatmap = store.heatmap_blob(store.result_id(obj["bucket"], obj["name"], obj["generation"]))
    heatmap.reload()
    first = (heatmap.generation, heatmap.updated, result_for(obj)["finished_at"])
    assert send(event_client, event) == 200
    heatmap.reload()
    assert (heatmap.generation, heatmap.updated, result_for(obj)["finished_at"]) == first
    assert len(all_results()) == 1 and len(assess_calls) == 1


def held_claim(obj: dict) -> str:
    """A pending claim on the upload's result, held by an attempt that died before finishing."""
    id_ = store.result_id(obj["bucket"], obj["name"], obj["generation"])
    return store.claim(id_, {key: str(obj[key]) for key in ("bucket", "name", "generation")})


def test_a_delivery_does_not_acknowledge_a_claim_another_attempt_holds(event_client, monkeypatch):
    """Acknowledged now, the upload would be lost if the holder died: the delivery fails, to be redelivered."""
    monkeypatch.setattr(predict_service, "CLAIM_WAIT_S", 1.0)
    obj = upload(LESIONS[0].read_bytes())
    dead = held_claim(obj)
    assert send(event_client, storage_event(obj)) == 500
    assert (result_for(obj)["status"], result_for(obj)["claim_id"]) == ("pending", dead)


def test_a_delivery_takes_over_a_claim_that_turns_stale_while_it_waits(event_client):
    """The holder's claim turns stale (store.STALE_CLAIM) during the wait: this delivery takes it over and
    answers, instead of failing and waiting out a longer backoff for the next one."""
    obj = upload(LESIONS[0].read_bytes())
    dead = held_claim(obj)
    doc = store.prediction(store.result_id(obj["bucket"], obj["name"], obj["generation"]))
    stale = threading.Timer(1.0, doc.update, [{"claimed_at": datetime.now(UTC) - store.STALE_CLAIM * 2}])
    stale.start()
    try:
        assert send(event_client, storage_event(obj)) == 200
    finally:
        stale.join()
    assert result_for(obj)["status"] == "done" and result_for(obj)["claim_id"] != dead


def test_concurrent_identical_events_make_one_result(event_client, assess_calls):
    obj = upload(LESIONS[2].read_bytes())
    event = storage_event(obj)
    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(lambda _: send(event_client, event), range(10)))
    assert codes == [200] * 10
    assert len(all_results()) == 1 and len(assess_calls) == 1
    assert result_for(obj)["status"] == "done"


def test_unexpected_error_in_assess_is_recorded_not_retried(event_client, monkeypatch):
    def broken(data, model, patient):
        raise RuntimeError("bug")

    monkeypatch.setattr(predict_service, "assess", broken)
    obj = upload(LESIONS[0].read_bytes())
    assert send(event_client, storage_event(obj)) == 200
    assert (result_for(obj)["status"], result_for(obj)["reason"]) == ("failed", "internal_error")


def test_transient_error_fails_the_event_and_a_retry_succeeds(event_client, monkeypatch):
    def unavailable(*args):
        raise ServiceUnavailable("storage is down")

    obj = upload(LESIONS[0].read_bytes())
    with monkeypatch.context() as patch:
        patch.setattr(store, "read_upload", unavailable)
        assert send(event_client, storage_event(obj)) == 500  # the platform will redeliver
    assert result_for(obj) is None  # the claim was given back
    assert send(event_client, storage_event(obj)) == 200
    assert result_for(obj)["status"] == "done"


def test_a_stale_claim_is_taken_over():
    upload_info = {"bucket": "b", "name": "n", "generation": "1"}
    assert store.claim("stale", upload_info)
    assert not store.claim("stale", upload_info)  # the first attempt may still be working
    store.prediction("stale").update({"claimed_at": datetime(2020, 1, 1, tzinfo=UTC)})
    assert store.claim("stale", upload_info)  # that attempt died: the retry takes over


# --- HTTP -------------------------------------------------------------------------------------------------

def post_image(client, data: bytes, content_type: str = "image/jpeg", **kwargs):
    return client.post("/predict", data=data, content_type=content_type, **kwargs)


def test_http_post_answers_like_the_event_path(http_client, event_client):
    data = LESIONS[3].read_bytes()
    response = post_image(http_client, data, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in response.headers.get_all("Vary")
    body = response.get_json()
    assert body["status"] == "done" and body["source"] == "http" and len(body["token"]) >= 32
    assert base64.b64decode(body["heatmap_png_base64"]).startswith(b"\x89PNG")
    assert "owner_token_sha256" not in body and "upload" not in body
    doc = store.get_result(body["id"])
    assert doc["owner_token_sha256"] == hashlib.sha256(body["token"].encode()).hexdigest()
    assert_matches_model(doc, data)

    obj = upload(data)
    assert send(event_client, storage_event(obj)) == 200
    assert stable(body) == stable(result_for(obj))
    # The stored object is marked so that its own finalize event is skipped.
    stored = store.storage_client().bucket(doc["upload"]["bucket"]).get_blob(doc["upload"]["name"])
    assert stored.metadata[predict_service.SOURCE_KEY] == "http"


def test_http_multipart_field_image(http_client):
    response = http_client.post("/", data={"image": (io.BytesIO(LESIONS[4].read_bytes()), "mole.jpg",
                                                     "image/jpeg")}, content_type="multipart/form-data")
    assert response.status_code == 200 and response.get_json()["status"] == "done"


@pytest.mark.parametrize("name", ["text", "truncated_jpeg", "heic_header", "bomb_png"])
def test_http_bad_image_is_a_valid_answer(http_client, name):
    data, status, reason = BAD_INPUTS[name]
    response = post_image(http_client, data)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["reason"]) == (status, reason) and "heatmap_png_base64" not in body


def http_uploads() -> set[str]:
    return {blob.name for blob in store.storage_client().list_blobs(settings().uploads_bucket, prefix="http/")}


@pytest.mark.parametrize("name", ["text", "png_1x1", "bomb_png"])
def test_a_photo_the_checks_refuse_is_never_stored(http_client, name):
    """Only an answered photo is kept: a refused POST leaves nothing in the uploads bucket, and its result (which
    the token still reads and deletes) names no upload."""
    before = http_uploads()
    body = post_image(http_client, BAD_INPUTS[name][0]).get_json()
    assert body["status"] == "rejected"
    assert http_uploads() == before
    assert "upload" not in store.get_result(body["id"])
    assert http_client.delete(f"/results/{body['id']}", headers={"X-DeepSkin-Token": body["token"]}).get_json()[
        "deleted"] == {"objects": [], "documents": [f"{store.PREDICTIONS}/{body['id']}"]}
    answered = post_image(http_client, LESIONS[2].read_bytes()).get_json()
    assert http_uploads() - before == {store.get_result(answered["id"])["upload"]["name"]}


def test_http_refuses_what_is_not_an_image_upload(http_client):
    assert post_image(http_client, b"").status_code == 400
    assert post_image(http_client, b"hello", content_type="text/plain").status_code == 415
    assert post_image(http_client, b"{}", content_type="application/json").status_code == 415
    assert http_client.post("/", data={"file": (io.BytesIO(b"x"), "x.jpg")},
                            content_type="multipart/form-data").status_code == 400
    assert all_results() == []


def test_http_oversize_body_is_413(http_client):
    just_over = b"\xff\xd8\xff" + b"\0" * checks.MAX_BYTES
    assert post_image(http_client, just_over).status_code == 413
    # A declared length over the limit is refused without reading the body.
    response = http_client.post("/predict", input_stream=io.BytesIO(b"\xff\xd8\xff"), content_type="image/jpeg",
                                environ_overrides={"CONTENT_LENGTH": str(10 * checks.MAX_BYTES)})
    assert response.status_code == 413
    assert all_results() == []


def test_cors_preflight(http_client):
    allowed = http_client.options("/predict", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-DeepSkin-Token" in allowed.headers["Access-Control-Allow-Headers"]
    assert "Origin" in allowed.headers.get_all("Vary")
    evil = "https://evil.example"
    refused = http_client.options("/predict", headers={"Origin": evil, "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    answer = post_image(http_client, BAD_INPUTS["text"][0], headers={"Origin": evil})
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_get_and_delete_need_the_token(http_client):
    body = post_image(http_client, LESIONS[5].read_bytes()).get_json()
    id_, token = body["id"], body["token"]
    path = f"/results/{id_}"
    store.firestore_client().collection(store.FEEDBACK).document("fb1").set(
        {"prediction_id": id_, "label": "nv", **store.lifecycle_fields()})

    for headers in ({}, {"X-DeepSkin-Token": "wrong"}):
        assert http_client.get(path, headers=headers).status_code == 404
        assert http_client.get(f"{path}/heatmap", headers=headers).status_code == 404
        assert http_client.delete(path, headers=headers).status_code == 404
    unknown = http_client.get(f"/results/{'0' * 32}", headers={"X-DeepSkin-Token": token})
    assert unknown.status_code == 404 and unknown.get_json() == http_client.get(path).get_json()

    got = http_client.get(path, headers={"X-DeepSkin-Token": token})
    assert got.status_code == 200
    assert {k: v for k, v in got.get_json().items() if k != "id"} == {
        k: v for k, v in body.items() if k not in ("id", "token", "heatmap_png_base64")}
    # The token is a header only: in a URL it would land in request logs and browser history.
    assert http_client.get(f"{path}?token={token}").status_code == 404
    assert http_client.get(f"{path}/heatmap?token={token}").status_code == 404
    heatmap = http_client.get(f"{path}/heatmap", headers={"X-DeepSkin-Token": token})
    assert heatmap.status_code == 200 and heatmap.mimetype == "image/png"
    assert heatmap.data == base64.b64decode(body["heatmap_png_base64"])

    doc = store.get_result(id_)
    deleted = http_client.delete(path, headers={"X-DeepSkin-Token": token})
    assert deleted.status_code == 200
    upload_path = f"gs://{doc['upload']['bucket']}/{doc['upload']['name']}"
    assert deleted.get_json()["deleted"] == {
        "objects": [upload_path, doc["heatmap"]],
        "documents": [f"{store.PREDICTIONS}/{id_}", f"{store.FEEDBACK}/fb1"],
    }
    gcs = store.storage_client()
    assert gcs.bucket(doc["upload"]["bucket"]).get_blob(doc["upload"]["name"]) is None
    assert not store.heatmap_blob(id_).exists()
    assert store.get_result(id_) is None
    feedback = store.firestore_client().collection(store.FEEDBACK)
    assert list(feedback.where(filter=firestore.FieldFilter("prediction_id", "==", id_)).stream()) == []
    assert http_client.get(path, headers={"X-DeepSkin-Token": token}).status_code == 404


def test_event_result_is_readable_with_the_token_the_uploader_holds(http_client, event_client):
    token = "capability-token-issued-with-the-signed-url"
    obj = upload(LESIONS[0].read_bytes(), metadata={results.TOKEN_KEY: results.token_sha256(token)})
    assert send(event_client, storage_event(obj)) == 200
    id_ = store.result_id(obj["bucket"], obj["name"], obj["generation"])
    response = http_client.get(f"/results/{id_}", headers={"X-DeepSkin-Token": token})
    assert response.status_code == 200 and response.get_json()["source"] == "event"


# --- patient facts and one assessment path ----------------------------------------------------------------

PHONE = sorted((REPO / "tests" / "fixtures" / "phone").glob("*.jpg"))
FACTS = {"age": 70.0, "sex": "male", "site": "face"}


def test_upload_metadata_carries_patient_facts(event_client):
    data = PHONE[0].read_bytes()
    obj = upload(data, metadata={results.patient_key(k): str(v) for k, v in FACTS.items()})
    assert send(event_client, storage_event(obj)) == 200
    doc = result_for(obj)
    assert doc["status"] == "done" and doc["patient"] == FACTS
    direct = assess(data, served_model(), PatientInfo(**FACTS))
    assert doc["probabilities"] == pytest.approx(direct.probabilities, abs=1e-6)


def test_bad_upload_metadata_is_a_named_refusal(event_client):
    obj = upload(PHONE[0].read_bytes(), metadata={results.patient_key("age"): "two hundred"})
    assert send(event_client, storage_event(obj)) == 200
    doc = result_for(obj)
    assert (doc["status"], doc["reason"]) == ("rejected", "invalid_patient_info") and "age" in doc["message"]


def test_http_patient_facts_as_fields_or_query(http_client):
    data = PHONE[1].read_bytes()
    form = http_client.post("/", data={"image": (io.BytesIO(data), "p.jpg", "image/jpeg"), "age": "70",
                                       "sex": "male", "site": "face"}, content_type="multipart/form-data")
    query = http_client.post("/?age=70&sex=male&site=face", data=data, content_type="image/jpeg")
    for response in (form, query):
        assert response.status_code == 200 and response.get_json()["patient"] == FACTS
    assert stable(form.get_json()) == stable(query.get_json())
    bad = http_client.post("/?sex=unknown-value", data=data, content_type="image/jpeg")
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_patient_info"
    assert "sex" in bad.get_json()["detail"]


ANSWERS = {"changed": "no", "grew": "yes", "bled": "no", "itches": "yes", "hurts": "no", "raised": "yes"}


def test_answers_travel_as_upload_metadata_form_fields_or_query(http_client, event_client):
    """The questions about the lesion on both ways in: the same answers, the same assessment as the core's."""
    data = PHONE[2].read_bytes()
    direct = assess(data, served_model(), PatientInfo.parse(**FACTS, **ANSWERS))
    assert direct.malignant_probability != assess(data, served_model(), PatientInfo(**FACTS)).malignant_probability
    obj = upload(data, metadata={results.patient_key(k): str(v) for k, v in {**FACTS, **ANSWERS}.items()})
    assert send(event_client, storage_event(obj)) == 200
    form = http_client.post("/", data={"image": (io.BytesIO(data), "p.jpg", "image/jpeg"), **ANSWERS,
                                       "age": "70", "sex": "male", "site": "face"}, content_type="multipart/form-data")
    query = http_client.post("/", query_string={**FACTS, **ANSWERS}, data=data, content_type="image/jpeg")
    answers = [result_for(obj), form.get_json(), query.get_json()]
    for answer in answers:
        assert answer["status"] == "done" and answer["patient"] == {**FACTS, **ANSWERS}
        assert answer["malignant_probability"] == pytest.approx(direct.malignant_probability, abs=1e-6)
        assert answer["risk"] == direct.risk != "low"  # it grew: never "low"


@pytest.mark.parametrize("question", list(ANSWERS))
def test_a_bad_answer_is_a_named_refusal_on_every_way_in(http_client, event_client, question):
    data = PHONE[0].read_bytes()
    bad = http_client.post("/", query_string={question: "often"}, data=data, content_type="image/jpeg")
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_patient_info"
    assert bad.get_json()["detail"].startswith(f"{question} must be yes, no or not sure")
    form = http_client.post("/", data={"image": (io.BytesIO(data), "p.jpg", "image/jpeg"), question: "often"},
                            content_type="multipart/form-data")
    assert form.status_code == 400 and form.get_json()["error"] == "invalid_patient_info"
    obj = upload(data, metadata={results.patient_key(question): "often"})
    assert send(event_client, storage_event(obj)) == 200
    doc = result_for(obj)
    assert (doc["status"], doc["reason"]) == ("rejected", "invalid_patient_info")
    assert doc["message"].startswith(f"{question} must be")


def test_every_path_gives_the_same_answer_for_the_same_bytes(http_client, event_client):
    """One assessment path: the storage event, the HTTP function, batch_predict and the scorer of the evaluation
    report and the promotion gate (training.evaluate.score_set) answer the same bytes alike."""
    images = PHONE + LESIONS[:3]
    model = served_model()
    rows = {r["image_id"]: r for r in batch_predict.score_folder(images, model)}
    table = pd.DataFrame({"image_id": [p.stem for p in images], "path": [str(p) for p in images], "dx": "nv",
                          "group": "g", "lesion": True, "age": None, "sex": None, "site": None})
    gate = evaluate.score_set(table, model, with_metadata=False)
    for path in images:
        body = post_image(http_client, path.read_bytes()).get_json()
        obj = upload(path.read_bytes())
        assert send(event_client, storage_event(obj)) == 200
        event = results.public_fields(result_for(obj))
        answers = {"event": (event, event["probabilities"]),
                   "batch_predict": (rows[path.stem], rows[path.stem]),
                   "evaluate/gate": (gate.loc[path.stem].to_dict(), gate.loc[path.stem].to_dict())}
        for where, (answer, probabilities) in answers.items():
            assert answer["status"] == body["status"] == "done", where
            assert answer["risk"] == body["risk"] and answer["top_class"] == body["top_class"], where
            assert answer["image_type"] == body["image_type"], where
            for name in body["probabilities"]:  # batched vs single inference differ in float rounding only
                assert float(probabilities[name]) == pytest.approx(body["probabilities"][name], abs=1e-5), where
            malignant = answer.get("malignant", answer.get("malignant_probability"))
            assert float(malignant) == pytest.approx(body["malignant_probability"], abs=1e-5), where