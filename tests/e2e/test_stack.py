"""The whole local stack, as `make run` starts it, on free ports: the real event path and the real CLI.

Upload -> fake-gcs-server notification -> Pub/Sub -> local/bridge.py -> on_upload -> Firestore, timed; then the
`deepskin` console script against the same stack; then a SIGTERM must leave no process and no port behind.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import firestore, storage

from deepskin.core.labels import CLASSES, NOT_A_DIAGNOSIS, RISK_BANDS
from deepskin.core.pipeline import assess
from deepskin.services import store
from deepskin.services.config import settings
from deepskin.services.served_model import served_model
from local.stack import Ports, StackProcess

REPO = Path(__file__).resolve().parents[2]
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))
PHONE = min((REPO / "tests" / "fixtures" / "phone").glob("*.jpg"))  # a clinical photo: the answers move its chance
DEEPSKIN = Path(sys.executable).parent / "deepskin"
NOT_AN_IMAGE = b"this is not an image\n" * 20
RESULT_WITHIN_S = 2.0  # the budget from upload to result document
WARMUP_TIMEOUT_S = 60.0  # the first event loads the model in on_upload's process


@pytest.fixture(scope="module")
def stack() -> Iterator[StackProcess]:
    running = StackProcess(Ports.free()).start()
    print(f"\nstack started in {running.start_seconds:.1f} s")
    yield running
    running.stop()  # a no-op when test_sigterm_stops_everything already stopped it


@pytest.fixture(scope="module")
def clients(stack: StackProcess) -> tuple[storage.Client, firestore.Client]:
    """Clients of this stack's emulators; store's cached ones may point at the session's other emulators."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.env.items():
            patch.setenv(name, value)
        project = stack.env["GOOGLE_CLOUD_PROJECT"]
        return storage.Client(project=project), firestore.Client(project=project)


