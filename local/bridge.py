"""The local stand-in for Eventarc: pull Pub/Sub subscriptions and POST each message to a function as the
CloudEvent Eventarc would send (binary content mode).

- `uploads-predict` (fake-gcs-server's object-finalize notifications) -> on_upload as
  google.cloud.storage.object.v1.finalized, body = the object's JSON resource.
- `feedback-retrain` -> retrain_trigger's on_feedback as google.cloud.pubsub.topic.v1.messagePublished.

A message is acked only when the function answers 2xx. Otherwise its ack deadline is set to RETRY_DELAY_S,
doubled at each failed attempt, so Pub/Sub redelivers it after a pause: Eventarc's retry with exponential
backoff, without a hot loop on a failing function.
A route with a dead-letter URL gets Pub/Sub's dead lettering too: after MAX_DELIVERY_ATTEMPTS failed
deliveries the message goes, as it came, to that URL as a messagePublished event, and is acked once it is there.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from google.cloud import pubsub_v1

log = logging.getLogger(__name__)

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
RETRY_DELAY_S = 5
MAX_RETRY_DELAY_S = 600  # Pub/Sub's longest backoff, as infra/pubsub.tf sets it
# With the doubling delays these attempts span about 10 minutes: longer than a function restart or a stale
# claim's takeover (store.STALE_CLAIM), so that only an upload that keeps failing is dead-lettered.
MAX_DELIVERY_ATTEMPTS = 8
DEAD_LETTER_TOPIC = "uploads-dead"
DELIVERY_TIMEOUT_S = 70  # the functions time out at 60 s in the cloud
# The subscriptions' ack deadline outlasts any delivery, as Eventarc's push subscriptions wait for the function's
# answer. At Pub/Sub's default of 10 s, a delivery that waits (a duplicate waiting CLAIM_WAIT_S for the claim's
# holder, a busy function) had its deadline expire mid-call: Pub/Sub handed out a second copy, whose failure
# counted as another attempt, until the message was dead-lettered within a minute or two.
ACK_DEADLINE_S = DELIVERY_TIMEOUT_S + 10
PULL_TIMEOUT_S = 30  # the emulator answers an empty pull after ~4 s on its own

Headers = dict[str, str]
Event = tuple[Headers, bytes]


def rfc3339(message: pubsub_v1.types.PubsubMessage) -> str:
    return message.publish_time.rfc3339()


def storage_event(message: pubsub_v1.types.PubsubMessage) -> Event:
    """A GCS JSON_API_V1 notification -> Eventarc's storage CloudEvent: the object resource is the body."""
    obj = json.loads(message.data)
    headers = {
        "ce-id": message.message_id,
        "ce-specversion": "1.0",
        "ce-type": STORAGE_FINALIZED,
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{obj['bucket']}",
        "ce-subject": f"objects/{obj['name']}",
        # Eventarc stamps the object's update time; the notification's eventTime has whole seconds only.
        "ce-time": obj.get("updated") or message.attributes.get("eventTime") or rfc3339(message),
        "Content-Type": "application/json; charset=utf-8",
    }
    return headers, json.dumps(obj).encode()


def pubsub_event(message: pubsub_v1.types.PubsubMessage, project: str, topic: str, subscription: str) -> Event:
    """A Pub/Sub message -> Eventarc's messagePublished CloudEvent (MessagePublishedData as the body)."""
    published = rfc3339(message)
    body = {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "messageId": message.message_id,
            "publishTime": published,
            # Eventarc sends the snake_case spellings too; some handlers read those.
            "message_id": message.message_id,
            "publish_time": published,
        },
        "subscription": f"projects/{project}/subscriptions/{subscription}",
    }
    headers = {
        "ce-id": message.message_id,
        "ce-specversion": "1.0",
        "ce-type": PUBSUB_PUBLISHED,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-time": published,
        "Content-Type": "application/json; charset=utf-8",
    }
    return headers, json.dumps(body).encode()


@dataclass(frozen=True)
class Route:
    """One subscription delivered to one function URL."""
    subscription: str
    url: str
    to_event: Callable[[pubsub_v1.types.PubsubMessage], Event]
    dead_letter: Callable[[pubsub_v1.types.PubsubMessage], Event] | None = None
    dead_letter_url: str | None = None


