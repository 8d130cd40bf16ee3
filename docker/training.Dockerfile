# syntax=docker/dockerfile:1
# Training image for Vertex AI custom jobs (GPU). Build from the repo root:
#   docker build -f docker/training.Dockerfile -t REGION-docker.pkg.dev/PROJECT/deepskin/training:TAG .
# Vertex AI runs ENTRYPOINT with the job's --args, e.g.
#   --config training/configs/gpu.json --data /gcs/BUCKET/ham10000 --out /gcs/BUCKET/runs/ID
# The same image runs training.export, training.promote and training.retrain (the retrain trigger's
# jobs) with --command python,-m,<module>: hence the cloud extras (Firestore, Cloud Storage) and models/
# (the first gate registers the bundled model as the current one).
# Locally, `make containers` (local/containers.py) builds it with Podman on a Debian base made with
# mmdebstrap (BASE_IMAGE) and the host's local wheels (PIP_FIND_LINKS): the CPU build of the same torch.
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
    PATH=/opt/venv/bin:$PATH

# torch is pinned like pyproject.toml's `train` extra. The default PyPI wheel
# for linux/x86_64 bundles the CUDA runtime libraries, which is what the
# Vertex AI GPU machines need; a local build's PIP_FIND_LINKS offers the CPU build.
ARG TORCH_VERSION=2.13.0

RUN groupadd --system --gid 10001 deepskin \
    && useradd --system --uid 10001 --gid deepskin --create-home --home-dir /home/deepskin deepskin \
    && python3 -m venv /opt/venv

WORKDIR /app

ARG PIP_FIND_LINKS=""

# torch first, in its own layer: the largest download, and the one that changes least.
RUN pip install "torch==${TORCH_VERSION}"

# The dependencies of `.[train,cloud]` (each pinned with == in pyproject.toml) from pyproject.toml alone,
# so that a code change does not reinstall them.
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['train'] + extras['cloud']))" \
    > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# Then the code, run from /app (python -m training.<module>): a code change rebuilds from here, in seconds.
COPY deepskin/ ./deepskin/
COPY training/ ./training/
RUN python -c "import torch, training.train, training.retrain, training.promote"

COPY models/ ./models/

USER 10001:10001

ENTRYPOINT ["python", "-m", "training.train"]
