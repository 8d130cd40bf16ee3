# syntax=docker/dockerfile:1
# Training image for Vertex AI custom jobs (GPU). Build from the repo root:
#   docker build -f docker/training.Dockerfile -t REGION-docker.pkg.dev/PROJECT/deepskin/training:TAG .
# Vertex AI runs ENTRYPOINT with the job's --args, e.g.
#   --config training/configs/gpu.json --data /gcs/BUCKET/ham10000 --out /gcs/BUCKET/runs/ID
# The promotion gate reuses this image with --command python,-m,training.promote.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch is pinned like pyproject.toml's `train` extra. The default PyPI wheel
# for linux/x86_64 bundles the CUDA runtime libraries, which is what the
# Vertex AI GPU machines need (unlike the CPU build the Makefile uses locally).
ARG TORCH_VERSION=2.13.0

RUN groupadd --system --gid 10001 deepskin \
    && useradd --system --uid 10001 --gid deepskin --create-home --home-dir /home/deepskin deepskin

WORKDIR /app

# Only what `pip install .[train]` needs: project metadata, deepskin/ and training/.
COPY pyproject.toml README.md ./
COPY deepskin/ ./deepskin/
COPY training/ ./training/
# Every dependency of `.[train]` is pinned with == in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install "torch==${TORCH_VERSION}" \
    && pip install ".[train]" \
    && python -c "import torch, training.train"

USER 10001:10001

ENTRYPOINT ["python", "-m", "training.train"]
