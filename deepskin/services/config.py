"""Every setting, read from environment variables in one place (infra/functions.tf sets them in the cloud), and
where this process runs (`runs_on`), which every local-or-cloud choice asks here.

No other module of deepskin.services or deepskin.loop, nor training.promote or training.retrain, reads a
DEEPSKIN_* variable (tests/test_settings_in_one_place.py). The clients' own defaults (deepskin.clients) and
training's data folders (training.data) are theirs, not the services'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ORIGINS = "http://127.0.0.1:8080,http://localhost:8080"
# Set by Google Cloud itself: Cloud Run (every function) and Vertex AI custom jobs. There a person approves every
# promotion and a job needs two clinicians' new labels, unless the settings say otherwise (Terraform sets them too).
ON_GOOGLE_CLOUD = ("K_SERVICE", "CLOUD_ML_JOB_ID")
GOOGLE_CLOUD, EMULATORS, NEITHER = "google_cloud", "emulators", "neither"
APPROVAL_REQUIRED, GATE_ALONE = "required", "gate"
LOCAL_LAUNCHER, VERTEX_LAUNCHER = "local", "vertex"


@dataclass(frozen=True)
class Settings:
    project: str
    uploads_bucket: str
    results_bucket: str
    models_bucket: str
    training_bucket: str
    feedback_topic: str
    feedback_dead_topic: str
    retention_days: int  # health data: uploads, results, heatmaps, reports, the ledger's record of each report
    record_retention_days: int  # what the learning loop did: training jobs and the gate's decisions
    allowed_origins: tuple[str, ...]
    model_path: str | None
    # Who may do what (deepskin.services.identity); an empty list admits nobody.
    clinicians: tuple[str, ...]  # verified Google e-mails
    clinician_audience: str | None  # the feedback function's URL, which clinicians' ID tokens are minted for
    operators: tuple[str, ...]  # verified Google e-mails that may read the operator page's data
    operator_audiences: tuple[str, ...]  # audiences accepted on operators' ID tokens (the ops function's URL, ...)
    local_clinician_keys: tuple[str, ...]  # sha256 of the local stand-in keys (emulators only)
    promotion_approval: str  # "required": a person promotes what the gate passed; "gate": the gate promotes alone
    retrain_min_clinicians: int  # distinct clinicians whose new labels a job needs (2 on Google Cloud, 1 locally)
    manual_retrains_per_day: int  # jobs one clinician may start by hand per UTC day
    retrain_min_new_labels: int  # new clinician labels any job needs, one started by hand too (10 on Google Cloud, 1 locally)
    labelled_retention_days: int  # a clinician's label and its training copy: the consented retention, not the uploads'
    allow_partial_gate: bool  # the gate may run without a source's folder: the repository's fixture tests only
    runs_on: str  # GOOGLE_CLOUD, EMULATORS or NEITHER (`runs_on`)
    model_registry: bool  # the served model follows the registry (off where no backend is, or when set "off")
    model_check_seconds: float  # how often a serving process asks the registry which version is current
    # The learning loop's jobs (deepskin.loop.ledger, deepskin.loop.launchers).
    retrain_min_labels: int  # new training labels that start a job on their own
    job_timeout_s: int  # a job's longest run (Vertex AI enforces it; the sweep cancels one past it)
    job_launcher: str  # LOCAL_LAUNCHER (a child process) or VERTEX_LAUNCHER (a Vertex AI custom job)
    retrain_config: str | None  # the job's training config (None: the launcher's default)
    retrain_eval_limit: int  # gate lesions a job's gate scores (0: all of them)
    region: str  # where Vertex AI jobs run
    training_image: str  # the training image, by digest
    training_machine_type: str
    training_accelerator: str  # "" or ACCELERATOR_TYPE_UNSPECIFIED: none
    training_accelerators: int
    training_service_account: str  # the identity a Vertex AI job runs as

    @property
    def approval_required(self) -> bool:
        return self.promotion_approval != GATE_ALONE  # an unknown value fails safe: a person decides


def settings() -> Settings:
    """Read now, not at import: tests and the local stack set the environment after importing."""
    env = os.environ.get
    where = runs_on()
    on_google_cloud = where == GOOGLE_CLOUD
    return Settings(
        project=env("GOOGLE_CLOUD_PROJECT", "deepskin-local"),
        uploads_bucket=env("DEEPSKIN_UPLOADS_BUCKET", "deepskin-uploads"),
        results_bucket=env("DEEPSKIN_RESULTS_BUCKET", "deepskin-results"),
        models_bucket=env("DEEPSKIN_MODELS_BUCKET", "deepskin-models"),
        training_bucket=env("DEEPSKIN_TRAINING_BUCKET", "deepskin-training"),
        feedback_topic=env("DEEPSKIN_FEEDBACK_TOPIC", "feedback"),
        feedback_dead_topic=env("DEEPSKIN_FEEDBACK_DEAD_TOPIC", "feedback-dead"),
        retention_days=int(env("DEEPSKIN_RETENTION_DAYS", "30")),
        record_retention_days=int(env("DEEPSKIN_RECORD_RETENTION_DAYS", "365")),
        allowed_origins=listed(env("DEEPSKIN_ALLOWED_ORIGINS", DEFAULT_ORIGINS)),
        model_path=env("DEEPSKIN_MODEL_PATH") or None,
        clinicians=tuple(e.lower() for e in listed(env("DEEPSKIN_CLINICIANS", ""))),
        clinician_audience=env("DEEPSKIN_FEEDBACK_AUDIENCE") or None,
        operators=tuple(e.lower() for e in listed(env("DEEPSKIN_OPERATORS", ""))),
        operator_audiences=listed(env("DEEPSKIN_OPS_AUDIENCES", "")),
        local_clinician_keys=tuple(k.lower() for k in listed(env("DEEPSKIN_LOCAL_CLINICIAN_KEYS", ""))),
        promotion_approval=env("DEEPSKIN_PROMOTION_APPROVAL") or (APPROVAL_REQUIRED if on_google_cloud else GATE_ALONE),
        retrain_min_clinicians=int(env("DEEPSKIN_RETRAIN_MIN_CLINICIANS") or (2 if on_google_cloud else 1)),
        manual_retrains_per_day=int(env("DEEPSKIN_MANUAL_RETRAINS_PER_DAY", "2")),
        retrain_min_new_labels=int(env("DEEPSKIN_RETRAIN_MIN_NEW_LABELS") or (10 if on_google_cloud else 1)),
        labelled_retention_days=int(env("DEEPSKIN_LABELLED_RETENTION_DAYS") or env("DEEPSKIN_RETENTION_DAYS", "30")),
        allow_partial_gate=env("DEEPSKIN_ALLOW_PARTIAL_GATE") == "fixtures",
        runs_on=where,
        model_registry=where != NEITHER and env("DEEPSKIN_MODEL_REGISTRY", "").lower() != "off",
        model_check_seconds=float(env("DEEPSKIN_MODEL_CHECK_SECONDS", "60")),
        retrain_min_labels=int(env("DEEPSKIN_RETRAIN_MIN_LABELS", "50")),
        job_timeout_s=int(env("DEEPSKIN_JOB_TIMEOUT_S", "21600")),
        job_launcher=env("DEEPSKIN_JOB_LAUNCHER") or (LOCAL_LAUNCHER if where == EMULATORS else VERTEX_LAUNCHER),
        retrain_config=env("DEEPSKIN_RETRAIN_CONFIG") or None,
        retrain_eval_limit=int(env("DEEPSKIN_RETRAIN_EVAL_LIMIT", "0")),
        region=env("DEEPSKIN_REGION", ""),
        training_image=env("DEEPSKIN_TRAINING_IMAGE", ""),
        training_machine_type=env("DEEPSKIN_TRAINING_MACHINE_TYPE", "n1-standard-8"),
        training_accelerator=env("DEEPSKIN_TRAINING_ACCELERATOR", ""),
        training_accelerators=int(env("DEEPSKIN_TRAINING_ACCELERATORS", "1")),
        training_service_account=env("DEEPSKIN_TRAINING_SERVICE_ACCOUNT", ""),
    )


def runs_on() -> str:
    """Where this process runs, the one answer to every local-or-cloud choice: GOOGLE_CLOUD (Cloud Run sets
    K_SERVICE, a Vertex AI job CLOUD_ML_JOB_ID), EMULATORS (the local stack and the tests point
    FIRESTORE_EMULATOR_HOST at theirs), or NEITHER (no backend: the core alone)."""
    if any(os.environ.get(name) for name in ON_GOOGLE_CLOUD):
        return GOOGLE_CLOUD
    return EMULATORS if os.environ.get("FIRESTORE_EMULATOR_HOST") else NEITHER


def listed(value: str) -> tuple[str, ...]:
    """A comma-separated setting: its non-empty items, stripped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())
