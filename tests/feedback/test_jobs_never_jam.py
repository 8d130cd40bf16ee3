"""Retraining cannot stop for good: a job that dies, never starts or runs too long frees the ledger.

The sweep (deepskin.loop.sweeper, scheduled) reads each active job's real state from its launcher; the ledger's
hold on a job also expires on its own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from feedback_support import (
    CLINICIAN,
    RETRAIN_SUBSCRIPTION,
    all_jobs,
    ledger_state,
    predictions,
    pull,
    redeliver_pulled,
    report,
)
from google.cloud import firestore

from deepskin.loop import launchers, ledger, sweeper


def label(feedback_client, trigger_client, count: int = 1) -> None:
    """`count` clinician labels on fresh predictions, delivered to the retrain trigger."""
    for id_, _ in predictions(count):
        assert feedback_client.post("/feedback", json=report(id_, role="clinician"), headers=CLINICIAN
                                    ).status_code == 202
    assert set(redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))) == {200}


def wait_for_status(job_id: str, status: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while all_jobs()[job_id]["status"] != status:
        assert time.monotonic() < deadline, f"job {job_id} not {status} in {timeout} s: {all_jobs()[job_id]}"
        time.sleep(0.5)


def test_a_job_killed_mid_run_is_swept_and_the_next_label_starts_a_new_one(feedback_client, trigger_client,
                                                                           request):
    label(feedback_client, trigger_client, 3)  # the threshold: the real local launcher starts training.retrain
    [killed] = all_jobs()
    wait_for_status(killed, "running")
    assert launchers.scratch_dir(killed).is_dir()  # it holds the clinicians' images while it runs
    launcher = launchers.launcher()
    launcher.cancel(all_jobs()[killed]["handle"])  # SIGKILL: pre-emption; the job cannot record anything
    launcher.wait(killed, timeout=30)
    assert ledger_state()["active_job"] == killed  # nothing else would ever free it

    assert sweeper.sweep()["freed_job"] == killed
    job = all_jobs()[killed]
    assert (job["status"], job["error"]) == ("failed", "ended_without_closing")
    assert ledger_state()["active_job"] is None and ledger_state()["labels_at_last_job"] == 0  # its labels are given back
    assert not launchers.scratch_dir(killed).exists()

    fake = request.getfixturevalue("fake_launcher")  # the next job need not train for real
    label(feedback_client, trigger_client)
    assert len(fake.launched) == 1 and fake.launched[0] != killed
    assert ledger_state()["active_job"] == fake.launched[0]


def test_a_running_job_is_left_alone(feedback_client, trigger_client, fake_launcher):
    label(feedback_client, trigger_client, 3)
    assert sweeper.sweep()["freed_job"] is None and fake_launcher.cancelled == []
    assert ledger_state()["active_job"] == fake_launcher.launched[0]


def test_a_job_past_its_timeout_is_cancelled_and_frees_the_ledger(feedback_client, trigger_client, fake_launcher,
                                                                   monkeypatch):
    label(feedback_client, trigger_client, 3)
    monkeypatch.setenv("DEEPSKIN_JOB_TIMEOUT_S", "0")
    [job_id] = fake_launcher.launched
    assert sweeper.sweep()["freed_job"] == job_id
    assert fake_launcher.cancelled == [f"fake {job_id}"] and all_jobs()[job_id]["error"] == "timed_out"
    assert ledger_state()["active_job"] is None


def test_a_job_that_never_started_is_swept(feedback_client, trigger_client, fake_launcher):
    label(feedback_client, trigger_client, 3)
    [job_id] = fake_launcher.launched
    # As if the trigger died between creating the job and launching it.
    ledger.job_doc(job_id).update({"handle": firestore.DELETE_FIELD,
                                 "created_at": datetime.now(UTC) - ledger.LAUNCH_GRACE})
    assert sweeper.sweep()["freed_job"] == job_id
    assert all_jobs()[job_id]["error"] == "never_started" and ledger_state()["active_job"] is None


def test_a_finished_job_is_never_marked_failed_by_the_sweep(feedback_client, trigger_client, fake_launcher):
    label(feedback_client, trigger_client, 3)
    [job_id] = fake_launcher.launched
    ledger.job_doc(job_id).update({"status": "done"})  # it recorded its result, then died before freeing the ledger
    assert sweeper.sweep()["freed_job"] == job_id
    assert all_jobs()[job_id]["status"] == "done" and ledger_state()["active_job"] is None
    assert ledger_state()["labels_at_last_job"] == 3  # a finished job keeps its labels


def test_an_expired_hold_on_the_ledger_lets_the_next_job_start(feedback_client, trigger_client, fake_launcher):
    label(feedback_client, trigger_client, 3)
    label(feedback_client, trigger_client, 3)
    assert len(fake_launcher.launched) == 1  # held by the first
    ledger.state_doc().update({"active_job_expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    label(feedback_client, trigger_client)
    assert len(fake_launcher.launched) == 2 and ledger_state()["active_job"] == fake_launcher.launched[1]
