"""Each function as it deploys: staged by infra/stage_functions.py, installed from its own requirements.txt into
a fresh virtual environment (nothing of the development environment), started with functions-framework, and
answering one real request against the emulators. Its requirements are the ones pyproject.toml generates, and
deptry finds every import of the staged code declared and every requirement used."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import venv
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import stage_functions as stager

from deepskin.loop import ledger
from local.emulators import free_port

REPO = Path(__file__).resolve().parents[2]
LESION = next((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))
CLINICIAN_KEY = "deploy-test-clinician"
BIN = Path(sys.executable).parent


FUNCTIONS = stager.functions(REPO)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_requirements_are_generated_from_pyproject(name):
    committed = (REPO / "functions" / name / "requirements.in").read_text(encoding="utf-8")
    assert committed == stager.requirements_text(FUNCTIONS[name], stager.pins(REPO)), (
        f"functions/{name}/requirements.in drifted from pyproject.toml: run python infra/stage_functions.py --lock")


def locked(name: str) -> dict[str, tuple[str, list[str]]]:
    """functions/<name>/requirements.txt as {distribution: (version, hashes)}."""
    text = (REPO / "functions" / name / "requirements.txt").read_text(encoding="utf-8").replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            requirement, *options = line.split()
            distribution, version = requirement.split("==")
            entries[stager.normalise(distribution)] = (version, [o.removeprefix("--hash=sha256:") for o in options])
    return entries


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_lock_pins_its_requirements_with_hashes(name):
    """The lock holds requirements.in's versions and every entry carries SHA-256 hashes; that it holds every
    dependency too is pip's to say: `install` below runs in hash-checking mode, which refuses anything unlisted."""
    lock = locked(name)
    for pin in stager.requirements_text(FUNCTIONS[name], stager.pins(REPO)).splitlines()[1:]:
        distribution, version = pin.split("==")
        assert lock[stager.normalise(distribution.split("[")[0])][0] == version, (pin, "run --lock")
    unhashed = [d for d, (_, hashes) in lock.items() if not hashes or not all(len(h) == 64 for h in hashes)]
    assert unhashed == []


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("staged")
    stager.stage_all(REPO, out)
    return out


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_staged_code_declares_exactly_what_it_imports(staged, name):
    run = subprocess.run([BIN / "deptry", ".", "--requirements-files", "requirements.in",
                          "--known-first-party", "deepskin"], cwd=staged / name, capture_output=True, text=True, check=False,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_function_stages_only_the_modules_it_imports(staged):
    retrain = {p.relative_to(staged / "retrain_trigger").as_posix() for p in (staged / "retrain_trigger").rglob("*.py")}
    assert {"deepskin/loop/ledger.py", "deepskin/loop/launchers.py"} <= retrain
    assert not {"deepskin/core/model.py", "deepskin/core/pipeline.py", "deepskin/clients/cli.py"} & retrain


def install_requirement(env_dir: Path, *requirement: str) -> Path:
    """A fresh venv with only `requirement` (pip's arguments) installed; returns its bin/ folder."""
    venv.create(env_dir, with_pip=True)
    subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    *requirement], check=True, timeout=900, capture_output=True)
    return env_dir / "bin"


def install(folder: Path) -> Path:
    """A fresh venv with only the staged folder's requirements.txt, every file checked against its hash."""
    return install_requirement(folder.parent / f"{folder.name}-venv", "--require-hashes", "-r",
                               str(folder / "requirements.txt"))


@pytest.fixture(scope="module")
def installed(staged) -> dict[str, Path]:
    """Every function's venv, installed two at a time (pip is mostly waiting on the disk)."""
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(sorted(FUNCTIONS), pool.map(install, [staged / name for name in sorted(FUNCTIONS)])))


