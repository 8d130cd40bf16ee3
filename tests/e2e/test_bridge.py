"""The bridge's CloudEvents are Eventarc's: checked by parsing them and by serving them to real functions."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from cloudevents.http import from_http
from functions_framework import create_app
from google.cloud import pubsub_v1

from local.bridge import PUBSUB_PUBLISHED, STORAGE_FINALIZED, pubsub_event, storage_event

PUBLISHED_AT = datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
OBJECT = {"kind": "storage#object", "name": "uploads/a b.jpg", "bucket": "deepskin-uploads",
          "generation": "1795628624988832", "size": "5", "contentType": "image/jpeg",
          "updated": "2026-05-04T03:02:00.98882Z", "metadata": {"deepskin-token-sha256": "ab" * 32}}


def notification() -> pubsub_v1.types.PubsubMessage:
    """What fake-gcs-server (like GCS) publishes: JSON_API_V1 payload, attributes naming the object."""
    return pubsub_v1.types.PubsubMessage(
        data=json.dumps(OBJECT).encode(), message_id="42", publish_time=PUBLISHED_AT,
        attributes={"bucketId": OBJECT["bucket"], "objectId": OBJECT["name"], "eventType": "OBJECT_FINALIZE",
                    "objectGeneration": OBJECT["generation"], "eventTime": "2026-05-04T03:02:00Z",
                    "payloadFormat": "JSON_API_V1"})


def test_storage_event_has_eventarcs_attributes_and_the_object_as_data():
    headers, body = storage_event(notification())
    event = from_http(headers, body)
    assert event["specversion"] == "1.0"
    assert event["type"] == STORAGE_FINALIZED
    assert event["source"] == "//storage.googleapis.com/projects/_/buckets/deepskin-uploads"
    assert event["subject"] == "objects/uploads/a b.jpg"
    assert event["id"] == "42"
    assert event["time"] == OBJECT["updated"]
    assert event.data == OBJECT


def test_pubsub_event_wraps_the_message_like_eventarc():
    message = pubsub_v1.types.PubsubMessage(data=b'{"label": "mel"}', attributes={"role": "clinician"},
                                            message_id="7", publish_time=PUBLISHED_AT)
    headers, body = pubsub_event(message, "deepskin-local", "feedback", "feedback-retrain")
    event = from_http(headers, body)
    assert event["type"] == PUBSUB_PUBLISHED
    assert event["source"] == "//pubsub.googleapis.com/projects/deepskin-local/topics/feedback"
    assert event["id"] == "7"
    assert event["time"] == "2026-05-04T03:02:01.123Z"
    assert event.data["subscription"] == "projects/deepskin-local/subscriptions/feedback-retrain"
    published = event.data["message"]
    assert base64.b64decode(published["data"]) == b'{"label": "mel"}'
    assert published["attributes"] == {"role": "clinician"}
    assert published["messageId"] == published["message_id"] == "7"
    assert published["publishTime"] == published["publish_time"] == "2026-05-04T03:02:01.123Z"


def test_functions_framework_accepts_the_storage_event(tmp_path):
    """Served to a real functions-framework app, the event reaches the function with its data intact."""
    source = tmp_path / "main.py"
    source.write_text("import json\nimport pathlib\n\nimport functions_framework\n\n\n"
                      "@functions_framework.cloud_event\ndef on_upload(event):\n"
                      "    seen = {'type': event['type'], 'subject': event['subject'], 'data': event.data}\n"
                      "    (pathlib.Path(__file__).parent / 'seen.json').write_text(json.dumps(seen))\n")
    headers, body = storage_event(notification())
    response = create_app("on_upload", str(source), "cloudevent").test_client().post("/", headers=headers, data=body)
    assert response.status_code == 200
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"type": STORAGE_FINALIZED, "subject": "objects/uploads/a b.jpg", "data": OBJECT}
