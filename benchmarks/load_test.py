"""Load through the real event path: N uploads into the bucket, C at a time; every upload must end with
exactly one result document, and the upload-to-result latency and throughput are printed.

    .venv/bin/python benchmarks/load_test.py                       # 300 uploads, concurrency 16, own stack
    .venv/bin/python benchmarks/load_test.py --uploads 40 --concurrency 8

Each of C workers uploads an image (fake-gcs-server -> Pub/Sub -> local/bridge.py -> on_upload -> Firestore)
and waits for its result before the next, so at most C uploads are in flight: C users, not a flood. One poller
reads the outstanding result documents for all workers, so that watching does not load the Firestore
emulator C-fold. Loopback only; bounded by --uploads and --timeout. Exit status 1 when an upload is lost or
doubled. tests/reliability/test_load.py runs a short version of the same code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from google.api_core.exceptions import GoogleAPICallError
from google.cloud import firestore, storage

from deepskin.services import store
from deepskin.services.config import settings
from local.stack import Ports, Stack

REPO = Path(__file__).resolve().parent.parent
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))
POLL_INTERVAL_S = 0.05
FINAL = ("done", "rejected", "unusable", "failed")


class ResultPoller:
    """One thread reads every awaited result document together and notes when each turned final."""

    def __init__(self, db: firestore.Client):
        self.db = db
        self.awaited: dict[str, threading.Event] = {}
        self.finished_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.poll, name="result-poller", daemon=True)
        self.thread.start()

    def await_result(self, id_: str, timeout: float) -> float | None:
        """The monotonic time its result turned final, or None when it did not within `timeout`."""
        with self.lock:
            event = self.awaited.setdefault(id_, threading.Event())
        event.wait(timeout)
        with self.lock:
            self.awaited.pop(id_, None)
            return self.finished_at.get(id_)

    def poll(self) -> None:
        while not self.stopping.wait(POLL_INTERVAL_S):
            with self.lock:
                ids = [id_ for id_, event in self.awaited.items() if not event.is_set()]
            if not ids:
                continue
            refs = [self.db.collection(store.PREDICTIONS).document(id_) for id_ in ids]
            try:
                snapshots = list(self.db.get_all(refs))
            except GoogleAPICallError:  # an outage test pauses Firestore: keep polling
                continue
            now = time.monotonic()
            for snapshot in snapshots:
                if snapshot.exists and snapshot.get("status") in FINAL:
                    with self.lock:
                        self.finished_at.setdefault(snapshot.id, now)
                        if snapshot.id in self.awaited:
                            self.awaited[snapshot.id].set()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


@dataclass
class LoadReport:
    uploads: int
    concurrency: int
    wall_s: float
    latencies_s: list[float]  # upload finished -> result final, for each upload that got one in time
    expected_ids: set[str]
    documents: dict[str, dict] = field(default_factory=dict)  # every result document under the run's prefix

    @property
    def lost(self) -> set[str]:
        return {id_ for id_ in self.expected_ids
                if self.documents.get(id_, {}).get("status") not in FINAL}

    @property
    def not_uploaded(self) -> int:
        """Uploads the run had no time left to make."""
        return self.uploads - len(self.expected_ids)

    @property
    def unexpected(self) -> set[str]:
        """Documents no upload of this run should have produced: a doubled result would land here."""
        return set(self.documents) - self.expected_ids

    @property
    def statuses(self) -> Counter:
        return Counter(doc.get("status") for doc in self.documents.values())

    def summary(self) -> str:
        lines = [(f"{self.uploads} uploads at concurrency {self.concurrency} in {self.wall_s:.1f} s "
                  f"({self.uploads / self.wall_s:.2f} uploads/s)"),
                 (f"  result documents: {len(self.documents)} for {len(self.expected_ids)} uploads; "
                  f"lost {len(self.lost)}, unexpected {len(self.unexpected)}, not uploaded {self.not_uploaded}; "
                  f"statuses {dict(self.statuses)}")]
        if self.latencies_s:
            ms = sorted(seconds * 1000 for seconds in self.latencies_s)
            quantiles = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
            lines.append(f"  upload -> result: p50 {quantiles[49]:.0f} ms   p95 {quantiles[94]:.0f} ms   "
                         f"max {ms[-1]:.0f} ms")
        return "\n".join(lines)


class LoadRun:
    """Uploads under one fresh prefix, so that its result documents can be counted apart from any other."""

    def __init__(self, gcs: storage.Client, db: firestore.Client, prefix: str | None = None):
        self.gcs, self.db = gcs, db
        self.prefix = prefix or f"load/{uuid.uuid4().hex[:8]}/"
        self.bucket = gcs.bucket(settings().uploads_bucket)
        self.expected_ids: set[str] = set()
        self.lock = threading.Lock()

    def put(self, index: int, data: bytes) -> str:
        """Upload one image; its result id, derived the way on_upload derives it."""
        blob = self.bucket.blob(f"{self.prefix}{index:05d}.jpg")
        blob.upload_from_string(data, content_type="image/jpeg")
        id_ = store.result_id(blob.bucket.name, blob.name, blob.generation)
        with self.lock:
            self.expected_ids.add(id_)
        return id_

    def documents(self) -> dict[str, dict]:
        """Every result document whose upload is under this run's prefix."""
        query = (self.db.collection(store.PREDICTIONS)
                 .where(filter=firestore.FieldFilter("upload.name", ">=", self.prefix))
                 .where(filter=firestore.FieldFilter("upload.name", "<", self.prefix + "\uffff")))
        return {snapshot.id: snapshot.to_dict() for snapshot in query.stream()}

    def wait_until_settled(self, timeout: float) -> dict[str, dict]:
        """Poll until every upload has a final document (or `timeout`); the run's documents then."""
        deadline = time.monotonic() + timeout
        while True:
            documents = self.documents()
            done = all(documents.get(id_, {}).get("status") in FINAL for id_ in self.expected_ids)
            if done or time.monotonic() > deadline:
                return documents
            time.sleep(0.5)