@contextmanager
def serving(installed, staged, name: str, target: str) -> Iterator[str]:
    """functions-framework from the function's own venv, in its staged folder; yields its URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{installed[name]}:{env['PATH']}", DEEPSKIN_MODEL_REGISTRY="off",
               DEEPSKIN_LOCAL_CLINICIAN_KEYS=hashlib.sha256(CLINICIAN_KEY.encode()).hexdigest())
    process = subprocess.Popen([installed[name] / "functions-framework", "--target", target, "--source", "main.py",
                                "--host", "127.0.0.1", "--port", str(port)], cwd=staged / name, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{name} did not start:\n{process.stdout.read().decode()}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def request(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, the body: parsed when it is JSON)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            status, body = response.status, response.read()
            json_body = response.headers.get_content_type() == "application/json"
    except urllib.error.HTTPError as error:
        status, body, json_body = error.code, error.read(), error.headers.get_content_type() == "application/json"
    return status, json.loads(body) if json_body else body


def cloud_event(data: dict, type_: str = "google.cloud.pubsub.topic.v1.messagePublished") -> dict:
    """A binary-mode CloudEvent, as Eventarc posts it."""
    return {"headers": {"ce-id": uuid.uuid4().hex, "ce-source": "//pubsub.googleapis.com/test", "ce-type": type_,
                        "ce-specversion": "1.0", "Content-Type": "application/json"},
            "data": json.dumps(data).encode()}


@pytest.fixture(scope="module")
def prediction(emulators, installed, staged) -> dict:
    with serving(installed, staged, "predict", "predict_http") as url:
        status, body = request(url + "/", LESION.read_bytes(), {"Content-Type": "image/jpeg"})
    assert status == 200, body
    return body


def test_predict_deploys_alone_and_assesses_a_photo(prediction):
    assert prediction["status"] == "done" and prediction["risk"] in ("low", "medium", "high")
    assert prediction["model_version"] and prediction["token"]


def test_feedback_deploys_alone_and_takes_a_report(emulators, installed, staged, prediction):
    report = {"prediction_id": prediction["id"], "label": "nv", "role": "user", "idempotency_key": uuid.uuid4().hex}
    with serving(installed, staged, "feedback", "feedback_http") as url:
        status, body = request(url + "/feedback", json.dumps(report).encode(),
                               {"Content-Type": "application/json", "X-DeepSkin-Token": prediction["token"]})
    assert (status, body["counts_as"]) == (202, "signal"), body


def test_retrain_trigger_deploys_alone_and_counts_a_message(emulators, installed, staged):
    before = (ledger.state_doc().get().to_dict() or {}).get("signals", 0)
    message = {"report_id": uuid.uuid4().hex, "label": "nv", "role": "user", "counts_as": "signal"}
    event = cloud_event({"message": {"data": base64.b64encode(json.dumps(message).encode()).decode(),
                                     "attributes": {}, "messageId": uuid.uuid4().hex}})
    with serving(installed, staged, "retrain_trigger", "on_feedback") as url:
        status, _ = request(url + "/", event["data"], event["headers"])
    assert status == 200
    assert ledger.state_doc().get().to_dict()["signals"] == before + 1


def test_ops_deploys_alone_and_answers_an_operator(emulators, installed, staged):
    with serving(installed, staged, "ops", "ops_http") as url:
        status, body = request(url + "/", headers={"X-DeepSkin-Clinician": CLINICIAN_KEY})
        refused, _ = request(url + "/")
    assert status == 200 and {"current", "feedback", "ledger"} <= body.keys(), body
    assert refused == 403


def test_sweeper_deploys_alone_and_sweeps(emulators, installed, staged):
    event = cloud_event({"message": {"data": "", "messageId": uuid.uuid4().hex}})
    with serving(installed, staged, "sweeper", "on_sweep") as url:
        status, _ = request(url + "/", event["data"], event["headers"])
    assert status == 200


def test_the_deepskin_distribution_is_the_core_and_the_command(tmp_path):
    """`pip install deepskin` (no extras): only the deepskin package, and a `deepskin` command that starts and
    names what the upload path lacks instead of crashing on an import."""
    source = tmp_path / "source"
    for part in ("deepskin", "training", "local"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    bin_ = install_requirement(tmp_path / "env", str(source))
    assert subprocess.run([bin_ / "deepskin", "--help"], capture_output=True, check=False).returncode == 0
    training = subprocess.run([bin_ / "python", "-c", "import training"], cwd=tmp_path, capture_output=True, check=False)
    assert b"No module named 'training'" in training.stderr
    upload = subprocess.run([bin_ / "deepskin", "upload", str(LESION), "--json"], capture_output=True, text=True,
                            cwd=tmp_path, check=False)
    assert upload.returncode == 5 and "deepskin[cloud]" in json.loads(upload.stdout)["message"], upload
