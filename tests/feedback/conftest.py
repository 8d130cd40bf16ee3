"""Fixtures for the feedback loop: the two functions' apps, a local clinician, a real prediction."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from feedback_support import CLINICIAN_KEY, DEAD_SUBSCRIPTION, LESIONS, RETRAIN_SUBSCRIPTION, pull

from deepskin.services import predict_service, served_model


@pytest.fixture(autouse=True)
def feedback_env(clean_firestore, monkeypatch):
    """Every test: empty Firestore, drained subscriptions, a known local clinician, a small label threshold."""
    monkeypatch.setenv("DEEPSKIN_LOCAL_CLINICIAN_KEYS", hashlib.sha256(CLINICIAN_KEY.encode()).hexdigest())
    monkeypatch.setenv("DEEPSKIN_RETRAIN_MIN_LABELS", "3")
    monkeypatch.setenv("DEEPSKIN_RETRAIN_CONFIG", "training/configs/retrain_smoke.json")
    monkeypatch.setenv("DEEPSKIN_RETRAIN_EVAL_LIMIT", "0")  # the whole gate set the fixture holds
    monkeypatch.setenv("DEEPSKIN_JOB_LAUNCHER", "local")
    # Only the repository's fixtures, whatever this machine holds: the gate uses the part of its set they have.
    monkeypatch.setenv("DEEPSKIN_PAD_UFES20", "/nonexistent/pad_ufes20")
    monkeypatch.setenv("DEEPSKIN_NON_LESION", "/nonexistent/non_lesion")
    monkeypatch.setenv("DEEPSKIN_MODEL_CHECK_SECONDS", "0")
    monkeypatch.delenv("K_SERVICE", raising=False)
    for subscription in (RETRAIN_SUBSCRIPTION, DEAD_SUBSCRIPTION):
        pull(subscription)
    yield
    # Back to the bundled model for whatever runs next in this process.
    served_model.use_model(None)
    monkeypatch.setattr(served_model, "_next_check", 0.0)


@pytest.fixture
def prediction() -> tuple[str, str]:
    """A real prediction made through the HTTP path: (result id, its owner's token)."""
    token = secrets.token_urlsafe(24)
    outcome = predict_service.predict_bytes(LESIONS[0].read_bytes(), "image/jpeg", token)
    assert outcome.fields["status"] == "done"
    return outcome.id, token


