"""Shared fixtures: the real Firestore, Pub/Sub and Cloud Storage emulators, started once per session.

Set FIRESTORE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST to reuse running emulators
(e.g. those of `make run`); otherwise local/emulators.py starts them on free loopback ports.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from functions_framework import create_app

from deepskin import registry, store
from deepskin.config import settings
from local.emulators import DEFAULT_PROJECT, Emulators, create_resources

EMULATOR_VARS = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")


@pytest.fixture(scope="session")
def emulators() -> Iterator[dict[str, str]]:
    """The emulator environment, applied to os.environ for the whole session, with resources created."""
    if all(os.environ.get(var) for var in EMULATOR_VARS):
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", DEFAULT_PROJECT)
        os.environ.setdefault("NO_GCE_CHECK", "true")
        create_resources()
        yield {var: os.environ[var] for var in (*EMULATOR_VARS, "GOOGLE_CLOUD_PROJECT")}
        return
    with Emulators.start() as running:
        saved = {var: os.environ.get(var) for var in running.env}
        os.environ.update(running.env)
        try:
            create_resources()
            yield running.env
        finally:
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value


@pytest.fixture
def clean_firestore(emulators: dict[str, str]) -> None:
    """Each test starts from an empty database (the emulator's own reset endpoint) and an empty model
    registry: its pointer lives in the models bucket (deepskin.registry), so it is removed too."""
    url = (f"http://{emulators['FIRESTORE_EMULATOR_HOST']}/emulator/v1/projects/{settings().project}"
           "/databases/(default)/documents")
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30).close()
    store.delete_blob(registry.pointer_blob())


@pytest.fixture(scope="session")
def figure(record_testsuite_property):
    """Record a measured figure for docs/reliability.md: benchmarks/reliability_doc.py runs the tests and reads
    the figures back from their JUnit XML, so the document quotes what the tests measured and asserted."""
    def record(name: str, value) -> None:
        record_testsuite_property(f"figure.{name}", value)

    return record


FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"


def function_client(target: str, folder: str):
    """A test client of one function, loaded from its folder as functions-framework deploys it."""
    return create_app(target, str(FUNCTIONS / folder / "main.py")).test_client()


@pytest.fixture(scope="session")
def event_client(emulators):
    return function_client("on_upload", "predict")


@pytest.fixture(scope="session")
def dead_letter_client(emulators):
    return function_client("on_upload_dead", "predict")


@pytest.fixture(scope="session")
def http_client(emulators):
    return function_client("predict_http", "predict")


@pytest.fixture(scope="session")
def feedback_client(emulators):
    return function_client("feedback_http", "feedback")


@pytest.fixture(scope="session")
def trigger_client(emulators):
    return function_client("on_feedback", "retrain_trigger")


class FakeLauncher:
    """Records the training jobs the retrain trigger would launch, instead of running them; a job runs until
    the test ends it or the sweep cancels it."""

    def __init__(self):
        self.launched, self.ended, self.cancelled = [], set(), []

    def launch(self, job_id: str) -> str:
        self.launched.append(job_id)
        return f"fake {job_id}"

    def running(self, handle: str) -> bool:
        return handle not in self.ended

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        self.ended.add(handle)


@pytest.fixture
def fake_launcher(monkeypatch) -> FakeLauncher:
    from deepskin import jobs  # pylint: disable=import-outside-toplevel  # only the retrain tests need it

    fake = FakeLauncher()
    monkeypatch.setattr(jobs, "launcher", lambda: fake)
    monkeypatch.setitem(jobs.LAUNCHERS, jobs.launcher_name(), lambda: fake)  # the sweep's view of the job
    return fake


@pytest.fixture
def clinician(monkeypatch) -> dict[str, str]:
    """Headers of a caller the feedback function accepts as a clinician (the local stand-in: a hashed key)."""
    key = "test-clinician-key"
    monkeypatch.setenv("DEEPSKIN_LOCAL_CLINICIAN_KEYS", hashlib.sha256(key.encode()).hexdigest())
    return {"X-DeepSkin-Clinician": key}