@pytest.fixture
def cli(stack: StackProcess, tmp_path_factory: pytest.TempPathFactory):
    """Run the installed console script against the stack; HOME is private, so is its tokens.json."""
    env = {**os.environ, **stack.env, "HOME": str(tmp_path_factory.mktemp("home"))}

    def run(*args: str) -> tuple[int, dict | str]:
        done = subprocess.run([str(DEEPSKIN), *args], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        out = json.loads(done.stdout) if "--json" in args and done.stdout.strip() else done.stdout + done.stderr
        return done.returncode, out

    run.home = Path(env["HOME"])
    return run


def upload_and_time(clients, data: bytes, suffix: str, content_type: str, timeout: float) -> tuple[dict, float]:
    """Upload through the bucket; the finished result document and seconds from upload to result."""
    gcs, db = clients
    blob = gcs.bucket(settings().uploads_bucket).blob(f"uploads/{uuid.uuid4()}{suffix}")
    blob.upload_from_string(data, content_type=content_type)
    uploaded = time.monotonic()
    doc = db.collection(store.PREDICTIONS).document(store.result_id(blob.bucket.name, blob.name, blob.generation))
    while time.monotonic() - uploaded < timeout:
        snapshot = doc.get()
        if snapshot.exists and snapshot.get("status") != "pending":
            return snapshot.to_dict(), time.monotonic() - uploaded
        time.sleep(0.02)
    pytest.fail(f"no result for {blob.name} within {timeout} s")


def test_event_path_answers_each_upload_within_two_seconds(clients):
    upload_and_time(clients, LESIONS[0].read_bytes(), ".jpg", "image/jpeg", WARMUP_TIMEOUT_S)
    # What the model itself says of each photo (the scope gate may set a rare lesion aside): the stack must agree.
    uploads = [(path.name, path.read_bytes(), ".jpg", "image/jpeg", assess(path.read_bytes(), served_model()).status)
               for path in LESIONS]
    assert sum(expected == "done" for *_, expected in uploads) >= len(LESIONS) - 1
    uploads.append(("not-an-image.txt", NOT_AN_IMAGE, ".txt", "text/plain", "rejected"))
    latencies = {}
    for name, data, suffix, content_type, expected in uploads:
        doc, latencies[name] = upload_and_time(clients, data, suffix, content_type, timeout=30)
        assert doc["status"] == expected, (name, doc.get("reason"))
        assert doc["source"] == "event"
    print("upload -> result:", {name: f"{seconds:.2f} s" for name, seconds in latencies.items()})
    slow = {name: seconds for name, seconds in latencies.items() if seconds > RESULT_WITHIN_S}
    assert not slow, f"over {RESULT_WITHIN_S} s from upload to result: {slow}"


def assert_done_result(result: dict) -> None:
    assert result["status"] == "done"
    assert len(result["id"]) == 32
    assert result["risk"] in RISK_BANDS
    assert set(result["probabilities"]) == set(CLASSES)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert 0.0 <= result["malignant_probability"] <= 1.0
    assert result["advice"].endswith(NOT_A_DIAGNOSIS)


def test_cli_upload_wait_predict_and_result(cli):
    code, uploaded = cli("upload", str(LESIONS[1]), "--wait", "--json")
    assert code == 0, uploaded
    assert_done_result(uploaded)
    assert uploaded["source"] == "event" and uploaded["token"]

    code, predicted = cli("predict", str(LESIONS[1]), "--json")
    assert code == 0, predicted
    assert_done_result(predicted)
    assert predicted["source"] == "http" and "heatmap_png_base64" not in predicted
    # The same bytes through either path: the same assessment.
    assert predicted["probabilities"] == pytest.approx(uploaded["probabilities"], abs=1e-6)

    tokens = cli.home / ".deepskin" / "tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert json.loads(tokens.read_text()) == {uploaded["id"]: uploaded["token"], predicted["id"]: predicted["token"]}

    code, fetched = cli("result", predicted["id"], "--json")  # the token comes from tokens.json
    assert code == 0, fetched
    assert {key: fetched[key] for key in ("id", "status", "risk", "probabilities")} == \
           {key: predicted[key] for key in ("id", "status", "risk", "probabilities")}

    code, text = cli("result", uploaded["id"])
    assert code == 0 and f"Risk: {uploaded['risk'].upper()}" in text and NOT_A_DIAGNOSIS in text


def test_cli_patient_facts_on_both_paths(cli):
    facts = ["--age", "58", "--sex", "female", "--site", "lower extremity"]
    code, uploaded = cli("upload", str(LESIONS[2]), "--wait", "--json", *facts)
    assert code == 0, uploaded
    code, predicted = cli("predict", str(LESIONS[2]), "--json", *facts)
    assert code == 0, predicted
    for result in (uploaded, predicted):
        assert result["patient"] == {"age": 58.0, "sex": "female", "site": "lower extremity"}
    assert predicted["probabilities"] == pytest.approx(uploaded["probabilities"], abs=1e-6)
    code, text = cli("result", predicted["id"])
    assert code == 0 and "stands out most" in text
    assert cli("predict", str(LESIONS[2]), "--age", "300")[0] == 2  # a named usage error, nothing sent


def test_cli_answers_on_both_paths(cli):
    """The questions about the lesion through the client: object metadata (upload) and query (predict)."""
    answers = ["--grew", "yes", "--itches", "no", "--raised", "not sure"]
    code, uploaded = cli("upload", str(PHONE), "--wait", "--json", *answers)
    assert code == 0, uploaded
    code, predicted = cli("predict", str(PHONE), "--json", *answers)
    assert code == 0, predicted
    for result in (uploaded, predicted):
        assert result["patient"] == {"grew": "yes", "itches": "no"} and result["risk"] != "low"
    assert predicted["malignant_probability"] == pytest.approx(uploaded["malignant_probability"], abs=1e-6)
    code, plain = cli("predict", str(PHONE), "--json")
    assert code == 0 and plain["malignant_probability"] != predicted["malignant_probability"]
    assert cli("upload", str(PHONE), "--bled", "often")[0] == 2  # a named usage error, nothing sent


def test_cli_exit_codes_for_refused_and_missing(cli, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_bytes(NOT_AN_IMAGE)
    code, refused = cli("upload", str(text_file), "--wait", "--json")
    assert (code, refused["status"], refused["reason"]) == (3, "rejected", "unsupported_format")
    assert cli("predict", str(text_file), "--json")[0] == 3
    assert cli("upload", str(tmp_path / "missing.jpg"))[0] == 2
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    # With --json every answer is one JSON object on stdout, errors included (the fixture parses it).
    for args, code, error in ((("predict", str(empty)), 3, "empty"), (("result", "0" * 32), 2, "usage"),  # no token known for it
                              (("upload", str(tmp_path / "missing.jpg")), 2, "usage"),
                              (("result", "0" * 32, "--token", "nobody"), 4, "not_found")):
        answer = cli(*args, "--json")
        assert answer[0] == code and answer[1]["error"] == error and answer[1]["message"], (args, answer)


def test_cli_delete_erases_the_result(cli):
    code, predicted = cli("predict", str(LESIONS[2]), "--json")
    assert code == 0, predicted
    code, deleted = cli("delete", predicted["id"], "--json")
    assert code == 0, deleted
    assert f"predictions/{predicted['id']}" in deleted["deleted"]["documents"]
    assert cli("result", predicted["id"], "--token", predicted["token"], "--json")[0] == 4


def test_cli_feedback_is_accepted(cli):
    code, predicted = cli("predict", str(LESIONS[3]), "--json")
    assert code == 0, predicted
    code, answer = cli("feedback", predicted["id"], "--label", "df", "--comment", "e2e", "--json")
    assert code == 0, answer
    assert answer["counts_as"] == "signal" and answer["report_id"]


def test_cli_status_reports_every_component(cli, stack):
    code, status = cli("status", "--json")
    components = {c["name"]: c for c in status["components"]}
    assert set(components) == {"web", "predict", "feedback", "storage", "firestore"}
    for name in ("predict", "storage", "firestore"):
        assert components[name]["up"], components[name]
    assert components["web"]["url"] == stack.env["DEEPSKIN_WEB_URL"] + "/"
    assert components["web"]["up"] == (REPO / "web" / "index.html").exists()
    assert components["feedback"]["up"] == (REPO / "functions" / "feedback" / "main.py").exists()
    assert code == (0 if status["all_up"] else 5)


def test_web_serves_the_page_and_its_config(stack):
    web = stack.env["DEEPSKIN_WEB_URL"]
    with urllib.request.urlopen(web + "/", timeout=10) as page:
        assert page.read() == (REPO / "web" / "index.html").read_bytes()
    with urllib.request.urlopen(web + "/config.json", timeout=10) as config:
        assert json.load(config) == {"predict_url": stack.env["DEEPSKIN_PREDICT_URL"],
                                     "feedback_url": stack.env["DEEPSKIN_FEEDBACK_URL"],
                                     "ops_url": stack.env["DEEPSKIN_OPS_URL"]}


def test_sigterm_stops_everything(stack):
    below = stack.descendants()
    assert below, "the stack should have children (emulators, functions)"
    assert stack.stop() == 0
    left = {pid for pid in below if Path(f"/proc/{pid}").exists()}
    assert not left, f"processes left behind: {left}"
    stack.ports.check_free()  # raises naming any port still held
