"""What the learning loop trusts cannot be rewritten by a function that decodes untrusted images.

Every function may write every Firestore collection (its IAM is per database: infra/permissions.py). So the
records that decide what is served (the pointer, the pinned baseline, candidates awaiting approval) live in
the models bucket, the retraining job checks each label again, and the sweep checks each job handle before
acting on it. Each test forges in Firestore what a compromised function could, and shows it changes nothing.
"""

# pylint: disable=use-implicit-booleaness-not-comparison  # `== []` shows what was found in the diff

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from feedback_support import CLINICIAN, candidate_from_served, predictions, report

from deepskin.core.bundle import BUNDLED_MODEL, load_card
from deepskin.loop import launchers, ledger, promotion, sweeper
from deepskin.loop.labels import clinician_labels
from deepskin.services import registry, store
from deepskin.services.config import settings
from training import promote

SHIPPED_VERSION = load_card(BUNDLED_MODEL)["version"]
FOLDERS: dict = {}  # the fixture HAM10000 alone (see test_retrain.py)
WORSE = {"thresholds": {kind: {"low": 0.3, "high": 1.01} for kind in ("dermoscopy", "clinical")}}


def test_a_baseline_or_an_approval_forged_in_firestore_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSKIN_PROMOTION_APPROVAL", "required")
    promotion.current_record(promote.shipped_checkpoint)  # the shipped model is registered, as the first gate does
    # A model whose "high" band is never reached, stored in the models bucket (an old version, say).
    worse_folder, worse = candidate_from_served(tmp_path / "worse", **WORSE)
    forged = registry.upload(worse_folder / registry.ONNX)
    models = store.firestore_client().collection("models")
    models.document("baseline").set(forged)  # where the baseline used to be read from
    registry.decision_doc("forged").set({"status": "approved_pending", "promoted": False, "candidate_record": forged})

    folder, version = candidate_from_served(tmp_path)
    decision = promote.gate(folder, "real", FOLDERS)
    assert decision["baseline"]["version"] == SHIPPED_VERSION != worse
    with pytest.raises(promotion.NotAwaitingApproval, match="not awaiting approval"):
        promotion.approve("forged")
    assert registry.current()["version"] == SHIPPED_VERSION
    assert decision["status"] == "approved_pending" and promotion.approve("real")["status"] == "promoted"
    assert registry.current()["version"] == version


def test_the_job_trains_only_on_labels_it_can_verify(tmp_path, feedback_client, monkeypatch):
    reports = store.firestore_client().collection(store.FEEDBACK)
    made = predictions(3)
    ids = []
    for id_, _ in made:
        answer = feedback_client.post("/feedback", json=report(id_, role="clinician"), headers=CLINICIAN)
        ids.append(answer.get_json()["report_id"])
    # The clinician's own correction: a new label, with a copy of its own.
    assert feedback_client.post("/feedback", json=report(made[0][0], role="clinician", label="bcc"),
                                headers=CLINICIAN).get_json()["report_id"] == ids[0]
    genuine, demoted = (reports.document(id_).get().to_dict() for id_ in ids[:2])
    training = store.storage_client().bucket(settings().training_bucket)
    training.blob("ham10000/forged.jpg").upload_from_string(b"a data set image, relabelled")
    reports.document(ids[1]).update({"reporter": "local:000000000000"})  # nobody's key
    reports.document(ids[2]).update({"label": "nv"})  # the clinician said mel: its copy says so
    # A group rewritten in Firestore would move a label across the feedback split: the copy's group holds.
    reports.document(ids[0]).update({"group": "another lesion"})
    reports.document("f" * 32).set({**genuine, "training_image": f"gs://{training.name}/ham10000/forged.jpg"})
    reports.document("e" * 32).set({**demoted, "reporter": "google:someone@example.org"})  # not this report's copy
    reports.document("d" * 32).set({**genuine, "label": "not a label"})
    # Not the id of this reporter's report on this prediction (so not a report the feedback function made).
    reports.document("c" * 32).set({**genuine, "training_image": f"gs://{training.name}/feedback/{'c' * 32}.bcc.jpg"})

    images, dropped = clinician_labels(tmp_path / "scratch")
    assert ([(row["image_id"], row["label"]) for row in images], dropped) == ([(ids[0], "bcc")], 6)
    # The job knows who labelled by pseudonym only: the feedback check leaves each clinician out in turn.
    assert images[0]["clinician"] == ledger.pseudonym(genuine["reporter"]) != genuine["reporter"]
    assert images[0]["group"] == genuine["group"] == made[0][0]  # no followed spot: its prediction

    monkeypatch.setenv("DEEPSKIN_LOCAL_CLINICIAN_KEYS", "1" * 64)  # the clinician is no longer allowed
    assert clinician_labels(tmp_path / "again")[0] == []


@pytest.mark.parametrize("launcher", ["local", "vertex"])
def test_the_sweep_never_acts_on_a_handle_that_is_not_its_jobs(launcher, monkeypatch):
    monkeypatch.setenv("DEEPSKIN_JOB_TIMEOUT_S", "1")  # the forged job is long past it: the sweep would cancel
    monkeypatch.setattr(launchers.VertexLauncher, "request", lambda *_a, **_k: pytest.fail("a request was made"))
    with subprocess.Popen(["sleep", "300"], start_new_session=True) as victim:  # someone else's process group
        handles = {"local": f"pid {victim.pid}, log /tmp/x", "vertex": "projects/p/locations/r/customJobs/1"}
        try:
            ledger.state_doc().set({"active_job": "forged", "labels_at_last_job": 3})
            ledger.job_doc("forged").set({"status": "running", "launcher": launcher, "handle": handles[launcher],
                                        "created_at": datetime.now(UTC) - timedelta(hours=1)})
            assert sweeper.sweep()["freed_job"] == "forged"
            assert ledger.job_doc("forged").get().to_dict()["error"] == "invalid_handle"
            assert victim.poll() is None
        finally:
            victim.kill()


def test_a_vertex_handle_is_checked_before_any_request_is_made_with_it(monkeypatch):
    monkeypatch.setenv("DEEPSKIN_REGION", "europe-west4")
    asked = []

    def request(_method, path, **_kwargs):
        asked.append(path)
        return {"labels": {"deepskin-job": "j1"}}

    monkeypatch.setattr(launchers.VertexLauncher, "request", staticmethod(request))
    vertex = launchers.VertexLauncher()
    for forged in ("projects/p/locations/us-central1/customJobs/1",
                   "projects/p/locations/europe-west4/customJobs/1:cancel",
                   "projects/p/locations/europe-west4/customJobs/1/../../../other", "https://example.org/x",
                   "pid 1, log x"):
        assert not vertex.owns(forged, "j1"), forged
    assert asked == []
    handle = "projects/123/locations/europe-west4/customJobs/42"
    assert vertex.owns(handle, "j1") and not vertex.owns(handle, "j2")
