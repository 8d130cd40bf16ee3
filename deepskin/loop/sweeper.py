"""The scheduled sweep, so that nothing stays stuck: results whose attempt died become `failed`, and a
retraining job that is no longer running gives the ledger back.

Run every few minutes: on Google Cloud by Cloud Scheduler through Pub/Sub (functions/sweeper, infra/),
locally by a timer in local/stack.py that calls the same function.
"""

from __future__ import annotations

import logging

from deepskin.loop import ledger
from deepskin.services import store

log = logging.getLogger(__name__)


def sweep() -> dict:
    """One pass; what it closed."""
    swept = {"abandoned_results": store.sweep_abandoned(), "freed_job": ledger.sweep()}
    if swept["abandoned_results"] or swept["freed_job"]:
        log.warning("sweep: %s", swept)
    return swept
