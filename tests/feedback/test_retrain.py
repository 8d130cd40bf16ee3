"""Feedback -> ledger -> one training job -> promotion gate -> the predict path, against the real emulators.

One real retraining run (tiny config: 64 px, 32 replay images + the reports' images, one epoch, most blocks
frozen, the gate on the part of the frozen gate set in the repository's fixture); the gate's other
outcomes use candidates built from the served model with a changed card, whose numbers are known.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from feedback_support import (
    CLINICIAN,
    CLINICIAN_KEY,
    DEAD_SUBSCRIPTION,
    LESIONS,
    REPO,
    RETRAIN_SUBSCRIPTION,
    all_jobs,
    candidate_from_served,
    deliver,
    ledger_state,
    predictions,
    pubsub_event,
    pull,
    redeliver_pulled,
    report,
)

from deepskin.core.bundle import BUNDLED_MODEL, card_path, load_card
from deepskin.loop import launchers, ledger, ops, promotion
from deepskin.services import predict_service, registry, store
from deepskin.services.config import settings
from deepskin.services.served_model import served_model
from training import checkpoint_file, promote, retrain
from training.gate_set import gate_lesions
from training.net import LiteConfig, pretrained
from training.train import TrainConfig, checkpoint

SHIPPED_VERSION = load_card(BUNDLED_MODEL)["version"]


FOLDERS: dict = {}  # the fixture HAM10000 ($DEEPSKIN_HAM10000) alone: conftest points the other sources nowhere


def for_both_types(**thresholds) -> dict:
    return {"dermoscopy": thresholds, "clinical": thresholds}


# --- the ledger ---------------------------------------------------------------------------------------

def test_user_reports_are_counted_as_signals_and_never_train(feedback_client, trigger_client, fake_launcher):
    for id_, token in predictions(4):
        answer = feedback_client.post("/feedback", json=report(id_), headers={"X-DeepSkin-Token": token})
        assert answer.status_code == 202
    messages = pull(RETRAIN_SUBSCRIPTION)
    assert len(messages) == 4
    assert redeliver_pulled(trigger_client, messages) == [200] * 4
    assert (ledger_state()["signals"], ledger_state()["training_labels"]) == (4, 0)
    assert all_jobs() == {} and fake_launcher.launched == []


def test_what_the_loop_records_expires(feedback_client, trigger_client, fake_launcher):
    """The ledger's record of a message goes with the health data; a job and a gate decision (a rollback's names
    its operator) after the longer record retention."""
    label(feedback_client, trigger_client, CLINICIAN)  # a job needs a clinician's new label, a manual one too
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    [job_id] = fake_launcher.launched
    registry.record_decision("rollback-1", {"kind": "rollback", "promoted": True, "job_id": None})
    seen = [doc.to_dict() for doc in ledger.state_doc().collection("seen").stream()]

    def days_kept(doc: dict) -> int:
        return round((doc["expire_at"] - datetime.now(UTC)) / timedelta(days=1))

    assert len(seen) == 2 and {days_kept(doc) for doc in seen} == {settings().retention_days}
    assert days_kept(all_jobs()[job_id]) == settings().record_retention_days
    assert days_kept(registry.decision_doc("rollback-1").get().to_dict()) == settings().record_retention_days


def test_a_forged_user_training_label_and_undecodable_messages_go_to_the_dead_letter_topic(trigger_client,
                                                                                         fake_launcher):
    forged = {"report_id": "a" * 32, "prediction_id": "b" * 32, "label": "mel", "role": "user",
              "counts_as": "training_label"}
    poison = [pubsub_event(b"\xff\xfe not json"), pubsub_event("%%% not base64 %%%"),
              pubsub_event(json.dumps(forged).encode(), {"role": "user"}),
              pubsub_event(json.dumps({"manual": True, "requested_by": "x"}).encode(), {"manual": "true",
                                                                                      "role": "user"})]
    assert [deliver(trigger_client, event) for event in poison] == [200] * 4  # acknowledged: never redelivered
    dead = pull(DEAD_SUBSCRIPTION)
    assert sorted(m.attributes["dead_letter_reason"] for m in dead) == sorted(
        ["undecodable", "undecodable", "counts_as_does_not_match_role", "manual_trigger_not_from_clinician"])
    assert dead[0].data and all(m.attributes["original_message_id"] for m in dead)
    assert ledger_state() == {} and all_jobs() == {} and fake_launcher.launched == []


def test_redelivered_messages_count_once_and_an_active_job_blocks_another(feedback_client, trigger_client,
                                                                          fake_launcher):
    for id_, _ in predictions(5):
        assert feedback_client.post("/feedback", json=report(id_, role="clinician"), headers=CLINICIAN).status_code == 202
    messages = pull(RETRAIN_SUBSCRIPTION)
    redeliver_pulled(trigger_client, messages[:2] * 3)  # each delivered three times
    assert ledger_state()["training_labels"] == 2 and fake_launcher.launched == []
    redeliver_pulled(trigger_client, messages[2:] * 2)
    assert ledger_state()["training_labels"] == 5
    [job_id] = fake_launcher.launched  # the third label launched it; the two after found it active
    assert all_jobs()[job_id]["status"] == "queued" and all_jobs()[job_id]["handle"] == f"fake {job_id}"
    assert ledger_state()["active_job"] == job_id

    # A clinician's manual trigger waits for the active job too, then starts one of its own.
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202
    manual = pull(RETRAIN_SUBSCRIPTION)
    redeliver_pulled(trigger_client, manual)
    assert len(fake_launcher.launched) == 1
    ledger.finish(job_id, {"status": "done"})
    redeliver_pulled(trigger_client, manual)  # counted already: a redelivery is not a new request
    assert len(fake_launcher.launched) == 1
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    assert len(fake_launcher.launched) == 2 and all_jobs()[fake_launcher.launched[1]]["trigger"] == "manual"


def test_a_clinician_label_counts_once_per_prediction_and_a_later_one_replaces_it(feedback_client, trigger_client,
                                                                                  fake_launcher):
    [(id_, _)] = predictions(1)
    # A CLI retry comes with a fresh idempotency key; a correction with another label.
    answers = [feedback_client.post("/feedback", json=report(id_, role="clinician", label=label), headers=CLINICIAN)
               for label in ("nv", "nv", "mel")]
    assert {a.status_code for a in answers} == {202} and len({a.get_json()["report_id"] for a in answers}) == 1
    [doc] = [s.to_dict() for s in store.firestore_client().collection(store.FEEDBACK).stream()]
    assert doc["label"] == "mel"
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    assert ledger_state()["training_labels"] == 1 and fake_launcher.launched == []


def test_a_failed_launch_gives_the_labels_back(feedback_client, trigger_client, monkeypatch):
    class Broken:
        def launch(self, job_id):
            raise RuntimeError("quota")

    monkeypatch.setattr(launchers, "launcher", Broken)
    for id_, _ in predictions(3):
        feedback_client.post("/feedback", json=report(id_, role="clinician"), headers=CLINICIAN)
    assert redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION)) == [200] * 3
    [job] = all_jobs().values()
    assert (job["status"], job["error"]) == ("failed", "launch_failed")
    assert ledger_state()["active_job"] is None and ledger_state()["labels_at_last_job"] == 0  # the next label retries


@pytest.fixture
def second_clinician(monkeypatch) -> dict[str, str]:
    """A second local clinician beside CLINICIAN, and the cloud's rule: two clinicians' new labels per job."""
    other = "another-local-clinician-key"
    keys = ",".join(hashlib.sha256(key.encode()).hexdigest() for key in (CLINICIAN_KEY, other))
    monkeypatch.setenv("DEEPSKIN_LOCAL_CLINICIAN_KEYS", keys)
    monkeypatch.setenv("DEEPSKIN_RETRAIN_MIN_CLINICIANS", "2")
    return {"X-DeepSkin-Clinician": other}


def label(feedback_client, trigger_client, headers: dict, n: int = 1) -> None:
    for id_, _ in predictions(n):
        assert feedback_client.post("/feedback", json=report(id_, role="clinician"), headers=headers).status_code == 202
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))


def test_one_clinician_alone_never_starts_a_job(feedback_client, trigger_client, fake_launcher, second_clinician):
    label(feedback_client, trigger_client, CLINICIAN, 4)  # past the threshold of 3, but one clinician's
    assert ledger_state()["training_labels"] == 4 and fake_launcher.launched == []
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202  # nor by hand
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    assert fake_launcher.launched == []
    assert "clinician" not in json.dumps(ledger_state(), default=str).replace("clinician_labels", "")  # pseudonyms only
    label(feedback_client, trigger_client, second_clinician)
    [job_id] = fake_launcher.launched
    assert (all_jobs()[job_id]["new_labels"], all_jobs()[job_id]["clinicians"]) == (5, 2)
    ledger.finish(job_id, {"status": "done"})
    label(feedback_client, trigger_client, CLINICIAN, 3)  # new labels again, one clinician's: no second job
    assert len(fake_launcher.launched) == 1


def test_a_failed_job_gives_its_clinicians_back_too(feedback_client, trigger_client, fake_launcher, second_clinician):
    label(feedback_client, trigger_client, CLINICIAN, 2)
    label(feedback_client, trigger_client, second_clinician)
    [job_id] = fake_launcher.launched
    ledger.finish(job_id, {"status": "failed"}, give_labels_back=True)
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202  # both clinicians' labels count
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    assert len(fake_launcher.launched) == 2


def test_each_clinician_has_a_daily_quota_of_manual_retrains(feedback_client, trigger_client, fake_launcher,
                                                            second_clinician, monkeypatch):
    monkeypatch.setenv("DEEPSKIN_MANUAL_RETRAINS_PER_DAY", "1")
    monkeypatch.setenv("DEEPSKIN_RETRAIN_MIN_LABELS", "50")
    for _ in range(2):
        label(feedback_client, trigger_client, CLINICIAN)
        label(feedback_client, trigger_client, second_clinician)
        assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202
        redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
        ledger.finish(fake_launcher.launched[-1], {"status": "done"})
    assert len(fake_launcher.launched) == 1  # the second request the same day was refused
    assert feedback_client.post("/retrain", headers=second_clinician).status_code == 202  # another's quota
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    assert len(fake_launcher.launched) == 2


def test_no_job_starts_without_enough_new_labels_not_even_by_hand(feedback_client, trigger_client, fake_launcher,
                                                                  monkeypatch):
    monkeypatch.setenv("DEEPSKIN_RETRAIN_MIN_NEW_LABELS", "3")
    monkeypatch.setenv("DEEPSKIN_RETRAIN_MIN_LABELS", "50")
    label(feedback_client, trigger_client, CLINICIAN, 2)
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    assert fake_launcher.launched == []  # two new labels: refused
    label(feedback_client, trigger_client, CLINICIAN)
    assert feedback_client.post("/retrain", headers=CLINICIAN).status_code == 202
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    [job_id] = fake_launcher.launched
    assert all_jobs()[job_id]["new_labels"] == 3


# --- a real job, the gate and the registry ----------------------------------------------------------------

def approved(folder: Path, decision_id: str) -> dict:
    """A candidate that passes every margin on the gate set, with no clinicians' held-out labels to show that
    it learned, waits for a person (training.promote): here, one approves it."""
    decision = promote.gate(folder, decision_id, FOLDERS)
    assert (decision["status"], decision["feedback_test"]["applies"]) == ("approved_pending", False)
    return promotion.approve(decision_id)


def test_clinician_labels_start_exactly_one_job_whose_gate_decision_holds_both_models(feedback_client,
                                                                                     trigger_client):
    labels = ["mel", "nv", "malignant", "bkl"]  # the third image (LESIONS[2]) is in the fixture's gate set
    for (id_, _), label in zip(predictions(4), labels):
        answer = feedback_client.post("/feedback", json=report(id_, role="clinician", label=label),
                                      headers=CLINICIAN)
        assert answer.get_json()["counts_as"] == "training_label"
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION) * 2)
    [(job_id, job)] = all_jobs().items()
    assert job["trigger"] == "training_label" and job["new_labels"] == 3

    returncode = launchers.launcher().wait(job_id, timeout=400)
    job = all_jobs()[job_id]
    assert returncode == 0 and job["status"] == "done", Path(job["handle"].rsplit("log ", 1)[-1]).read_text()[-3000:]
    # The first job fine-tunes the served weights: the shipped model's checkpoint was registered with it.
    assert job["init"] == f"checkpoint of model {SHIPPED_VERSION}"
    kept = job["feedback_images"] + job["feedback_calibration_labels"] + job["feedback_test_labels"]
    assert job["feedback_duplicates_dropped"] == 1 and kept == 3
    decision = job["decision"]
    stored = registry.decision_doc(job_id).get().to_dict()
    assert {k: stored[k] for k in decision} == decision
    candidate, baseline = decision["candidate"], decision["baseline"]
    print("\npromotion decision:", json.dumps(decision, indent=1))
    assert candidate["version"] != baseline["version"] == decision["current"]["version"] == SHIPPED_VERSION
    assert candidate["images"] == baseline["images"] == len(gate_lesions(FOLDERS))
    expected = all(d["ci95"][0] > -promote.ALL_CHECKS[c][0] if promote.ALL_CHECKS[c][1] > 0
                   else d["ci95"][1] < promote.ALL_CHECKS[c][0] for c, d in decision["differences"].items())
    # Too few held-out labels to show that it learned: a candidate within the margins waits for a person.
    held_out = decision["feedback_test"]
    assert held_out["labels"] == job["feedback_test_labels"] and not held_out["applies"]
    assert not decision["promoted"] and decision["status"] == ("approved_pending" if expected else "refused")
    assert registry.current()["version"] == baseline["version"]
    assert decision["feedback_set"]["feedback_duplicates_dropped"] == 1
    assert ledger_state()["active_job"] is None


def test_a_job_without_a_data_source_fails_closed_and_says_why():
    """Production's rule: no partial gate. The fixture machine has no PAD-UFES-20 or non-lesion folder."""
    ledger.job_doc("no-data").set({"status": "queued", "trigger": "manual"})
    env = {k: v for k, v in os.environ.items() if k != "DEEPSKIN_ALLOW_PARTIAL_GATE"}
    done = subprocess.run([sys.executable, "-m", "training.retrain", "--job-id", "no-data", "--config",
                           "training/configs/retrain_smoke.json"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    job = all_jobs()["no-data"]
    assert done.returncode != 0 and job["status"] == "failed", done.stderr[-2000:]
    assert job["error"].startswith("MissingDataSource: no folder for pad_ufes20, non_lesion")
    assert "feedback_images" not in job  # it stopped before reading any label


def test_a_worse_candidate_is_refused(tmp_path):
    # Its bands reassure nearly every lesion: "low" up to 0.99, and "high" can never be reached.
    folder, version = candidate_from_served(tmp_path, thresholds=for_both_types(low=0.99, high=1.01))
    decision = promote.gate(folder, "worse", FOLDERS)
    checks = decision["checks"]
    assert not decision["promoted"] and not checks["malignant_low"] and not checks["malignant_low_dermoscopy"]
    assert all(passed for check, passed in checks.items() if not check.startswith("malignant_low"))
    assert decision["candidate"]["malignant_low"] > decision["baseline"]["malignant_low"]
    assert registry.current()["version"] == SHIPPED_VERSION != version
    assert registry.decision_doc("worse").get().to_dict()["status"] == "refused"


def test_candidates_are_compared_with_the_pinned_baseline_and_a_promoted_checkpoint_starts_the_next_retrain(
        tmp_path):
    served = SHIPPED_VERSION
    folder, first = candidate_from_served(tmp_path)  # the same network: non-inferior on every check
    config = TrainConfig(image_size=64)
    checkpoint_file.save(checkpoint(pretrained(LiteConfig()), config), folder / registry.CHECKPOINT)
    assert approved(folder, "first")["promoted"]
    assert registry.current()["version"] == first and registry.current()["checkpoint_uri"]
    assert registry.current()["checkpoint_sha256"] == checkpoint_file.file_sha256(folder / registry.CHECKPOINT)
    _, _, init = retrain.starting_point(config, registry.current(), tmp_path)
    assert init == f"checkpoint of model {first}"

    second, version = candidate_from_served(tmp_path / "next")
    decision = approved(second, "second")
    assert decision["baseline"]["version"] == served and decision["current"]["version"] == first
    assert registry.current()["version"] == version


def test_when_a_person_must_approve_a_passing_candidate_waits_for_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSKIN_PROMOTION_APPROVAL", "required")
    served = SHIPPED_VERSION
    folder, version = candidate_from_served(tmp_path)
    decision = promote.gate(folder, "waits", FOLDERS)
    assert (decision["promoted"], decision["status"]) == (False, "approved_pending")
    assert registry.current()["version"] == served
    shown = ops.decision_summary({"id": "waits", **registry.decision_doc("waits").get().to_dict()})
    assert shown["status"] == "approved_pending" and shown["numbers"]["baseline"]["version"] == served
    assert promotion.approve("waits")["status"] == "promoted" and registry.current()["version"] == version
    with pytest.raises(promotion.NotAwaitingApproval, match="not awaiting approval"):
        promotion.approve("waits")
    refused, _ = candidate_from_served(tmp_path / "worse", thresholds=for_both_types(low=0.3, high=1.01))
    promote.gate(refused, "refused", FOLDERS)
    with pytest.raises(promotion.NotAwaitingApproval, match="not awaiting approval"):
        promotion.approve("refused")


def test_a_promotion_reaches_the_predict_path_without_a_redeploy_and_rolls_back(tmp_path, monkeypatch):
    served = served_model().version
    folder, version = candidate_from_served(tmp_path)
    decision = approved(folder, "better")
    assert decision["promoted"] and decision["status"] == "promoted"
    assert registry.current()["version"] == version and registry.current()["previous"]["version"] == served

    data, token = LESIONS[1].read_bytes(), secrets.token_urlsafe(24)
    assert predict_service.predict_bytes(data, "image/jpeg", token).fields["model_version"] == version

    def unavailable():
        raise ConnectionError("firestore is down")

    with monkeypatch.context() as patch:  # a failing registry keeps the model in use
        patch.setattr(registry, "current", unavailable)
        assert served_model().version == version

    assert registry.rollback()["version"] == served
    assert predict_service.predict_bytes(data, "image/jpeg", token).fields["model_version"] == served


def test_a_model_file_changed_after_promotion_is_never_loaded(tmp_path):
    folder, version = candidate_from_served(tmp_path)  # the same network: non-inferior on every check
    assert approved(folder, "tampered")["promoted"]
    record = registry.current()
    assert record["onnx_sha256"] == registry.sha256(folder / registry.ONNX)
    assert registry.fetch(record, tmp_path / "cache").exists()
    # Someone with write access to the bucket swaps the card (its thresholds decide the risk band).
    store.blob_at(record["card_uri"]).upload_from_string(card_path(BUNDLED_MODEL).read_bytes())
    with pytest.raises(registry.IntegrityError):
        registry.fetch(record, tmp_path / "fresh-cache")
    (tmp_path / "cache" / version / registry.ONNX).write_bytes(b"changed in the local cache")
    with pytest.raises(registry.IntegrityError):
        registry.fetch(record, tmp_path / "cache")


def test_the_registry_pointer_is_in_the_models_bucket(tmp_path):
    """Not in Firestore, where the predict functions could rewrite it (infra/iam.tf: only the training
    identity writes the models bucket)."""
    folder, version = candidate_from_served(tmp_path)
    approved(folder, "pointer")
    stored = json.loads(registry.pointer_blob().download_as_bytes())
    assert stored["version"] == version == registry.current()["version"]
    assert not store.firestore_client().collection("models").document("current").get().exists


IMAGE = "europe-west4-docker.pkg.dev/p/deepskin/training"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_vertex_custom_job_request(monkeypatch):
    monkeypatch.setenv("DEEPSKIN_JOB_LAUNCHER", "vertex")
    monkeypatch.setenv("DEEPSKIN_TRAINING_IMAGE", f"{IMAGE}@{DIGEST}")
    monkeypatch.setenv("DEEPSKIN_TRAINING_SERVICE_ACCOUNT", "train@p.iam.gserviceaccount.com")
    monkeypatch.setenv("DEEPSKIN_TRAINING_ACCELERATOR", "NVIDIA_L4")
    monkeypatch.setenv("DEEPSKIN_TRAINING_ACCELERATORS", "1")
    monkeypatch.delenv("DEEPSKIN_RETRAIN_CONFIG")
    body = launchers.custom_job("j1")
    pool = body["jobSpec"]["workerPoolSpecs"][0]
    assert pool["machineSpec"]["acceleratorType"] == "NVIDIA_L4"
    assert pool["containerSpec"]["args"][:4] == ["--job-id", "j1", "--config", "training/configs/gpu.json"]
    assert body["jobSpec"]["serviceAccount"] == "train@p.iam.gserviceaccount.com"
    assert pool["containerSpec"]["imageUri"] == f"{IMAGE}@{DIGEST}"
    monkeypatch.setenv("DEEPSKIN_JOB_TIMEOUT_S", "5400")
    assert launchers.custom_job("j1")["jobSpec"]["scheduling"]["timeout"] == "5400s"  # Vertex AI stops it there


@pytest.mark.parametrize("image", [f"{IMAGE}:latest", f"{IMAGE}:1", f"{IMAGE}@sha256:abc", ""])
def test_a_retrain_never_runs_an_image_by_tag(monkeypatch, image):
    monkeypatch.setenv("DEEPSKIN_TRAINING_IMAGE", image)
    monkeypatch.setenv("DEEPSKIN_TRAINING_SERVICE_ACCOUNT", "train@p.iam.gserviceaccount.com")
    with pytest.raises(ValueError, match="by digest"):
        launchers.custom_job("j1")


def test_in_google_cloud_a_job_needs_two_clinicians_by_default(monkeypatch):
    monkeypatch.delenv("DEEPSKIN_RETRAIN_MIN_CLINICIANS", raising=False)
    monkeypatch.delenv("K_SERVICE", raising=False)
    assert settings().retrain_min_clinicians == 1  # the local stack
    monkeypatch.setenv("K_SERVICE", "retrain")
    assert settings().retrain_min_clinicians == 2


@pytest.mark.parametrize(("cloud", "setting", "passed"), [
    ({"CLOUD_ML_JOB_ID": "123"}, None, "required"),  # a Vertex AI job: a person approves
    ({"K_SERVICE": "retrain"}, None, "required"),  # a function on Cloud Run: its jobs too
    ({}, None, "gate"),  # the local stack: the gate alone
    ({"K_SERVICE": "retrain"}, "gate", "gate"),  # an operator's explicit choice (Terraform's promotion_approval)
])
def test_in_google_cloud_a_person_approves_promotions_by_default(monkeypatch, cloud, setting, passed):
    for name in ("CLOUD_ML_JOB_ID", "K_SERVICE", "DEEPSKIN_PROMOTION_APPROVAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**cloud, **({"DEEPSKIN_PROMOTION_APPROVAL": setting} if setting else {})}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEEPSKIN_TRAINING_IMAGE", f"{IMAGE}@{DIGEST}")
    monkeypatch.setenv("DEEPSKIN_TRAINING_SERVICE_ACCOUNT", "train@p.iam.gserviceaccount.com")
    env = {e["name"]: e["value"] for e in launchers.custom_job("j1")["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]}
    assert env["DEEPSKIN_PROMOTION_APPROVAL"] == passed
    assert settings().approval_required == (passed == "required")
