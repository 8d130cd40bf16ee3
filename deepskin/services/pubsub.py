"""Pub/Sub publishing: one publisher client per process."""

from __future__ import annotations

from google.cloud import pubsub_v1

from deepskin.services import store
from deepskin.services.config import settings


def publish_message(topic: str, data: bytes, attributes: dict[str, str]) -> str:
    """Publish and wait for the server's id, so a 202 means the message is in Pub/Sub."""
    client = publisher()
    return client.publish(client.topic_path(settings().project, topic), data, **attributes).result(timeout=30)


publisher = store.once(pubsub_v1.PublisherClient)
