"""A followed spot under retries, duplicates and crashes: a follow-up photo is listed once, and deleting the spot
leaves nothing behind in any store (support.every_store looks in every bucket and collection)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.api_core.exceptions import ServiceUnavailable
from support import LESIONS, deliver_upload, every_store, put_object, result_for

from deepskin.services import results, store
from deepskin.services.config import settings

LESION_TOKEN = "X-DeepSkin-Lesion-Token"

pytestmark = pytest.mark.usefixtures("clean_firestore")


def followed(http_client) -> dict:
    first = http_client.post("/predict", data=LESIONS[0].read_bytes(), content_type="image/jpeg").get_json()
    answer = http_client.post("/lesions", json={"result_id": first["id"], "consent": True, "months": 3},
                              headers={"X-DeepSkin-Token": first["token"]})
    assert answer.status_code == 201
    return answer.get_json()


def event_upload(event_client, token: str, deliveries: int) -> str:
    """A follow-up photo through the uploads bucket (`deepskin upload`), its storage event delivered `deliveries`
    times; the result's id."""
    obj = put_object(f"uploads/{uuid.uuid4()}.jpg", LESIONS[1].read_bytes(),
                     metadata={results.TOKEN_KEY: results.token_sha256(token)})
    for _ in range(deliveries):
        assert deliver_upload(event_client, obj) == 200
    assert result_for(obj)["status"] == "done"
    return store.result_id(obj["bucket"], obj["name"], obj["generation"])


def add(http_client, lesion: dict, result_id: str, token: str) -> int:
    return http_client.post(f"/lesions/{lesion['id']}/results", json={"result_id": result_id},
                            headers={LESION_TOKEN: lesion["token"], "X-DeepSkin-Token": token}).status_code


def lesion_photos(lesion_id: str) -> list[str]:
    return [b.name for b in store.storage_client().list_blobs(settings().results_bucket, prefix="lesions/")
            if f"/{lesion_id}/" in b.name]


def failing_once(monkeypatch, module, name: str) -> None:
    """`module.name` raises ServiceUnavailable on its first call (a crash mid-way), then works."""
    real, calls = getattr(module, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ServiceUnavailable("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)


def test_a_follow_up_upload_duplicated_or_retried_appears_once(http_client, event_client, monkeypatch):
    lesion = followed(http_client)
    token = "follow-up-owner"
    result_id = event_upload(event_client, token, deliveries=3)  # a duplicated and redelivered storage event
    original = store.get_result(result_id)["upload"]

    failing_once(monkeypatch, store, "delete_blob")  # the first add dies after copying, before deleting
    assert add(http_client, lesion, result_id, token) == 500
    assert add(http_client, lesion, result_id, token) == 200  # the client's retry
    with ThreadPoolExecutor(4) as pool:  # and a few duplicates at once
        assert set(pool.map(lambda _: add(http_client, lesion, result_id, token), range(4))) == {200}

    # Another photo added by several requests at once, none of them first: they contend for the lesion.
    other = http_client.post("/predict", data=LESIONS[2].read_bytes(), content_type="image/jpeg").get_json()
    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(lambda _: add(http_client, lesion, other["id"], other["token"]), range(4))) == {200}

    history = http_client.get(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]}).get_json()
    ids = [e["result_id"] for e in history["entries"]]
    assert ids.count(result_id) == ids.count(other["id"]) == 1 and len(ids) == 3
    assert len(lesion_photos(lesion["id"])) == 3  # one photo per result, however often it was added
    assert store.storage_client().bucket(original["bucket"]).get_blob(original["name"]) is None


def test_deleting_a_lesion_reaches_every_copy(http_client, event_client, feedback_client, clinician):
    before = every_store()
    lesion = followed(http_client)
    token = "follow-up-owner"
    result_id = event_upload(event_client, token, deliveries=2)
    with pytest.MonkeyPatch.context() as patch:
        failing_once(patch, store, "delete_blob")  # the original upload outlives a crashed move...
        assert add(http_client, lesion, result_id, token) == 500
    # ... and a copy that a crash left before its result named it.
    store.storage_client().bucket(settings().results_bucket).blob(
        f"lesions/92d/{lesion['id']}/{uuid.uuid4().hex}").upload_from_string(b"orphan")
    for role, headers in (("user", {"X-DeepSkin-Token": token}), ("clinician", clinician)):
        report = {"prediction_id": result_id, "label": "bcc", "role": role, "idempotency_key": role}
        answer = feedback_client.post("/feedback", json=report, headers=headers)
        assert answer.status_code == 202
    # The label is held out, or trained on, with the spot's other photos: its training copy names the spot.
    reported = store.firestore_client().collection(store.FEEDBACK).document(answer.get_json()["report_id"]).get()
    copy = store.blob_at(reported.to_dict()["training_image"])
    copy.reload()
    assert copy.metadata["group"] == lesion["id"]
    objects, documents = every_store()
    # 2 photos, the original left by the crash, the orphan, 2 heatmaps, the training copy; 2 results, 2 reports,
    # the lesion.
    assert (len(objects - before[0]), len(documents - before[1])) == (7, 5)

    answer = http_client.delete(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]})
    assert answer.status_code == 200
    assert every_store() == before
