"""Sweeper (entry point on_sweep): Cloud Scheduler publishes to the sweep topic every few minutes and
Eventarc delivers it here; locally, local/stack.py's timer posts the same event. deepskin.loop.sweeper does
the work; an error propagates, and the next tick sweeps again.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from deepskin.loop import sweeper


@functions_framework.cloud_event
def on_sweep(cloud_event: CloudEvent) -> None:  # pylint: disable=unused-argument  # the tick carries nothing
    sweeper.sweep()
