#!/usr/bin/env bash
# Run one module of the training image as a CPU Vertex AI custom job, and wait for it; exit 0 only if it
# succeeded. The job also gets the settings deepskin/services/config.py reads (project, buckets), which
# --worker-pool-spec cannot pass: hence a job config file.
# Usage: cpu_custom_job.sh DISPLAY_NAME MODULE [ARG...]
# Environment: PROJECT_ID REGION IMAGE (repository@sha256:..., never a tag) TRAINING_SA MODELS_BUCKET TRAINING_BUCKET
# [PROMOTION_APPROVAL: "required" (default: a person approves what the gate passes) or "gate"]
set -euo pipefail

name="${1:?usage: cpu_custom_job.sh DISPLAY_NAME MODULE [ARG...]}"
module="${2:?usage: cpu_custom_job.sh DISPLAY_NAME MODULE [ARG...]}"
shift 2
case "$IMAGE" in
  *@sha256:*) ;;
  *) echo "IMAGE must be pinned by digest (repository@sha256:...), not ${IMAGE}" >&2; exit 2 ;;
esac

config="$(mktemp --suffix=.yaml)"
trap 'rm -f "$config"' EXIT
{
  echo "workerPoolSpecs:"
  echo "  - machineSpec: {machineType: n2-standard-4}"
  echo "    replicaCount: 1"
  echo "    containerSpec:"
  echo "      imageUri: '${IMAGE}'"
  echo "      command: [python, -m, '${module}']"
  echo "      args:"
  for arg in "$@"; do
    echo "        - '${arg}'"
  done
  echo "      env:"
  echo "        - {name: GOOGLE_CLOUD_PROJECT, value: '${PROJECT_ID}'}"
  echo "        - {name: DEEPSKIN_MODELS_BUCKET, value: '${MODELS_BUCKET}'}"
  echo "        - {name: DEEPSKIN_TRAINING_BUCKET, value: '${TRAINING_BUCKET}'}"
  echo "        - {name: DEEPSKIN_PROMOTION_APPROVAL, value: '${PROMOTION_APPROVAL:-required}'}"
} > "$config"

job="$(gcloud ai custom-jobs create --project="$PROJECT_ID" --region="$REGION" --display-name="$name" \
  --service-account="$TRAINING_SA" --config="$config" --format='value(name)')"
echo "Submitted ${job}"
bash "$(dirname "$0")/wait_custom_job.sh" "$job" "$REGION" 30
