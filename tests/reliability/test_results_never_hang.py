"""No result hangs in `pending`, and none is written over a claim this attempt no longer holds.

- `store.finish` writes only while the attempt still holds its claim: a result deleted meanwhile is not
  recreated (nor its heatmap kept), and an attempt whose claim was taken over writes nothing.
- The sweeper (deepskin.loop.sweeper) turns a claim untouched for `store.ABANDONED_AFTER` into `failed/abandoned`.
- The storage trigger's dead letter (on_upload_dead) gives an upload whose deliveries ran out a final result.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from support import LESIONS, deliver_upload, put_object, result_for

from deepskin.core import pipeline
from deepskin.services import predict_service, results, store

pytestmark = pytest.mark.usefixtures("clean_firestore")
UPLOAD = {"bucket": "b", "name": "n", "generation": "1"}


def age(id_: str, by) -> None:
    store.prediction(id_).update({"claimed_at": datetime.now(UTC) - by})


def test_finish_needs_the_claim_and_never_recreates_a_deleted_result():
    claim_id = store.claim("deleted", UPLOAD)
    store.prediction("deleted").delete()
    with pytest.raises(store.ClaimLost):
        store.finish("deleted", claim_id, {"status": "done"})
    assert store.get_result("deleted") is None


def test_an_attempt_whose_claim_was_taken_over_writes_nothing():
    first = store.claim("taken", UPLOAD)
    age("taken", store.STALE_CLAIM)
    second = store.claim("taken", UPLOAD)
    assert first and second and first != second
    with pytest.raises(store.ClaimLost):
        store.finish("taken", first, {"status": "done", "by": "first"})
    store.finish("taken", second, {"status": "done", "by": "second"})
    assert store.get_result("taken")["by"] == "second"


def test_a_result_deleted_while_it_is_assessed_leaves_nothing(event_client, http_client, monkeypatch):
    token = "owner-deletes-while-pending"
    obj = put_object(f"uploads/{uuid.uuid4()}.jpg", LESIONS[0].read_bytes(),
                     metadata={results.TOKEN_KEY: results.token_sha256(token)})
    id_ = store.result_id(obj["bucket"], obj["name"], obj["generation"])
    assess = pipeline.assess

    def owner_deletes_meanwhile(data, model, patient):
        assert http_client.delete(f"/results/{id_}", headers={"X-DeepSkin-Token": token}).status_code == 200
        return assess(data, model, patient)

    monkeypatch.setattr(predict_service, "assess", owner_deletes_meanwhile)
    assert deliver_upload(event_client, obj) == 200  # nothing left to do: acknowledged
    assert store.get_result(id_) is None and not store.heatmap_blob(id_).exists()


def test_the_sweeper_fails_abandoned_claims_with_a_reason():
    store.claim("abandoned", UPLOAD)
    store.claim("working", UPLOAD)
    age("abandoned", store.ABANDONED_AFTER)
    assert store.sweep_abandoned() == ["abandoned"]
    swept = store.get_result("abandoned")
    assert (swept["status"], swept["reason"]) == ("failed", "abandoned") and swept["message"]
    assert swept["expire_at"] and store.get_result("working")["status"] == "pending"


def dead_letter_event(obj: dict) -> tuple[dict, bytes]:
    """The undeliverable notification as Pub/Sub forwards it to the dead-letter topic's subscriber."""
    event = CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished", "id": uuid.uuid4().hex,
                        "source": "//pubsub.googleapis.com/projects/p/topics/uploads-dead", "specversion": "1.0"},
                       {"message": {"data": base64.b64encode(json.dumps(obj).encode()).decode(),
                                    "messageId": uuid.uuid4().hex}})
    return to_binary(event)


def test_an_upload_whose_deliveries_ran_out_gets_a_final_failed_result(dead_letter_client, http_client):
    token = "owner-of-an-undeliverable-upload"
    obj = put_object(f"uploads/{uuid.uuid4()}.jpg", LESIONS[1].read_bytes(),
                     metadata={results.TOKEN_KEY: results.token_sha256(token)})
    id_ = store.result_id(obj["bucket"], obj["name"], obj["generation"])
    store.claim(id_, {})  # the last attempt died holding its claim
    headers, body = dead_letter_event(obj)
    assert dead_letter_client.post("/", headers=headers, data=body).status_code == 200
    seen = http_client.get(f"/results/{id_}", headers={"X-DeepSkin-Token": token}).get_json()
    assert (seen["status"], seen["reason"]) == ("failed", "retries_exhausted") and seen["expire_at"]


def test_the_dead_letter_keeps_a_final_result(dead_letter_client, event_client):
    obj = put_object(f"uploads/{uuid.uuid4()}.jpg", LESIONS[2].read_bytes())
    assert deliver_upload(event_client, obj) == 200
    before = result_for(obj)
    headers, body = dead_letter_event(obj)
    assert dead_letter_client.post("/", headers=headers, data=body).status_code == 200
    assert result_for(obj) == before
