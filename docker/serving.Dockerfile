# syntax=docker/dockerfile:1
# Cloud Run serving image: the predict_http function under functions-framework.
# Only the onnxruntime inference stack (functions/predict/requirements.txt), no torch.
# Build from the repo root:
#   docker build -f docker/serving.Dockerfile -t REGION-docker.pkg.dev/PROJECT/deepskin/serving:TAG .
# Locally, `make containers` (local/containers.py) builds it with Podman on a Debian base made with
# mmdebstrap (BASE_IMAGE) and the host's local wheels (PIP_FIND_LINKS).
# Deploy private (no --allow-unauthenticated), e.g.
#   gcloud run deploy deepskin-serving --image ... --no-allow-unauthenticated \
#     --cpu 1 --memory 1Gi --concurrency 1 --min-instances 0 --timeout 60
# The base by digest: the tag is rebuilt upstream (Debian updates), the digest names exactly the bytes reviewed.
# To move it: `docker buildx imagetools inspect python:3.11.x-slim-bookworm` and take the index digest.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5
FROM ${BASE_IMAGE}

# A virtual environment works the same on both bases (Debian's own Python refuses a system-wide pip).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PORT=8080

RUN groupadd --system --gid 10001 deepskin \
    && useradd --system --uid 10001 --gid deepskin --no-create-home deepskin \
    && python3 -m venv /opt/venv

WORKDIR /app

ARG PIP_FIND_LINKS=""

# The staged Cloud Function's layout (infra/stage_functions.py): main.py + requirements.txt (the lock: every
# distribution with its hashes, so pip installs exactly those files), deepskin/ and
# models/ side by side; the whole deepskin package here, where staging copies only the modules main.py imports.
COPY functions/predict/requirements.txt ./requirements.txt
RUN pip install --require-hashes -r requirements.txt \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

COPY functions/predict/ ./
COPY deepskin/ ./deepskin/
COPY models/ ./models/

USER 10001:10001

EXPOSE 8080

# functions-framework reads PORT from the environment (Cloud Run sets it).
CMD ["functions-framework", "--target=predict_http", "--source=main.py"]
