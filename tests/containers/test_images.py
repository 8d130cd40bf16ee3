"""The images of docker/, built with Podman (local/containers.py) and run against the session's emulators.

The serving image answers a lesion photo; the training image runs a retrain (the smoke config) to a
candidate and a promotion-gate decision. Each fixture builds its image first: Podman's layer cache makes
that seconds when nothing changed, and a Dockerfile or dependency change is always tried before it lands.
They skip only where Podman is unavailable (`make containers` installs it), and fail instead where
$DEEPSKIN_REQUIRE_CONTAINERS is set, as .ci/run sets it.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from deepskin.clients.client import Client
from deepskin.loop import ledger
from deepskin.services import registry
from local import containers
from local.emulators import HOST, free_port
from local.stack import answers
from training.data import data_root

REPO = Path(__file__).resolve().parents[2]
LESION = REPO / "tests" / "fixtures" / "lesions" / "ISIC_0024306.jpg"
READY_TIMEOUT_S = 120.0
ENV_PASSED = ("GOOGLE_CLOUD_PROJECT", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST",
              "NO_GCE_CHECK", "DEEPSKIN_ALLOW_PARTIAL_GATE")


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    reason = containers.unavailable()
    if reason and os.environ.get("DEEPSKIN_REQUIRE_CONTAINERS"):
        pytest.fail(f"DEEPSKIN_REQUIRE_CONTAINERS is set, but: {reason}")
    if reason:
        pytest.skip(f"no container engine: {reason}")


def podman_run(image: str, emulators: dict[str, str], *args: str) -> list[str]:
    """`podman run` on the host's network, so the container reaches the emulators on loopback."""
    # The fixture data holds part of the gate set: the partial gate tests/conftest.py allows, passed on.
    env = {**emulators, "NO_GCE_CHECK": "true", "DEEPSKIN_ALLOW_PARTIAL_GATE": os.environ["DEEPSKIN_ALLOW_PARTIAL_GATE"]}
    return ["podman", "run", "--rm", "--network", "host",
            *(item for name in ENV_PASSED if name in env for item in ("-e", f"{name}={env[name]}")), *args, image]


@pytest.fixture(scope="module")
def serving_image() -> str:
    return containers.build("serving")


@pytest.fixture(scope="module")
def training_image() -> str:
    return containers.build("training")


def test_predict_in_its_container_assesses_a_lesion(serving_image, emulators, clean_firestore):
    port, name = free_port(), f"deepskin-serving-test-{uuid.uuid4().hex[:8]}"
    # Loopback only: on the host's network the default 0.0.0.0 would offer the function to the whole LAN.
    command = ["functions-framework", "--target=predict_http", "--source=main.py", f"--host={HOST}", f"--port={port}"]
    subprocess.run([*podman_run(serving_image, emulators, "-d", "--name", name), *command], check=True,
                   capture_output=True)
    try:
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not answers(url + "/"):
            assert time.monotonic() < deadline, subprocess.run(["podman", "logs", name], capture_output=True,
                                                               text=True, check=False).stderr[-3000:]
            time.sleep(0.5)
        result = Client(predict_url=url).predict(LESION)
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], capture_output=True, check=False)
    assert result["status"] == "done", result
    assert 0.0 <= result["malignant_probability"] <= 1.0
    assert result["model_version"]


def test_retrain_in_its_container_ends_with_a_candidate_and_a_decision(training_image, emulators, clean_firestore):
    job_id = uuid.uuid4().hex[:20]
    ledger.job_doc(job_id).set({"status": "queued", "trigger": "manual"})  # as deepskin.loop.ledger would create it
    data = data_root()
    done = subprocess.run(
        [*podman_run(training_image, emulators, "-v", f"{data}:/data:ro", "--entrypoint", "python"),
         "-m", "training.retrain", "--job-id", job_id, "--config", "training/configs/retrain_smoke.json",
         "--data", "/data", "--eval-limit", "16"],
        capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job = ledger.job_doc(job_id).get().to_dict()
    assert job["status"] == "done", job
    decision = registry.decision_doc(job_id).get().to_dict()
    assert isinstance(decision["promoted"], bool)
    assert decision["candidate"]["version"] != decision["baseline"]["version"]
    assert decision["candidate"]["images"] == decision["baseline"]["images"] > 0
    # No non-lesion photos are mounted: that check cannot be computed, so it fails closed.
    assert decision["checks"]["non_lesions_refused"] is False and decision["promoted"] is False