def storage_route(subscription: str, url: str, project: str | None = None, dead_letter_url: str | None = None
                  ) -> Route:
    """With `dead_letter_url`: exhausted notifications go there as messages of the DEAD_LETTER_TOPIC."""
    def dead_letter(message: pubsub_v1.types.PubsubMessage) -> Event:
        return pubsub_event(message, project, DEAD_LETTER_TOPIC, f"{DEAD_LETTER_TOPIC}-predict")

    return Route(subscription, url, storage_event, dead_letter if dead_letter_url else None, dead_letter_url)


def pubsub_route(project: str, topic: str, subscription: str, url: str) -> Route:
    return Route(subscription, url, lambda message: pubsub_event(message, project, topic, subscription))


class Bridge:
    """Pull loops, one thread per route; deliveries run on a small pool so that one slow call blocks no pull."""

    def __init__(self, project: str, routes: list[Route], workers: int = 8):
        self.project = project
        self.routes = routes
        self.subscriber = pubsub_v1.SubscriberClient()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bridge-delivery")
        self.http = requests.Session()
        self.stopping = threading.Event()
        self.attempts: dict[str, int] = {}  # failed deliveries per message id: backoff and dead lettering
        self.attempts_lock = threading.Lock()
        self.threads = [threading.Thread(target=self.pump, args=(route,), name=f"bridge-{route.subscription}",
                                         daemon=True) for route in routes]

    def start(self) -> Bridge:
        for thread in self.threads:
            thread.start()
        return self

    def alive(self) -> bool:
        return bool(self.threads) and all(thread.is_alive() for thread in self.threads)

    def pump(self, route: Route) -> None:
        path = self.subscriber.subscription_path(self.project, route.subscription)
        while not self.stopping.is_set():
            try:
                response = self.subscriber.pull(subscription=path, max_messages=10, timeout=PULL_TIMEOUT_S)
            except Exception:  # pylint: disable=broad-except
                if self.stopping.is_set():
                    return  # stop() closed the channel under the pending pull
                log.warning("pull %s failed; retrying", route.subscription, exc_info=True)
                self.stopping.wait(1)
                continue
            for received in response.received_messages:
                self.pool.submit(self.deliver, route, path, received)

    def post(self, url: str, event: Event) -> tuple[bool, str]:
        """(delivered, what happened)."""
        headers, body = event
        try:
            status = self.http.post(url, data=body, headers=headers, timeout=DELIVERY_TIMEOUT_S).status_code
        except requests.RequestException as exc:
            return False, str(exc)
        return 200 <= status < 300, f"HTTP {status}"

    def failed(self, message: pubsub_v1.types.PubsubMessage) -> int:
        """Count a failed delivery of `message`; how many there have been."""
        with self.attempts_lock:
            attempts = self.attempts[message.message_id] = self.attempts.get(message.message_id, 0) + 1
        return attempts

    def exhausted(self, route: Route, message: pubsub_v1.types.PubsubMessage, attempts: int) -> bool:
        """True when that was the last attempt and the message is now with the dead letter."""
        if route.dead_letter is None or attempts < MAX_DELIVERY_ATTEMPTS:
            return False
        forwarded, reason = self.post(route.dead_letter_url, route.dead_letter(message))
        log.warning("%s: message %s dead-lettered after %d attempts: %s", route.subscription, message.message_id,
                    attempts, reason)
        return forwarded

    def deliver(self, route: Route, path: str, received: pubsub_v1.types.ReceivedMessage) -> None:
        delivered, reason = self.post(route.url, route.to_event(received.message))
        attempts = 0 if delivered else self.failed(received.message)
        try:
            if delivered or self.exhausted(route, received.message, attempts):
                with self.attempts_lock:
                    self.attempts.pop(received.message.message_id, None)
                self.subscriber.acknowledge(subscription=path, ack_ids=[received.ack_id])
                return
            delay = min(RETRY_DELAY_S * 2 ** (attempts - 1), MAX_RETRY_DELAY_S)
            log.warning("%s -> %s: %s; redelivery in %d s", route.subscription, route.url, reason, delay)
            self.subscriber.modify_ack_deadline(subscription=path, ack_ids=[received.ack_id],
                                                ack_deadline_seconds=delay)
        except Exception:  # pylint: disable=broad-except
            if not self.stopping.is_set():
                log.warning("ack for %s failed; Pub/Sub will redeliver", route.subscription, exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
        self.subscriber.close()  # aborts the pending pulls at once instead of waiting out their long poll
        for thread in self.threads:
            thread.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()
