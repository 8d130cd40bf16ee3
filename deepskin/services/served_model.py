"""The model this process serves: loaded once, on first use, and swapped when the registry's current version
changes (checked at most every $DEEPSKIN_MODEL_CHECK_SECONDS; on any registry error the model in use stays)."""

from __future__ import annotations

import logging
import threading
import time

from deepskin.core.bundle import BUNDLED_MODEL
from deepskin.core.model import Model
from deepskin.services import registry
from deepskin.services.config import settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_cached: Model | None = None
_next_check = 0.0


def served_model() -> Model:
    """The registry's current version where a registry is configured, else (or while it cannot be read)
    $DEEPSKIN_MODEL_PATH or the bundled model. The lock makes one request per instance check and load."""
    global _cached  # pylint: disable=global-statement
    with _lock:
        _cached = refreshed(_cached)
        if _cached is None:  # asked first, so a cold instance loads one model, not the bundled one and then another
            _cached = Model(settings().model_path or BUNDLED_MODEL)
        return _cached


def use_model(model: Model | None) -> None:
    """Swap the process's model (tests); None loads it again on next use."""
    global _cached  # pylint: disable=global-statement
    with _lock:
        _cached = model


def refreshed(model: Model | None) -> Model | None:
    """The registry's current model if it differs from `model`; `model` itself between checks or on any error."""
    global _next_check  # pylint: disable=global-statement
    now, config = time.monotonic(), settings()
    if not config.model_registry or now < _next_check:
        return model
    _next_check = now + config.model_check_seconds
    try:
        record = registry.current()
        if record is None or (model is not None and record["version"] == model.version):
            return model
        loaded = Model(registry.fetch(record))
    except Exception:  # pylint: disable=broad-except
        log.exception("model registry check failed: still serving %s", model.version if model else "the local model")
        return model
    log.info("serving model %s from the registry (was %s)", loaded.version, model.version if model else None)
    return loaded
