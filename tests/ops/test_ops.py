"""The operator function (functions/ops) and `deepskin models`, against the emulators.

Seeded by the learning_loop fixture (tests/conftest.py) as the loop writes its documents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from deepskin.core.bundle import BUNDLED_MODEL, load_card
from deepskin.loop import ops
from deepskin.services import registry

DEEPSKIN = Path(sys.executable).parent / "deepskin"

pytestmark = pytest.mark.usefixtures("clean_firestore")


def test_ops_refuses_anyone_but_an_operator(ops_client, clinician):
    assert ops_client.get("/").status_code == 403
    assert ops_client.get("/", headers={"X-DeepSkin-Clinician": "not-the-key"}).status_code == 403
    assert ops_client.get("/plots/test_curves.png").status_code == 403
    assert ops_client.get("/", headers=clinician).status_code == 200


def test_overview_shows_model_decisions_feedback_and_the_running_job(ops_client, clinician, learning_loop):
    view = ops_client.get("/", headers=clinician).get_json()
    assert view["current"] == learning_loop["version"] == view["model"]["version"]
    card = load_card(BUNDLED_MODEL)
    assert view["model"]["numbers"]["roc_auc"] == card["metrics"]["ham10000"]["image_only"]["auc_refused_as_referred"]
    assert view["model"]["numbers"]["non_lesions_refused"] == card["metrics"]["non_lesion"]["refused"]
    assert [d["id"] for d in view["decisions"]] == ["job-promoted", "job-refused"]  # newest first
    refused = view["decisions"][1]
    assert (refused["job_id"], refused["candidate"], refused["promoted"]) == ("job-refused", "cand-1", False)
    assert any("roc_auc" in reason and "failed" in reason for reason in refused["reasons"])
    assert refused["numbers"]["current"]["roc_auc"] == 0.92
    promoted = view["decisions"][0]  # as the gate records it now: its own reasons, against the pinned baseline
    assert promoted["reasons"][0].startswith("auc: candidate 0.930 vs baseline 0.920") and promoted["status"] == "promoted"
    assert promoted["numbers"]["baseline"] == {"version": learning_loop["version"], "auc": 0.92}
    assert promoted["feedback"] == {"feedback_images": 40, "feedback_test_labels": 31, "feedback_duplicates_dropped": 1,
                                    "test_metric": "brier", "test_labels": 31, "test_difference": -0.021,
                                    "test_ci95": [-0.034, -0.008], "test_applies": True, "test_passed": True}
    assert refused["feedback"] == {}  # a decision from before the feedback test set
    expected = Counter(learning_loop["reports"])
    assert {(role, label): n for role, labels in view["feedback"].items() for label, n in labels.items()} == expected
    assert "private words" not in json.dumps(view) and "local:abc" not in json.dumps(view)
    assert view["ledger"]["running_job"]["id"] == "job-running"
    assert view["ledger"]["running_job"]["status"] == "running"


def test_the_overview_says_whether_a_person_approves_promotions(ops_client, clinician, monkeypatch):
    monkeypatch.delenv("DEEPSKIN_PROMOTION_APPROVAL", raising=False)
    assert ops_client.get("/", headers=clinician).get_json()["promotion_approval"] == "gate"  # the local stack
    monkeypatch.setenv("DEEPSKIN_PROMOTION_APPROVAL", "required")  # Terraform's default on Google Cloud
    assert ops_client.get("/", headers=clinician).get_json()["promotion_approval"] == "required"


def test_plots_are_served_by_exact_name_only(ops_client, clinician):
    names = ops.plot_names()
    assert names, "training/reports holds the evaluation plots"
    answer = ops_client.get(f"/plots/{names[0]}", headers=clinician)
    assert answer.status_code == 200 and answer.data == (ops.PLOTS / names[0]).read_bytes()
    for path in ("/plots/../eda.md", "/plots/%2e%2e%2fmetrics.json", "/plots/metrics.json", "/plots/"):
        assert ops_client.get(path, headers=clinician).status_code == 404, path


def deepskin_models(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run([str(DEEPSKIN), "models", *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    return done.returncode, done.stdout + done.stderr


def test_cli_models_json_lists_decisions_newest_first_and_rolls_back(learning_loop, tmp_path):
    code, out = deepskin_models(tmp_path, "--json")
    assert code == 0, out
    view = json.loads(out)
    assert view["current"] == learning_loop["version"]
    assert [(d["job_id"], d["candidate"], d["promoted"]) for d in view["decisions"]] == [
        ("job-promoted", "cand-2", True), ("job-refused", "cand-1", False)]
    assert all(d["reasons"] for d in view["decisions"])

    code, out = deepskin_models(tmp_path, "--rollback")
    assert code != 0 and "no previous model version" in out  # only one version was ever served
    code, out = deepskin_models(tmp_path, "--rollback", "--json")
    assert code != 0 and json.loads(out)["error"] == "no_rollback"  # a script still gets one JSON object

    candidate = registry.upload(BUNDLED_MODEL)  # the same files, registered again under another version
    registry.set_current({**candidate, "version": "2099.01.01-newer"}, expected=learning_loop["version"])
    code, out = deepskin_models(tmp_path, "--rollback")
    assert code == 0, out
    code, out = deepskin_models(tmp_path, "--json")
    view = json.loads(out)
    assert view["current"] == learning_loop["version"]
    assert view["decisions"][0]["kind"] == "rollback" and view["decisions"][0]["current"] == "2099.01.01-newer"
    code, text = deepskin_models(tmp_path)
    assert code == 0 and f"Serving: {learning_loop['version']}" in text and "ROLLBACK" in text
