"""Helpers for the feedback-loop tests: reports, Pub/Sub pulls, Eventarc-shaped Pub/Sub events."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from google.api_core.exceptions import DeadlineExceeded
from google.cloud import pubsub_v1

from deepskin.core.bundle import BUNDLED_MODEL, card_path, load_card
from deepskin.loop import ledger
from deepskin.services import predict_service, registry, store
from deepskin.services.config import settings

REPO = Path(__file__).resolve().parents[2]
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))
CLINICIAN_KEY = "local-clinician-key-for-tests"
CLINICIAN = {"X-DeepSkin-Clinician": CLINICIAN_KEY}  # the headers of a request from that clinician
RETRAIN_SUBSCRIPTION = "feedback-retrain"
DEAD_SUBSCRIPTION = "feedback-dead-store"


def report(prediction_id: str, **fields) -> dict:
    return {"prediction_id": prediction_id, "label": "mel", "role": "user", "histopathology": False,
            "idempotency_key": uuid.uuid4().hex, **fields}


def subscriber() -> pubsub_v1.SubscriberClient:
    return pubsub_v1.SubscriberClient()


def pull(subscription: str) -> list:
    """Every message waiting on a subscription, acknowledged."""
    client = subscriber()
    path = client.subscription_path(settings().project, subscription)
    received = []
    while True:
        try:
            batch = client.pull(request={"subscription": path, "max_messages": 100}, timeout=1.5).received_messages
        except DeadlineExceeded:
            batch = []
        if not batch:
            return received
        client.acknowledge(request={"subscription": path, "ack_ids": [m.ack_id for m in batch]})
        received.extend(m.message for m in batch)


def pubsub_event(data: bytes | str, attributes: dict | None = None, message_id: str | None = None) -> CloudEvent:
    """A CloudEvent exactly as Eventarc delivers a Pub/Sub message (MessagePublishedData)."""
    encoded = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    message_id = message_id or str(uuid.uuid4().int)[:16]
    project = settings().project
    return CloudEvent({
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": f"//pubsub.googleapis.com/projects/{project}/topics/{settings().feedback_topic}",
        "id": message_id, "specversion": "1.0", "datacontenttype": "application/json",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }, {"message": {"data": encoded, "attributes": attributes or {}, "messageId": message_id,
                    "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z")},
        "subscription": f"projects/{project}/subscriptions/{RETRAIN_SUBSCRIPTION}"})


def deliver(client, event: CloudEvent) -> int:
    headers, body = to_binary(event)
    return client.post("/", headers=headers, data=body).status_code


def redeliver_pulled(client, messages) -> list[int]:
    """Hand pulled messages to the trigger, as Eventarc would."""
    return [deliver(client, pubsub_event(m.data, dict(m.attributes), m.message_id)) for m in messages]


def ledger_state() -> dict:
    return ledger.state_doc().get().to_dict() or {}


def all_jobs() -> dict[str, dict]:
    return {s.id: s.to_dict() for s in store.firestore_client().collection(ledger.JOBS).stream()}


def predictions(n: int) -> list[tuple[str, str]]:
    """n real predictions through the HTTP path: (result id, owner's token) each."""
    out = []
    for i in range(n):
        token = secrets.token_urlsafe(24)
        outcome = predict_service.predict_bytes(LESIONS[i % len(LESIONS)].read_bytes(), "image/jpeg", token)
        out.append((outcome.id, token))
    return out


def candidate_from_served(tmp_path: Path, **card_changes) -> tuple[Path, str]:
    """The served model's ONNX with a changed card: a candidate whose numbers we know in advance."""
    folder = tmp_path / "candidate"
    folder.mkdir(parents=True)
    shutil.copy(BUNDLED_MODEL, folder / registry.ONNX)
    card = load_card(BUNDLED_MODEL)
    version = f"test-{uuid.uuid4().hex[:8]}"
    card.update(version=version, **card_changes)
    card_path(folder / registry.ONNX).write_text(json.dumps(card), encoding="utf-8")
    return folder, version
