"""The retraining ledger: it counts the feedback, decides when to train, starts a job through its launcher
(deepskin.loop.launchers), closes it, and sweeps a job that ended without closing itself.

Firestore:
  ledger/state              {training_labels, signals, labels_at_last_job, active_job, active_job_expires_at,
                            last_job, clinician_labels, clinician_labels_at_last_job, manual_jobs}
  ledger/state/seen/{key}   one per counted message (key: the report id, or the message id of a manual
                            trigger), so a redelivered or republished message counts once; it expires after the
                            retention period, when its report (which expires with its prediction) is gone
  jobs/{id}                 {status: queued|running|done|failed, trigger, new_labels, launcher, handle, ...},
                            kept for $DEEPSKIN_RECORD_RETENTION_DAYS (Firestore TTL on `expire_at`, infra/firestore.tf)
One transaction counts a message and, when the training labels since the last job reach
$DEEPSKIN_RETRAIN_MIN_LABELS (default 50) or on a clinician's manual trigger, creates the queued job and
marks it active; while a job is active no other starts. No job starts before the new labels come from
$DEEPSKIN_RETRAIN_MIN_CLINICIANS distinct clinicians (2 on Google Cloud: one clinician alone cannot steer the
model), no job, one started by hand included, starts with fewer than $DEEPSKIN_RETRAIN_MIN_NEW_LABELS new labels
(10 on Google Cloud, 1 locally), and one clinician starts at most $DEEPSKIN_MANUAL_RETRAINS_PER_DAY jobs by
hand per UTC day. The ledger knows clinicians by a pseudonym (a hash of their identity), never by e-mail. The
launch happens after the commit (a transaction body may run more than once); a failed launch fails the job and
gives its labels back.

Nothing keeps the ledger for good: a job runs at most $DEEPSKIN_JOB_TIMEOUT_S (Vertex AI enforces it; the
sweep cancels one past it), the ledger's hold expires LEDGER_GRACE after that, and `sweep` (deepskin.loop.sweeper,
run on a schedule) reads the active job's real state from its launcher and closes a job that ended without
closing itself (killed, pre-empted), never started, or ran out of time, giving its labels back.

A job document is in Firestore, which every function may write (infra/permissions.py): its handle is checked
before the sweep acts on it. The launcher is the configured one (deepskin.loop.launchers), never the one the
document names, and the handle must be one that launcher gave to this job (`owns`). A job whose handle fails
is closed without touching what the handle names. Every setting comes from deepskin.services.config.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.cloud import firestore

from deepskin.core.report import LABELS, ROLES, SIGNAL, TRAINING_LABEL
from deepskin.loop import launchers
from deepskin.services import store
from deepskin.services.config import settings
from deepskin.services.pubsub import publish_message

log = logging.getLogger(__name__)

JOBS = "jobs"
MANUAL = "manual"
REPORT_ID = re.compile(r"^[0-9a-f]{32}$")
CLOSED = ("done", "failed")
LAUNCH_GRACE = timedelta(minutes=10)  # a job with no launcher handle after this never started
LEDGER_GRACE = timedelta(minutes=30)  # past the timeout, for the launcher to have stopped the job


class Poison(Exception):
    """A message that no retry can make valid: it goes to the dead-letter topic instead."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Counted:
    key: str  # what makes a redelivery recognisable
    kind: str  # training_label, signal or manual
    requested_by: str | None = None


def decode(message: dict) -> Counted:
    """A Pub/Sub message (as in the CloudEvent's `message`) -> what to count; Poison when it is invalid."""
    attributes = message.get("attributes") or {}
    try:
        data = json.loads(base64.b64decode(message.get("data") or "", validate=True))
    except (binascii.Error, ValueError):  # ValueError covers JSON and UTF-8 errors
        raise Poison("undecodable") from None
    if not isinstance(data, dict):
        raise Poison("not_a_json_object")
    if attributes.get("manual") == "true" or MANUAL in data:
        message_id = message.get("messageId") or message.get("message_id")
        if attributes.get("role") != "clinician" or not isinstance(data.get("requested_by"), str) or not message_id:
            raise Poison("manual_trigger_not_from_clinician")
        return Counted(f"message-{message_id}", MANUAL, data["requested_by"])
    report_id = data.get("report_id")
    if not isinstance(report_id, str) or not REPORT_ID.match(report_id):
        raise Poison("invalid_report_id")
    if data.get("label") not in LABELS or data.get("role") not in ROLES:
        raise Poison("invalid_label_or_role")
    if data.get("counts_as") != (TRAINING_LABEL if data["role"] == "clinician" else SIGNAL):
        raise Poison("counts_as_does_not_match_role")  # a user report never becomes a training label
    return Counted(report_id, data["counts_as"])


