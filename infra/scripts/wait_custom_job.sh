#!/usr/bin/env bash
# Wait for a Vertex AI custom job to finish; exit 0 only if it succeeded.
# Usage: wait_custom_job.sh JOB_RESOURCE_NAME REGION [POLL_SECONDS]
set -euo pipefail

job="${1:?usage: wait_custom_job.sh JOB REGION [POLL_SECONDS]}"
region="${2:?usage: wait_custom_job.sh JOB REGION [POLL_SECONDS]}"
poll="${3:-60}"

while true; do
  state="$(gcloud ai custom-jobs describe "$job" --region="$region" --format='value(state)')"
  echo "$(date -u +%H:%M:%S) $job: $state"
  case "$state" in
    JOB_STATE_SUCCEEDED)
      exit 0
      ;;
    JOB_STATE_FAILED | JOB_STATE_CANCELLED | JOB_STATE_EXPIRED)
      gcloud ai custom-jobs describe "$job" --region="$region" --format='value(error.message)' >&2 || true
      exit 1
      ;;
  esac
  sleep "$poll"
done
