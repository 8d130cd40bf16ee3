"""Every setting, read from environment variables in one place (infra/functions.tf sets them in the cloud)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ORIGINS = "http://127.0.0.1:8080,http://localhost:8080"


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


def settings() -> Settings:
    """Read now, not at import: tests and the local stack set the environment after importing."""
    env = os.environ.get
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
        allowed_origins=tuple(o.strip() for o in env("DEEPSKIN_ALLOWED_ORIGINS", DEFAULT_ORIGINS).split(",")
                              if o.strip()),
        model_path=env("DEEPSKIN_MODEL_PATH") or None,
    )
