"""Retrain trigger (entry point on_feedback): Eventarc delivers each feedback-topic message as a CloudEvent.

deepskin.loop.ledger counts it in the ledger and starts a training job when enough clinician labels are new.
A message that can never be valid goes to the dead-letter topic and is acknowledged, so that it is not
redelivered forever; any other error propagates, so that Pub/Sub redelivers (and, after the
subscription's max attempts, dead-letters) it.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from deepskin.loop import ledger


@functions_framework.cloud_event
def on_feedback(cloud_event: CloudEvent) -> None:
    data = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    try:
        ledger.handle(message)
    except ledger.Poison as poison:
        ledger.dead_letter(message, poison.reason)
