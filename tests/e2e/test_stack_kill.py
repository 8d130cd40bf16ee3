"""A SIGKILL of `make run` runs none of its clean-up code, yet must leave nothing behind (local/watchdog.py):
no process it started, down to the emulators' JVMs and the functions' workers, and no port it held."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from local.stack import Ports, StackProcess

GONE_WITHIN_S = 15.0  # the watchdog's SIGTERM grace, then SIGKILL, on a busy 2-core machine


def started_at(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), None once it is gone: tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def survivors(processes: dict[int, str]) -> set[int]:
    return {pid for pid, start in processes.items() if started_at(pid) == start}


def test_sigkill_leaves_no_process_and_no_port():
    stack = StackProcess(Ports.free()).start()
    try:
        below = {pid: started_at(pid) for pid in stack.descendants()}
        assert len(below) > 4, "the stack should have children (emulators, functions, the watchdog)"
        stack.process.send_signal(signal.SIGKILL)
        stack.process.wait()
        deadline = time.monotonic() + GONE_WITHIN_S
        while survivors(below) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not survivors(below), f"processes left behind: {survivors(below)}"
        stack.ports.check_free()  # raises naming any port still held
    finally:
        stack.stop()
