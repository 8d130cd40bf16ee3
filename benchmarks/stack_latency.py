"""Upload-to-result latency through the local stack's real event path, and the stack's start time.

    .venv/bin/python benchmarks/stack_latency.py            # starts its own stack on free ports
    .venv/bin/python benchmarks/stack_latency.py --running  # measures a running `make run` instead

Each upload goes into the uploads bucket (fake-gcs-server -> Pub/Sub -> bridge -> on_upload -> Firestore),
one at a time, after one warm-up upload that loads the model. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from pathlib import Path

from deepskin.clients.client import LOCAL_EMULATORS, Client
from deepskin.services import store
from local.stack import Ports, StackProcess

REPO = Path(__file__).resolve().parent.parent
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))


def upload_once(path: Path, timeout: float) -> tuple[float, float]:
    """(seconds the upload call took, seconds from the finalized object to its finished result)."""
    started = time.monotonic()
    upload = store.put_upload(f"uploads/{uuid.uuid4()}.jpg", path.read_bytes(), "image/jpeg", {})
    uploaded = time.monotonic()
    Client.wait_for(store.result_id(upload["bucket"], upload["name"], upload["generation"]), timeout)
    return uploaded - started, time.monotonic() - uploaded


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--running", action="store_true", help="use the stack the environment points at")
    args = parser.parse_args()
    stack = None
    if args.running:
        for name, value in LOCAL_EMULATORS.items():
            os.environ.setdefault(name, value)
    else:
        stack = StackProcess(Ports.free()).start()
        os.environ.update(stack.env)
        print(f"stack start: {stack.start_seconds:.1f} s (emulators, functions, web, bridge; until ready)")
    try:
        upload_once(LESIONS[0], timeout=60)  # loads the model in on_upload's process
        timings = [upload_once(LESIONS[i % len(LESIONS)], timeout=30) for i in range(args.uploads)]
    finally:
        if stack is not None:
            stack.stop()
    upload_calls, to_result = zip(*timings)
    total = [a + b for a, b in timings]
    print(f"{args.uploads} uploads, one at a time, after one warm-up:")
    for name, values in (("finalized -> result", to_result), ("upload call", upload_calls),
                         ("upload start -> result", total)):
        print(f"  {name:<24} p50 {percentile(list(values), 50) * 1000:6.0f} ms   "
              f"p95 {percentile(list(values), 95) * 1000:6.0f} ms   max {max(values) * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
