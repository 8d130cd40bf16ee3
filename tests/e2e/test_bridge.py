"""The bridge's CloudEvents are Eventarc's: checked by parsing them and by serving them to real functions."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from cloudevents.http import from_http
from functions_framework import create_app
from google.cloud import pubsub_v1

from local.bridge import PUBSUB_PUBLISHED, STORAGE_FINALIZED, Bridge, pubsub_event, pubsub_route, storage_event
from local.emulators import create_subscription, create_topic

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


SLOW_S = 12


class SlowFunction(BaseHTTPRequestHandler):
    """Answers 204 after SLOW_S: longer than Pub/Sub's default ack deadline of 10 s. Counts the calls."""
    calls: ClassVar[list[float]] = []

    def do_POST(self):
        self.calls.append(time.monotonic())
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(SLOW_S)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


def test_a_delivery_slower_than_ten_seconds_is_not_handed_out_twice(emulators):
    """The subscriptions' ack deadline outlasts a delivery: a second copy of a message still in flight would
    fail against the first one's claim and count as a failed attempt, until the message was dead-lettered."""
    project = emulators["GOOGLE_CLOUD_PROJECT"]
    topic, subscription = f"slow-{uuid.uuid4().hex[:8]}", f"slow-{uuid.uuid4().hex[:8]}"
    create_topic(topic, project, emulators["PUBSUB_EMULATOR_HOST"])
    create_subscription(subscription, topic, project, emulators["PUBSUB_EMULATOR_HOST"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowFunction)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    route = pubsub_route(project, topic, subscription, f"http://127.0.0.1:{server.server_port}/")
    bridge = Bridge(project, [route]).start()
    try:
        publisher = pubsub_v1.PublisherClient()
        publisher.publish(publisher.topic_path(project, topic), b"{}").result(timeout=30)
        deadline = time.monotonic() + 30
        while not SlowFunction.calls:
            assert time.monotonic() < deadline, "the message never reached the function"
            time.sleep(0.2)
        time.sleep(SLOW_S + 3)  # past the first call's answer, and past a 10 s deadline's redelivery
        assert len(SlowFunction.calls) == 1
    finally:
        bridge.stop()
        server.shutdown()
