"""Every setting, read from environment variables in one place (infra/functions.tf sets them in the cloud)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ORIGINS = "http://127.0.0.1:8080,http://localhost:8080"
# Set by Google Cloud itself: Cloud Run (every function) and Vertex AI custom jobs. There a person approves every
# promotion and a job needs two clinicians' new labels, unless the settings say otherwise (Terraform sets them too).
ON_GOOGLE_CLOUD = ("K_SERVICE", "CLOUD_ML_JOB_ID")
APPROVAL_REQUIRED, GATE_ALONE = "required", "gate"


@dataclass(frozen=True)
class Settings:
    project: str
    uploads_bucket: str
    results_bucket: str
    models_bucket: str
    training_bucket: str
    feedback_topic: str
    feedback_dead_topic: str
    retention_days: int
    allowed_origins: tuple[str, ...]
    model_path: str | None
    promotion_approval: str  # "required": a person promotes what the gate passed; "gate": the gate promotes alone
    retrain_min_clinicians: int  # distinct clinicians whose new labels a job needs (2 on Google Cloud, 1 locally)
    manual_retrains_per_day: int  # jobs one clinician may start by hand per UTC day

    @property
    def approval_required(self) -> bool:
        return self.promotion_approval != GATE_ALONE  # an unknown value fails safe: a person decides


def settings() -> Settings:
    """Read now, not at import: tests and the local stack set the environment after importing."""
    env = os.environ.get
    on_google_cloud = any(env(name) for name in ON_GOOGLE_CLOUD)
    return Settings(
        project=env("GOOGLE_CLOUD_PROJECT", "deepskin-local"),
        uploads_bucket=env("DEEPSKIN_UPLOADS_BUCKET", "deepskin-uploads"),
        results_bucket=env("DEEPSKIN_RESULTS_BUCKET", "deepskin-results"),
        models_bucket=env("DEEPSKIN_MODELS_BUCKET", "deepskin-models"),
        training_bucket=env("DEEPSKIN_TRAINING_BUCKET", "deepskin-training"),
        feedback_topic=env("DEEPSKIN_FEEDBACK_TOPIC", "feedback"),
        feedback_dead_topic=env("DEEPSKIN_FEEDBACK_DEAD_TOPIC", "feedback-dead"),
        retention_days=int(env("DEEPSKIN_RETENTION_DAYS", "30")),
        allowed_origins=tuple(o.strip() for o in env("DEEPSKIN_ALLOWED_ORIGINS", DEFAULT_ORIGINS).split(",")
                              if o.strip()),
        model_path=env("DEEPSKIN_MODEL_PATH") or None,
        promotion_approval=env("DEEPSKIN_PROMOTION_APPROVAL") or (APPROVAL_REQUIRED if on_google_cloud else GATE_ALONE),
        retrain_min_clinicians=int(env("DEEPSKIN_RETRAIN_MIN_CLINICIANS") or (2 if on_google_cloud else 1)),
        manual_retrains_per_day=int(env("DEEPSKIN_MANUAL_RETRAINS_PER_DAY", "2")),
    )
