"""The launchers that start a retraining job (`python -m training.retrain`), and the job's scratch folder.

Which one runs is a setting (deepskin.services.config: DEEPSKIN_JOB_LAUNCHER, else a local child process with
the emulators and a Vertex AI custom job otherwise). The sweep (deepskin.loop.ledger) asks the same
launcher about a job, never the one its document names, and acts only on a handle that launcher gave to that
job (`owns`): a Vertex AI job of this region labelled with the job's id, or a local process running this
job's training.retrain.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from deepskin.services import store
from deepskin.services.config import LOCAL_LAUNCHER, VERTEX_LAUNCHER, settings

LOCAL_HANDLE = re.compile(r"^pid (\d+), log ")
# What VertexLauncher.launch gets back: projects/<number or id>/locations/<region>/customJobs/<id>.
VERTEX_HANDLE = re.compile(r"projects/[a-z0-9-]+/locations/(?P<region>[a-z0-9-]+)/customJobs/\d+")
# A training image by digest: a tag (`training:latest`) can be moved to other bytes after review, a digest cannot.
IMAGE_BY_DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIGS = {VERTEX_LAUNCHER: "training/configs/gpu.json", LOCAL_LAUNCHER: "training/configs/retrain_cpu.json"}
VERTEX_ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
                "JOB_STATE_PARTIALLY_SUCCEEDED")


def scratch_dir(job_id: str) -> Path:
    """Where a job keeps its inputs (clinicians' images) while it runs: local disk, never a bucket, removed
    by training.retrain when it ends, or by the sweep when it was killed (on Vertex AI the disk goes with
    the job's machine)."""
    return Path(tempfile.gettempdir()) / f"deepskin-retrain-{job_id}-inputs"


def retrain_args() -> list[str]:
    """The job's arguments after --job-id: the config and how many held-out images the gate uses (0: all)."""
    config = settings()
    return ["--config", config.retrain_config or DEFAULT_CONFIGS[config.job_launcher],
            "--eval-limit", str(config.retrain_eval_limit)]


class LocalLauncher:
    """`python -m training.retrain` as a child process of this one (local stack and tests), in its own process
    group so that a cancel stops what it started too (the export)."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen] = {}

    def launch(self, job_id: str) -> str:
        logs = Path(tempfile.gettempdir()) / "deepskin-jobs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{job_id}.log"
        with open(log_path, "wb") as out:
            # Not waited for here: the job outlives this request (tests wait with `wait`).
            self.processes[job_id] = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, "-m", "training.retrain", "--job-id", job_id, *retrain_args()],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return f"pid {self.processes[job_id].pid}, log {log_path}"

    @staticmethod
    def pid(job_handle: str) -> int:
        return int(LOCAL_HANDLE.match(job_handle)[1])

    def owns(self, job_handle: str, job_id: str) -> bool:
        """A handle this launcher gives (pid N, log PATH) whose process, while it exists, runs this job."""
        if not LOCAL_HANDLE.match(job_handle):
            return False
        try:
            argv = Path(f"/proc/{self.pid(job_handle)}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return True  # gone: nothing left to act on, and `running` says so
        return b"training.retrain" in argv and job_id.encode() in argv

    def running(self, job_handle: str) -> bool:
        """The job's process exists and is not a zombie (the sweep may run in another process than `launch`)."""
        try:
            stat = Path(f"/proc/{self.pid(job_handle)}/stat").read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def cancel(self, job_handle: str) -> None:
        try:
            os.killpg(self.pid(job_handle), signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, job_id: str, timeout: float) -> int:
        return self.processes.pop(job_id).wait(timeout)


class VertexLauncher:
    """A Vertex AI CustomJob through the REST API (google-cloud-aiplatform is not a dependency).

    Only testable on Google Cloud: it needs the training image, the training service account and
    credentials allowed to act as it (infra/iam.tf, infra/vertex.tf).
    """

    def launch(self, job_id: str) -> str:
        response = self.request("POST", f"projects/{settings().project}/locations/{region()}/customJobs",
                                json=custom_job(job_id))
        return response["name"]

    def owns(self, job_handle: str, job_id: str) -> bool:
        """A CustomJob name of this region (checked before any request is made with it) whose job carries this
        job's label, as `launch` set it."""
        match = VERTEX_HANDLE.fullmatch(job_handle)
        if not match or match["region"] != region():
            return False
        return (self.request("GET", job_handle).get("labels") or {}).get("deepskin-job") == job_id

    def running(self, job_handle: str) -> bool:
        return self.request("GET", job_handle)["state"] not in VERTEX_ENDED

    def cancel(self, job_handle: str) -> None:
        self.request("POST", f"{job_handle}:cancel")

    @staticmethod
    def request(method: str, path: str, **kwargs) -> dict:
        """The Vertex AI REST API at `path` (below /v1/), as this runtime's identity."""
        import google.auth  # pylint: disable=import-outside-toplevel
        from google.auth.transport.requests import AuthorizedSession  # pylint: disable=import-outside-toplevel

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        url = f"https://{region()}-aiplatform.googleapis.com/v1/{path}"
        response = AuthorizedSession(credentials).request(method, url, timeout=60, **kwargs)
        response.raise_for_status()
        return response.json()


def region() -> str:
    """The Vertex AI region; a launcher without one cannot name a job, so it acts on none."""
    if not settings().region:
        raise ValueError("DEEPSKIN_REGION is not set: no Vertex AI region to run or check jobs in")
    return settings().region


def custom_job(job_id: str) -> dict:
    """The CustomJob body: the training image, by digest, runs training.retrain on the FUSE-mounted training
    bucket; the job promotes nothing without a person unless this function's settings say so."""
    config = settings()
    if not IMAGE_BY_DIGEST.match(config.training_image):
        raise ValueError("DEEPSKIN_TRAINING_IMAGE must name the training image by digest (...@sha256:...): "
                         f"{config.training_image!r}")
    if not config.training_service_account:
        raise ValueError("DEEPSKIN_TRAINING_SERVICE_ACCOUNT is not set: a job needs the training identity")
    machine = {"machineType": config.training_machine_type}
    if config.training_accelerator and config.training_accelerator != "ACCELERATOR_TYPE_UNSPECIFIED":
        machine.update(acceleratorType=config.training_accelerator, acceleratorCount=config.training_accelerators)
    # The job re-checks every label's reporter against the clinicians allowed now (training.retrain).
    passed = {"GOOGLE_CLOUD_PROJECT": config.project, "DEEPSKIN_MODELS_BUCKET": config.models_bucket,
              "DEEPSKIN_TRAINING_BUCKET": config.training_bucket, "DEEPSKIN_RETENTION_DAYS": str(config.retention_days),
              "DEEPSKIN_RECORD_RETENTION_DAYS": str(config.record_retention_days),
              "DEEPSKIN_CLINICIANS": ",".join(config.clinicians),
              "DEEPSKIN_PROMOTION_APPROVAL": config.promotion_approval}
    return {
        "displayName": f"deepskin-retrain-{job_id}",
        "jobSpec": {
            "workerPoolSpecs": [{
                "machineSpec": machine,
                "replicaCount": "1",
                "containerSpec": {
                    "imageUri": config.training_image,
                    "command": ["python", "-m", "training.retrain"],
                    "args": ["--job-id", job_id, *retrain_args(), "--data", f"/gcs/{config.training_bucket}/ham10000",
                             "--work", f"/gcs/{config.training_bucket}/runs/{job_id}"],
                    "env": [{"name": k, "value": v} for k, v in passed.items()],
                },
            }],
            "serviceAccount": config.training_service_account,
            "scheduling": {"timeout": f"{config.job_timeout_s}s"},
        },
        "labels": {"deepskin-job": job_id},
    }


def launcher_name() -> str:
    return settings().job_launcher


LAUNCHERS = {LOCAL_LAUNCHER: LocalLauncher, VERTEX_LAUNCHER: VertexLauncher}


def make_launcher() -> LocalLauncher | VertexLauncher:
    return LAUNCHERS[launcher_name()]()


launcher = store.once(make_launcher)
