"""Shared fixtures: the real Firestore, Pub/Sub and Cloud Storage emulators, started once per session.

Set FIRESTORE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST to reuse running emulators
(e.g. those of `make run`); otherwise local/emulators.py starts them on free loopback ports.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from functions_framework import create_app
from google.auth import crypt, jwt

from deepskin.core.bundle import BUNDLED_MODEL
from deepskin.loop import launchers, ledger
from deepskin.services import identity, registry, store
from deepskin.services.config import settings
from local.emulators import DEFAULT_PROJECT, Emulators, create_resources

LOOP_REPORTS = [("clinician", "mel"), ("clinician", "mel"), ("clinician", "nv"), ("user", "bcc")]
EMULATOR_VARS = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")
# Every test, and every process a test starts, reads the HAM10000 fixture in the repository: a fresh clone
# needs nothing beside it, and results do not depend on which data a machine happens to have.
os.environ["DEEPSKIN_HAM10000"] = str(Path(__file__).parent / "fixtures" / "ham10000_mini")
# That fixture holds a part of the gate set only: the gate, which fails closed elsewhere, may run on it here.
os.environ["DEEPSKIN_ALLOW_PARTIAL_GATE"] = "fixtures"


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
    registry: its pointer, baseline and pending candidates live in the models bucket
    (deepskin.services.registry), so they are removed too."""
    url = (f"http://{emulators['FIRESTORE_EMULATOR_HOST']}/emulator/v1/projects/{settings().project}"
           "/databases/(default)/documents")
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30).close()
    pending = store.storage_client().list_blobs(settings().models_bucket, prefix=registry.PENDING)
    for blob in (registry.pointer_blob(), registry.anchor_blob(registry.BASELINE), *pending):
        store.delete_blob(blob)


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


@pytest.fixture(scope="session")
def ops_client(emulators):
    return function_client("ops_http", "ops")


class FakeLauncher:
    """Records the training jobs the retrain trigger would launch, instead of running them; a job runs until
    the test ends it or the sweep cancels it."""

    def __init__(self):
        self.launched, self.ended, self.cancelled = [], set(), []

    def launch(self, job_id: str) -> str:
        self.launched.append(job_id)
        return f"fake {job_id}"

    def owns(self, handle: str, job_id: str) -> bool:
        return handle == f"fake {job_id}"

    def running(self, handle: str) -> bool:
        return handle not in self.ended

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        self.ended.add(handle)


@pytest.fixture
def fake_launcher(monkeypatch) -> FakeLauncher:
    fake = FakeLauncher()
    monkeypatch.setattr(launchers, "launcher", lambda: fake)
    monkeypatch.setitem(launchers.LAUNCHERS, launchers.launcher_name(), lambda: fake)  # the sweep's view of the job
    return fake


@pytest.fixture
def clinician(monkeypatch) -> dict[str, str]:
    """Headers of a caller the feedback function accepts as a clinician (the local stand-in: a hashed key)."""
    key = "test-clinician-key"
    monkeypatch.setenv("DEEPSKIN_LOCAL_CLINICIAN_KEYS", hashlib.sha256(key.encode()).hexdigest())
    return {"X-DeepSkin-Clinician": key}


class GoogleTokens:
    """Google-shaped ID tokens signed with a key made for this test, whose public half stands in for Google's
    certificates in deepskin.services.identity: verification runs for real, without a network. (No key is kept
    in the repository: tests/reliability forbids private keys there.)"""

    KEY_ID = "test-key"

    def __init__(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.signer = crypt.RSASigner.from_string(private, key_id=self.KEY_ID)
        self.certs = {self.KEY_ID: key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()}

    def fetch(self) -> dict[str, str]:
        return self.certs

    def mint(self, email: str, audience: str, **claims) -> str:
        now = int(time.time())
        payload = {"iss": "https://accounts.google.com", "aud": audience, "email": email, "email_verified": True,
                   "iat": now, "exp": now + 600, **claims}
        return jwt.encode(self.signer, payload).decode()

    def bearer(self, email: str, audience: str, **claims) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint(email, audience, **claims)}"}


@pytest.fixture
def google_tokens(monkeypatch) -> GoogleTokens:
    tokens = GoogleTokens()
    monkeypatch.setattr(identity, "google_certs", identity.Certificates(tokens.fetch))
    return tokens


def older_refusal(candidate: str, current: str, job_id: str) -> dict:
    """A refusal as training.promote recorded it before the pinned baseline: the candidate against the current
    model, each check's outcome and no reasons (deepskin.loop.ops writes them from the numbers)."""
    return {"promoted": False, "job_id": job_id, "checks": {"roc_auc": False, "sensitivity_high": True},
            "candidate": {"version": candidate, "roc_auc": 0.85, "sensitivity_high": 0.96},
            "current": {"version": current, "roc_auc": 0.92, "sensitivity_high": 0.95}}


def gate_decision(candidate: str, baseline: str, job_id: str) -> dict:
    """A promotion as training.promote records it now: the candidate against the pinned baseline, each check's
    reason written by the gate, and the current model's version."""
    reason = ("auc: candidate 0.930 vs baseline 0.920, difference +0.010 (95% CI -0.004 to +0.024), "
              "needs lower bound > -0.02: passed")
    return {"promoted": True, "status": "promoted", "job_id": job_id, "checks": {"auc": True}, "reasons": [reason],
            "candidate": {"version": candidate, "auc": 0.93}, "baseline": {"version": baseline, "auc": 0.92},
            "current": {"version": baseline},
            "feedback_set": {"feedback_images": 40, "feedback_test_labels": 31, "feedback_duplicates_dropped": 1},
            "feedback_test": {"metric": "brier", "labels": 31, "difference": -0.021, "ci95": [-0.034, -0.008],
                              "applies": True, "passed": True, "reason": "feedback test set (31 labels): passed"}}


@pytest.fixture
def learning_loop(clean_firestore) -> dict:
    """The registry, two decisions (an older refusal, then a promotion as the gate records it now), a running
    job, feedback: what the page shows."""
    record = registry.set_current(registry.upload(BUNDLED_MODEL), expected=None)
    version = record["version"]
    registry.record_decision("job-refused", older_refusal("cand-1", version, "job-refused"))
    time.sleep(0.01)  # decided_at orders them
    registry.record_decision("job-promoted", gate_decision("cand-2", version, "job-promoted"))
    ledger.state_doc().set({"training_labels": 3, "signals": 1, "labels_at_last_job": 3, "active_job": "job-running",
                          "last_job": "job-running"})
    ledger.job_doc("job-running").set({"status": "running", "trigger": "training_label", "new_labels": 3})
    for n, (role, label) in enumerate(LOOP_REPORTS):
        store.firestore_client().collection(store.FEEDBACK).document(f"report-{n}").set(
            {"role": role, "label": label, "comment": "private words", "reporter": "local:abc"})
    return {"version": version, "reports": LOOP_REPORTS}
