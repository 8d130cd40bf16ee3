"""The permission table (infra/permissions.py) against the calls each identity's code makes.

Each test runs one identity's flows against the emulators as that identity (iam_support.acting_as: the
table enforced the way Cloud Storage IAM would, every storage and Firestore call recorded), then checks
both ways: no call outside the table, and no grant in the table that the flows never use. The table
against iam.tf is tests/infra/test_iam_matches_permissions.py.
"""

# pylint: disable=use-implicit-booleaness-not-comparison  # `== []` shows what was found in the diff

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import permissions
import pytest
from feedback_support import (
    CLINICIAN,
    LESIONS,
    RETRAIN_SUBSCRIPTION,
    candidate_from_served,
    deliver,
    predictions,
    pubsub_event,
    pull,
    redeliver_pulled,
    report,
)
from google.api_core.exceptions import Forbidden
from google.cloud import pubsub_v1
from iam_support import Calls, Died, acting_as

from deepskin.loop import launchers, ledger, promotion, sweeper
from deepskin.loop.labels import clinician_labels
from deepskin.services import registry, results, served_model, store
from deepskin.services.config import settings
from local import bridge
from training import promote


@pytest.fixture(autouse=True)
def registry_checked_now(monkeypatch):
    """The predict path asks the registry on its next request (the models bucket is part of its grants)."""
    monkeypatch.setattr(served_model, "_next_check", 0.0)


def assert_within_the_table(calls: Calls) -> None:
    assert calls.refused == []
    assert calls.firestore_outside_the_table() == set()


def assert_every_grant_used(calls: Calls) -> None:
    assert calls.unused_grants() == [] and calls.firestore_unused() == set()


def put_upload(data: bytes, token: str) -> dict:
    """A user's upload (the client's event path), as its finalize notification describes it."""
    blob = store.storage_client().bucket(settings().uploads_bucket).blob(f"perms/{uuid.uuid4()}.jpg")
    blob.metadata = {results.TOKEN_KEY: results.token_sha256(token)}
    blob.upload_from_string(data, content_type="image/jpeg")
    return dict(blob._properties)  # pylint: disable=protected-access


def storage_event(obj: dict) -> tuple[dict, bytes]:
    """The object's finalize event, as local/bridge.py delivers it to on_upload."""
    message = pubsub_v1.types.PubsubMessage(  # pylint: disable=no-member  # generated at import
        data=json.dumps(obj).encode(), message_id=uuid.uuid4().hex)
    return bridge.storage_event(message)


def labelled(id_: str, feedback_client, label: str = "mel") -> str:
    """A clinician's label on the result, as the feedback identity; the training copy's URI."""
    with acting_as("feedback") as calls:
        answer = feedback_client.post("/feedback", json=report(id_, role="clinician", label=label),
                                      headers=CLINICIAN)
    assert answer.status_code == 202 and calls.refused == []
    doc = store.firestore_client().collection(store.FEEDBACK).document(answer.get_json()["report_id"]).get()
    return doc.to_dict()["training_image"]


def test_predict_event(event_client):
    obj = put_upload(LESIONS[0].read_bytes(), "owner")
    headers, body = storage_event(obj)
    with acting_as("predict_event") as calls:
        assert event_client.post("/", headers=headers, data=body).status_code == 200
    assert store.get_result(store.result_id(obj["bucket"], obj["name"], obj["generation"]))["status"] == "done"
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


def test_predict_http_and_the_owners_delete_of_a_labelled_result(http_client, feedback_client):
    with acting_as("predict_http") as calls:
        answer = http_client.post("/predict", data=LESIONS[1].read_bytes(), content_type="image/jpeg").get_json()
        owner = {"X-DeepSkin-Token": answer["token"]}
        assert http_client.get(f"/results/{answer['id']}", headers=owner).status_code == 200
        assert http_client.get(f"/results/{answer['id']}/heatmap", headers=owner).status_code == 200
    copies = [labelled(answer["id"], feedback_client, label) for label in ("mel", "nv")]  # a correction: 2 copies
    with acting_as("predict_http", calls):
        deleted = http_client.delete(f"/results/{answer['id']}", headers=owner)
    assert deleted.status_code == 200 and set(copies) <= set(deleted.get_json()["deleted"]["objects"])
    assert not any(store.blob_at(copy).exists() for copy in copies)
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


DELETE_STEPS = {
    "the upload": lambda call: call.bucket == "uploads" and call.operation == permissions.DELETE,
    "the heatmap": lambda call: call.bucket == "results" and call.operation == permissions.DELETE,
    "the training copy": lambda call: call.bucket == "training" and call.operation == permissions.DELETE,
}


@pytest.mark.parametrize("step", [*DELETE_STEPS, "the reports"])
def test_a_delete_interrupted_after_any_step_finishes_on_retry(http_client, feedback_client, prediction, step,
                                                               monkeypatch):
    id_, token = prediction
    owner = {"X-DeepSkin-Token": token}
    copy = labelled(id_, feedback_client)
    upload = store.get_result(id_)["upload"]
    with acting_as("predict_http") as calls:
        if step in DELETE_STEPS:
            calls.cut = DELETE_STEPS[step]
        else:
            original = store.firestore.DocumentReference.delete

            def dies_after_the_first_report(ref, *args, **kwargs):
                original(ref, *args, **kwargs)
                if ref.parent.id == store.FEEDBACK:
                    raise Died("after deleting a report")

            monkeypatch.setattr(store.firestore.DocumentReference, "delete", dies_after_the_first_report)
        with pytest.raises(Died):
            http_client.delete(f"/results/{id_}", headers=owner)
        monkeypatch.undo()
        assert http_client.delete(f"/results/{id_}", headers=owner).status_code == 200
    assert_within_the_table(calls)
    left = [uri for uri in (copy, f"gs://{upload['bucket']}/{upload['name']}",
                            f"gs://{settings().results_bucket}/{store.HEATMAPS_PREFIX}{id_}.png")
            if store.blob_at(uri).exists()]
    reports = list(store.firestore_client().collection(store.FEEDBACK).stream())
    assert (left, reports, store.get_result(id_)) == ([], [], None)


