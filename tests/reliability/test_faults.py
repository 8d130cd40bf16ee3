"""Faults injected into the running local stack and the predict function; each test states what was lost.

Nothing may be lost: every upload ends with exactly one final result document, and a failed attempt leaves no
half-written result (its claim is released, or taken over once stale, and the event is redelivered).
tests/feedback already covers feedback messages redelivered to the retrain trigger one at a time in publish
order (test_redelivered_messages_count_once_and_an_active_job_blocks_another) and poison messages (the
dead-letter test); added here only: the same messages shuffled and repeated.
"""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from google.api_core.exceptions import Aborted, DeadlineExceeded
from google.cloud import firestore, pubsub_v1
from support import LESIONS, deliver_upload, kill_function, paused, put_object, restart_function, result_for

from benchmarks.load_test import FINAL, LoadRun
from deepskin.core.bundle import BUNDLED_MODEL, card_path
from deepskin.loop import ledger
from deepskin.services import predict_service, store
from deepskin.services.config import settings
from deepskin.services.served_model import use_model
from local import bridge

UPLOADS = 24
OUTAGE_S = 5


def upload_in_background(run: LoadRun, count: int) -> ThreadPoolExecutor:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload")
    for index in range(count):
        pool.submit(run.put, index, LESIONS[index % len(LESIONS)].read_bytes())
    return pool


def wait_for_final(run: LoadRun, at_least: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(doc.get("status") in FINAL for doc in run.documents().values()) < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} results in {timeout} s"
        time.sleep(0.2)


def wait_for_a_claim(run: LoadRun, timeout: float = 60.0) -> None:
    """Until an attempt holds a claim (a `pending` result): on a loaded machine the function can be idle between
    deliveries, and killed then it would orphan nothing."""
    deadline = time.monotonic() + timeout
    while not any(doc.get("status") == "pending" for doc in run.documents().values()):
        assert time.monotonic() < deadline, f"no upload was being assessed within {timeout} s"
        time.sleep(0.05)


def assert_exactly_one_answer_each(run: LoadRun, uploads: int) -> None:
    """One final document per upload, holding the model's answer: done, or `unusable` where the served model
    finds a fixture photo out of scope; never left pending (lost) or failed (a half-answer)."""
    # Failed deliveries back off 5 s, doubling (local.bridge): after a kill or an outage on a slow machine the
    # next redelivery of an event may be minutes away; waiting costs nothing once every upload has settled.
    documents = run.wait_until_settled(timeout=240)
    assert len(run.expected_ids) == uploads
    assert set(documents) == run.expected_ids, "a result is missing or one was written under another id"
    answers = {id_: doc["status"] for id_, doc in documents.items()}
    assert {id_: status for id_, status in answers.items() if status not in ("done", "unusable")} == {}


