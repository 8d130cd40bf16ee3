"""Fixtures for the reliability suite: a whole local stack to load and break, and in-process function apps.

The stack (local/stack.py, started in this process so that a test can SIGKILL or SIGSTOP its parts) runs its
own emulators on free ports; the in-process apps use the session's emulators from tests/conftest.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import firestore, storage

from local.stack import Ports, Stack

REPO = Path(__file__).resolve().parents[2]
# benchmarks/ is not an installed package; the load test runs the benchmark's own code.
sys.path.insert(0, str(REPO))


class RunningStack:
    """A started Stack plus Google clients pointed at its emulators (not the session's)."""

    def __init__(self, stack: Stack):
        self.stack = stack
        project = stack.emulators.env["GOOGLE_CLOUD_PROJECT"]
        self.gcs, self.db = storage.Client(project=project), firestore.Client(project=project)


@pytest.fixture(scope="package")
def running_stack() -> Iterator[RunningStack]:
    saved = dict(os.environ)
    stack = Stack(Ports.free())
    try:
        stack.start()  # points os.environ at its emulators while it creates clients and the bridge
        running = RunningStack(stack)
    finally:
        # The session's emulators stay the process's default for every other test.
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield running
    finally:
        stack.stop()