def job_timeout() -> timedelta:
    return timedelta(seconds=settings().job_timeout_s)


def state_doc() -> firestore.DocumentReference:
    return store.firestore_client().collection("ledger").document("state")


def job_doc(job_id: str) -> firestore.DocumentReference:
    return store.firestore_client().collection(JOBS).document(job_id)


def handle(message: dict) -> str | None:
    """Count one message; start a job when it is due. Returns the started job's id."""
    counted = decode(message)
    job_id = count(store.firestore_client().transaction(), counted, settings().retrain_min_labels)
    if job_id is None:
        return None
    try:
        name, handle_ = launchers.launcher_name(), launchers.launcher().launch(job_id)
    except Exception:  # pylint: disable=broad-except
        # Redelivery would not help (the message is already counted): give the labels back instead.
        log.exception("could not launch job %s", job_id)
        finish(job_id, {"status": "failed", "error": "launch_failed"}, give_labels_back=True)
        return None
    job_doc(job_id).update({"launcher": name, "handle": handle_})
    log.info("job %s launched (%s): %s", job_id, name, handle_)
    return job_id


def pseudonym(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


@firestore.transactional
def count(transaction: firestore.Transaction, counted: Counted, threshold: int) -> str | None:
    state_ref = state_doc()
    seen_ref = state_ref.collection("seen").document(counted.key)
    if seen_ref.get(transaction=transaction).exists:
        log.info("message %s already counted", counted.key)
        return None
    reporter = None
    if counted.kind == TRAINING_LABEL:  # whose label: the report names its clinician, the message does not
        report = store.firestore_client().collection(store.FEEDBACK).document(counted.key)
        reporter = (report.get(transaction=transaction).to_dict() or {}).get("reporter")
    state = state_ref.get(transaction=transaction).to_dict() or {}
    labels = state.get("training_labels", 0) + (counted.kind == TRAINING_LABEL)
    by_clinician = dict(state.get("clinician_labels", {}))
    if reporter:
        by_clinician[pseudonym(reporter)] = by_clinician.get(pseudonym(reporter), 0) + 1
    update = {"training_labels": labels, "signals": state.get("signals", 0) + (counted.kind == SIGNAL),
              "clinician_labels": by_clinician, "updated_at": firestore.SERVER_TIMESTAMP}
    new_labels = labels - state.get("labels_at_last_job", 0)
    at_last_job = state.get("clinician_labels_at_last_job", {})
    clinicians = sum(n > at_last_job.get(who, 0) for who, n in by_clinician.items())
    due = counted.kind == MANUAL or (counted.kind == TRAINING_LABEL and new_labels >= threshold)
    refused = not_yet(state, counted, clinicians, new_labels) if due else None
    job_id = None
    if refused:
        log.info("training is due but %s", refused)
    elif due:
        job_id = uuid.uuid4().hex[:20]
        transaction.create(job_doc(job_id), {
            "status": "queued", "trigger": counted.kind, "requested_by": counted.requested_by,
            "new_labels": new_labels, "clinicians": clinicians,
            "labels_at_previous_job": state.get("labels_at_last_job", 0),
            "clinician_labels_at_previous_job": at_last_job, "created_at": firestore.SERVER_TIMESTAMP,
            **store.lifecycle_fields(days=settings().record_retention_days)})
        update.update(active_job=job_id, last_job=job_id, labels_at_last_job=labels,
                      clinician_labels_at_last_job=by_clinician,
                      active_job_expires_at=datetime.now(UTC) + job_timeout() + LEDGER_GRACE)
        if counted.kind == MANUAL:
            update["manual_jobs"] = {pseudonym(counted.requested_by): {"day": today(),
                                                                       "jobs": manual_jobs_today(state, counted) + 1}}
    transaction.create(seen_ref, {"kind": counted.kind, "job": job_id, "refused": refused,
                                  "at": firestore.SERVER_TIMESTAMP, **store.lifecycle_fields()})
    transaction.set(state_ref, update, merge=True)
    return job_id


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def manual_jobs_today(state: dict, counted: Counted) -> int:
    used = state.get("manual_jobs", {}).get(pseudonym(counted.requested_by or ""), {})
    return used.get("jobs", 0) if used.get("day") == today() else 0


def not_yet(state: dict, counted: Counted, clinicians: int, new_labels: int) -> str | None:
    """Why a due job may not start now (None: it may)."""
    if holds_ledger(state):
        return f"job {state['active_job']} is still active"
    if new_labels < settings().retrain_min_new_labels:  # a job by hand too: retraining on nothing new learns nothing
        return f"{new_labels} new label(s) since the last job, {settings().retrain_min_new_labels} needed"
    if clinicians < settings().retrain_min_clinicians:
        return f"the new labels come from {clinicians} clinician(s), {settings().retrain_min_clinicians} needed"
    if counted.kind == MANUAL and manual_jobs_today(state, counted) >= settings().manual_retrains_per_day:
        return "the clinician's manual retrains for today are used up"
    return None


def holds_ledger(state: dict) -> bool:
    """An active job holds the ledger until it closes or its hold expires (a job from before expiries: held)."""
    expires_at = state.get("active_job_expires_at")
    return bool(state.get("active_job")) and (expires_at is None or datetime.now(UTC) < expires_at)


def mark_running(job_id: str, **fields) -> None:
    job_doc(job_id).update({"status": "running", "started_at": firestore.SERVER_TIMESTAMP, **fields})


def finish(job_id: str, fields: dict, give_labels_back: bool = False) -> None:
    """Close a job and free the ledger for the next one (the job's own record and the ledger, in one transaction)."""
    close(store.firestore_client().transaction(), job_id, fields, give_labels_back)


@firestore.transactional
def close(transaction: firestore.Transaction, job_id: str, fields: dict, give_labels_back: bool) -> None:
    state_ref, job_ref = state_doc(), job_doc(job_id)
    state = state_ref.get(transaction=transaction).to_dict() or {}
    job = job_ref.get(transaction=transaction).to_dict() or {}
    transaction.set(job_ref, {**fields, "finished_at": firestore.SERVER_TIMESTAMP}, merge=True)
    if state.get("active_job") == job_id:
        update = {"active_job": None}
        if give_labels_back:
            update.update(given_back(job))
        transaction.update(state_ref, update)  # update, not a merge: the clinicians' counts are replaced whole


def sweep() -> str | None:
    """Close the active job if it is no longer running; returns its id when the ledger was freed."""
    job_id = (state_doc().get().to_dict() or {}).get("active_job")
    if not job_id:
        return None
    job = job_doc(job_id).get().to_dict() or {}
    error = not_running(job_id, job)
    if error is None or not abandon(store.firestore_client().transaction(), job_id, error):
        return None
    shutil.rmtree(launchers.scratch_dir(job_id), ignore_errors=True)
    log.warning("job %s closed by the sweep: %s", job_id, error)
    return job_id


def not_running(job_id: str, job: dict) -> str | None:
    """Why a job no longer runs (None while it does), from its launcher's view of it; cancels one past its
    timeout."""
    if job.get("status") in CLOSED:
        return "closed_without_freeing_the_ledger"
    age = datetime.now(UTC) - job["created_at"] if job.get("created_at") else LAUNCH_GRACE
    if not job.get("handle"):
        return "never_started" if age >= LAUNCH_GRACE else None
    launcher_ = launchers.make_launcher()
    if job.get("launcher") != launchers.launcher_name() or not launcher_.owns(job["handle"], job_id):
        return "invalid_handle"  # not acted on: it may name someone else's process or job
    if not launcher_.running(job["handle"]):
        return "ended_without_closing"  # killed, pre-empted or crashed before training.retrain could record it
    if age > job_timeout():
        launcher_.cancel(job["handle"])
        return "timed_out"
    return None


@firestore.transactional
def abandon(transaction: firestore.Transaction, job_id: str, error: str) -> bool:
    """Fail the job unless it closed meanwhile, free the ledger if it still holds it, and give the labels
    back unless it finished; False when the ledger had already moved on."""
    state_ref, job_ref = state_doc(), job_doc(job_id)
    state = state_ref.get(transaction=transaction).to_dict() or {}
    job = job_ref.get(transaction=transaction).to_dict() or {}
    if state.get("active_job") != job_id:
        return False
    update = {"active_job": None}
    if job.get("status") != "done":
        update.update(given_back(job))
    if job.get("status") not in CLOSED:
        transaction.set(job_ref, {"status": "failed", "error": error, "finished_at": firestore.SERVER_TIMESTAMP},
                        merge=True)
    transaction.update(state_ref, update)  # update, not a merge: the clinicians' counts are replaced whole
    return True


def given_back(job: dict) -> dict:
    """The ledger fields that make a job's labels new again (it failed, or never started)."""
    return {"labels_at_last_job": job.get("labels_at_previous_job", 0),
            "clinician_labels_at_last_job": job.get("clinician_labels_at_previous_job", {})}


def dead_letter(message: dict, reason: str) -> None:
    """Keep the poison message, as it came, on the dead-letter topic for inspection and replay."""
    raw = message.get("data") or ""
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        data = str(raw).encode()
    attributes = {**(message.get("attributes") or {}), "dead_letter_reason": reason,
                  "original_message_id": str(message.get("messageId") or message.get("message_id") or "")}
    publish_message(settings().feedback_dead_topic, data, attributes)
    log.warning("poison message %s (%s) sent to %s", attributes["original_message_id"], reason,
                settings().feedback_dead_topic)