def age_claim(doc: firestore.DocumentReference, claimed_at: datetime, timeout: float = 90.0) -> None:
    """Backdate a claim. The killed process may have died inside a transaction on that document: the
    emulator then holds its lock until the transaction expires, and a write meanwhile is aborted."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc.update({"claimed_at": claimed_at})
            return
        except Aborted:
            assert time.monotonic() < deadline, f"{doc.id} still locked after {timeout} s"
            time.sleep(1)


def test_killed_upload_function_loses_nothing(running_stack, figure):
    """Lost: nothing. Events in flight fail at the bridge and are redelivered to the restarted function."""
    stack = running_stack.stack
    run = LoadRun(running_stack.gcs, running_stack.db)
    pool = upload_in_background(run, UPLOADS)
    wait_for_final(run, at_least=3)
    wait_for_a_claim(run)
    kill_function(stack, "on_upload")
    killed_at = datetime.now(UTC)
    pool.shutdown(wait=True)  # the rest arrive while the function is down
    restart_function(stack, "on_upload")
    # Let each orphaned event's redelivery reach the restarted function once: acknowledging it there, while
    # the dead process's claim is still `pending`, is how an upload would be lost.
    time.sleep(bridge.RETRY_DELAY_S + 3)
    # Those claims stay `pending` and their redeliveries fail (ClaimHeld) until the claim turns stale
    # (store.STALE_CLAIM, 120 s). Rather than wait that long, age exactly those claims: only the dead process
    # can have claimed before it was killed.
    orphaned = {doc_id: doc["claim_id"] for doc_id, doc in run.documents().items()
                if doc["status"] == "pending" and doc["claimed_at"] < killed_at}
    # At concurrency 4 the killed process held claims: this test is only about them if there were some.
    assert orphaned, "the kill orphaned no claim: nothing was taken over"
    for doc_id in orphaned:
        age_claim(running_stack.db.collection(store.PREDICTIONS).document(doc_id), killed_at - store.STALE_CLAIM)
    assert_exactly_one_answer_each(run, UPLOADS)
    documents = run.documents()
    taken_over = {doc_id for doc_id, claim_id in orphaned.items() if documents[doc_id]["claim_id"] != claim_id}
    assert taken_over == set(orphaned)  # each was finished by a redelivery that took the dead claim over
    figure("kill_uploads", UPLOADS)
    figure("kill_orphaned_claims", len(orphaned))


def test_firestore_outage_loses_nothing(running_stack, figure):
    """Lost: nothing. Firestore stops answering for 5 s mid-run; calls wait, then every upload completes.

    The emulator is paused (SIGSTOP), not restarted: it keeps its data in memory only, so a restart would
    erase every claim and result, which is the emulator losing data, not an outage of a service that keeps
    committed writes. A paused server also is the harder case: connections open but nothing answers.
    """
    run = LoadRun(running_stack.gcs, running_stack.db)
    pool = upload_in_background(run, UPLOADS)
    wait_for_final(run, at_least=3)
    with paused(running_stack.stack, "firestore"):
        time.sleep(OUTAGE_S)
    pool.shutdown(wait=True)
    assert_exactly_one_answer_each(run, UPLOADS)
    figure("outage_uploads", UPLOADS)
    figure("outage_seconds", OUTAGE_S)


@pytest.mark.usefixtures("clean_firestore")
@pytest.mark.parametrize("model_file", [None, b"not an onnx model"], ids=["missing", "corrupt"])
def test_missing_or_corrupt_model_fails_and_writes_no_result(event_client, http_client, monkeypatch, tmp_path,
                                                             caplog, model_file):
    """Lost: nothing. No result is written (no half-answer): the event fails, so it is retried, and the retry
    after the model is fixed is assessed; the HTTP request answers 500 and keeps no image without a result."""
    path = tmp_path / "deepskin.onnx"
    if model_file is not None:
        path.write_bytes(model_file)
        card_path(path).write_text(card_path(BUNDLED_MODEL).read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("DEEPSKIN_MODEL_PATH", str(path))
    monkeypatch.setenv("DEEPSKIN_MODEL_REGISTRY", "off")
    use_model(None)  # as a fresh instance: the model is loaded on first use
    obj = put_object(f"faults/{uuid.uuid4()}.jpg", LESIONS[0].read_bytes())
    http_uploads = uploads_from_http()
    try:
        assert deliver_upload(event_client, obj) == 500
        assert result_for(obj) is None  # the claim was released: no pending, failed or done document
        assert str(tmp_path) in caplog.text  # the error names the model's location
        assert http_client.post("/predict", data=LESIONS[0].read_bytes(), content_type="image/jpeg"
                                ).status_code == 500
        assert uploads_from_http() == http_uploads
        assert list(store.firestore_client().collection(store.PREDICTIONS).stream()) == []
    finally:
        monkeypatch.delenv("DEEPSKIN_MODEL_PATH")
        use_model(None)
    assert deliver_upload(event_client, obj) == 200
    assert result_for(obj)["status"] == "done"


@pytest.mark.usefixtures("clean_firestore")
def test_missing_results_bucket_fails_the_event_and_releases_the_claim(event_client, monkeypatch):
    """Lost: nothing. The heatmap cannot be written: no result (not even a pending claim) is left, the event
    fails so it is redelivered, and the redelivery once the bucket is back stores the whole result."""
    obj = put_object(f"faults/{uuid.uuid4()}.jpg", LESIONS[1].read_bytes())
    with monkeypatch.context() as patch:
        patch.setenv("DEEPSKIN_RESULTS_BUCKET", f"missing-{uuid.uuid4().hex[:8]}")
        assert deliver_upload(event_client, obj) == 500
    assert result_for(obj) is None
    assert deliver_upload(event_client, obj) == 200
    doc = result_for(obj)
    assert doc["status"] == "done" and doc["heatmap"].startswith(f"gs://{settings().results_bucket}/")


def uploads_from_http() -> set[str]:
    return {blob.name for blob in store.storage_client().list_blobs(settings().uploads_bucket, prefix="http/")}


# --- the retrain trigger ------------------------------------------------------------------------------------

RETRAIN_SUBSCRIPTION = "feedback-retrain"  # local/emulators.py: the stand-in for the Eventarc subscription


def pull_all(subscription: str) -> list:
    """Every message waiting on the subscription, acknowledged (the trigger is fed by hand below)."""
    client = pubsub_v1.SubscriberClient()
    path = client.subscription_path(settings().project, subscription)
    received = []
    while True:
        try:
            batch = client.pull(subscription=path, max_messages=100, timeout=2).received_messages
        except DeadlineExceeded:
            batch = []
        if not batch:
            return received
        client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in batch])
        received += [m.message for m in batch]


@pytest.mark.usefixtures("clean_firestore")
def test_shuffled_redeliveries_count_each_label_once(feedback_client, trigger_client, fake_launcher, clinician,
                                                      monkeypatch, figure):
    """Lost: nothing, doubled: nothing. Six clinician labels, on six predictions, arrive three times each in
    shuffled order: six labels counted, one training job. One at a time, as the deployed trigger receives them
    (one instance, concurrency 1: infra/functions.tf), so that the ledger is never written by two deliveries
    at once."""
    monkeypatch.setenv("DEEPSKIN_RETRAIN_MIN_LABELS", "5")
    pull_all(RETRAIN_SUBSCRIPTION)  # what earlier tests published
    for key in range(6):  # six predictions: one clinician's label counts once per prediction
        prediction = predict_service.predict_bytes(LESIONS[key % len(LESIONS)].read_bytes(), "image/jpeg", "token")
        report = {"prediction_id": prediction.id, "label": "mel", "role": "clinician", "idempotency_key": str(key)}
        assert feedback_client.post("/feedback", json=report, headers=clinician
                                    ).status_code == 202
    messages = pull_all(RETRAIN_SUBSCRIPTION)
    assert len(messages) == 6
    deliveries = messages * 3
    random.Random(7).shuffle(deliveries)
    for message in deliveries:
        headers, body = bridge.pubsub_event(message, settings().project, settings().feedback_topic,
                                            RETRAIN_SUBSCRIPTION)
        assert trigger_client.post("/", headers=headers, data=body).status_code == 200
    state = ledger.state_doc().get().to_dict()
    assert state["training_labels"] == 6 and len(fake_launcher.launched) == 1
    assert state["active_job"] == fake_launcher.launched[0]
    figure("shuffled_labels", len(messages))
    figure("shuffled_deliveries", len(deliveries))
    figure("shuffled_jobs", len(fake_launcher.launched))