def test_predict_dead_letter(dead_letter_client):
    obj = put_upload(LESIONS[2].read_bytes(), "owner")
    with acting_as("predict_dead") as calls:
        assert deliver(dead_letter_client, pubsub_event(json.dumps(obj).encode())) == 200
    assert store.get_result(store.result_id(obj["bucket"], obj["name"], obj["generation"]))["status"] == "failed"
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


def test_feedback_whose_instance_died_after_the_copy_is_published_on_retry(feedback_client, prediction):
    id_, _ = prediction
    body = report(id_, role="clinician")
    with acting_as("feedback") as calls:
        calls.cut = lambda call: call.bucket == "training"
        with pytest.raises(Died):
            feedback_client.post("/feedback", json=body, headers=CLINICIAN)
        retried = feedback_client.post("/feedback", json=body, headers=CLINICIAN)
    assert retried.status_code == 202, retried.get_json()
    [message] = pull(RETRAIN_SUBSCRIPTION)
    assert message.attributes["report_id"] == retried.get_json()["report_id"]
    assert store.blob_at(labelled_copy(retried.get_json()["report_id"])).exists()
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


def labelled_copy(report_id: str) -> str:
    return store.firestore_client().collection(store.FEEDBACK).document(report_id).get().to_dict()["training_image"]


def test_retrain_trigger(feedback_client, trigger_client, fake_launcher, monkeypatch):
    class Broken:
        def launch(self, job_id):
            raise RuntimeError("quota")

    made = predictions(4)
    for id_, _ in made:
        assert feedback_client.post("/feedback", json=report(id_, role="clinician"), headers=CLINICIAN
                                    ).status_code == 202
    messages = pull(RETRAIN_SUBSCRIPTION)
    with acting_as("retrain") as calls:
        with monkeypatch.context() as patch:
            patch.setattr(launchers, "launcher", Broken)
            redeliver_pulled(trigger_client, messages[:3])  # a failed launch gives the labels back
        redeliver_pulled(trigger_client, messages[3:])
    assert len(fake_launcher.launched) == 1
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


def test_sweeper(fake_launcher):
    store.claim("abandoned", {"bucket": "b", "name": "n", "generation": "1"})
    store.prediction("abandoned").update({"claimed_at": datetime.now(UTC) - store.ABANDONED_AFTER})
    ledger.state_doc().set({"active_job": "ended", "labels_at_last_job": 3})
    ledger.job_doc("ended").set({"status": "running", "launcher": launchers.launcher_name(), "handle": "fake ended",
                               "created_at": datetime.now(UTC) - timedelta(minutes=1), "labels_at_previous_job": 0})
    fake_launcher.ended.add("fake ended")
    with acting_as("sweeper") as calls:
        assert sweeper.sweep() == {"abandoned_results": ["abandoned"], "freed_job": "ended"}
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


def test_ops(ops_client, learning_loop):
    with acting_as("ops") as calls:
        answer = ops_client.get("/", headers=CLINICIAN)
    assert answer.status_code == 200 and answer.get_json()["current"] == learning_loop["version"]
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


def test_training_job(tmp_path, feedback_client, prediction):
    id_, _ = prediction
    labelled(id_, feedback_client)
    ledger.state_doc().set({"active_job": "job", "labels_at_last_job": 1})
    ledger.job_doc("job").set({"status": "queued", "labels_at_previous_job": 0})
    folder, version = candidate_from_served(tmp_path)
    with acting_as("training") as calls:
        images, dropped = clinician_labels(tmp_path / "scratch")
        ledger.mark_running("job", feedback_images=len(images))
        decision = promote.gate(folder, "job", {}, job_id="job")  # no held-out labels: it waits for a person
        ledger.finish("job", {"status": "done"})
    promotion.approve("job")  # a person's act, not the job's
    assert (len(images), dropped) == (1, 0) and decision["status"] == "approved_pending"
    assert registry.current()["version"] == version
    assert_within_the_table(calls)
    assert_every_grant_used(calls)


def test_the_harness_refuses_what_the_table_does_not_grant():
    """As Cloud Storage would: the feedback identity may not replace a copy, nor write outside feedback/."""
    name = f"feedback/{uuid.uuid4().hex}.jpg"
    with acting_as("feedback") as calls:
        training = store.storage_client().bucket(settings().training_bucket)
        training.blob(name).upload_from_string(b"first", if_generation_match=0)
        with pytest.raises(Forbidden):
            training.blob(name).upload_from_string(b"again")
        with pytest.raises(Forbidden):
            training.blob("ham10000/injected.jpg").upload_from_string(b"x", if_generation_match=0)
    assert [call.name for call in calls.refused] == [name, "ham10000/injected.jpg"]
    store.delete_blob(store.blob_at(f"gs://{settings().training_bucket}/{name}"))