def run_load(gcs: storage.Client, db: firestore.Client, uploads: int, concurrency: int,
             timeout: float, images: list[bytes] | None = None) -> LoadReport:
    """`uploads` uploads by `concurrency` workers, each waiting for its result before the next upload."""
    images = images or [path.read_bytes() for path in LESIONS]
    run, poller = LoadRun(gcs, db), ResultPoller(db)
    deadline = time.monotonic() + timeout
    latencies, lock = [], threading.Lock()

    def one(index: int) -> None:
        if time.monotonic() > deadline:
            return  # out of time: counted in LoadReport.not_uploaded
        id_ = run.put(index, images[index % len(images)])
        uploaded = time.monotonic()
        finished = poller.await_result(id_, max(0.0, deadline - uploaded))
        if finished is not None:
            with lock:
                latencies.append(finished - uploaded)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="load") as pool:
            list(pool.map(one, range(uploads)))
        wall = time.monotonic() - started
    finally:
        poller.stop()
    # A second result for an upload would be written after its first: give late redeliveries a moment.
    time.sleep(2)
    return LoadReport(uploads, concurrency, wall, latencies, run.expected_ids,
                      run.wait_until_settled(timeout=max(5.0, deadline - time.monotonic())))


def stack_clients() -> tuple[storage.Client, firestore.Client]:
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    return storage.Client(project=project), firestore.Client(project=project)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    args = parser.parse_args()
    started = time.monotonic()
    stack = Stack(Ports.free()).start()  # sets os.environ to its emulators
    print(f"stack start: {time.monotonic() - started:.1f} s; {os.cpu_count()} CPUs")
    try:
        gcs, db = stack_clients()
        warm = run_load(gcs, db, uploads=1, concurrency=1, timeout=120)  # loads the model in on_upload
        print(f"warm-up: {warm.latencies_s[0]:.1f} s" if warm.latencies_s else "warm-up: no result")
        report = run_load(gcs, db, args.uploads, args.concurrency, args.timeout)
    finally:
        stack.stop()
    print(report.summary())
    return 1 if report.lost or report.unexpected or report.not_uploaded else 0


if __name__ == "__main__":
    sys.exit(main())
