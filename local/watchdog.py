"""A watchdog that kills what this process started once this process is gone, however it went.

A clean stop (Ctrl-C, SIGTERM) stops every child itself; a SIGKILL runs no code at all, and each child runs
in its own session (so that it can be stopped as a group), out of reach of the kernel's own clean-up. So the
first launch also starts this small process, in a session of its own, reading a pipe from its parent:

    +PGID   a process group to kill if the parent dies
    -PGID   that group was stopped cleanly: forget it (its number may be reused)

End of input means the parent is gone (the kernel closes the pipe even on SIGKILL): every group still
listed gets SIGTERM, then SIGKILL after a grace period, and the watchdog exits.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 3.0  # time for a clean exit (the Java emulators take ~2 s) before SIGKILL


class Watchdog:
    """The parent's end: register process groups as they are launched, release them once stopped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Its own session: a Ctrl-C meant for the parent's terminal group must not stop the watchdog first.
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with  # lives as long as this process
            [sys.executable, __file__], stdin=subprocess.PIPE, start_new_session=True, text=True)
        atexit.register(self.close)  # a clean exit has stopped its children already: let the watchdog go too

    def close(self) -> None:
        """End of input: the watchdog kills whatever is still listed, and exits."""
        with self.lock:
            if not self.process.stdin.closed:
                self.process.stdin.close()
        self.process.wait()

    def send(self, line: str) -> None:
        with self.lock:
            try:
                self.process.stdin.write(line + "\n")
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):  # the watchdog is gone: nothing left to guard
                pass

    def watch(self, group: int) -> None:
        self.send(f"+{group}")

    def release(self, group: int) -> None:
        self.send(f"-{group}")


def alive(groups: set[int]) -> set[int]:
    living = set()
    for group in groups:
        try:
            os.killpg(group, 0)
            living.add(group)
        except (ProcessLookupError, PermissionError):
            pass
    return living


def kill_all(groups: set[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in alive(groups):
            os.killpg(group, sig)
        deadline = time.monotonic() + GRACE_S
        while alive(groups) and time.monotonic() < deadline:
            time.sleep(0.1)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        sign, group = line[:1], line[1:].strip()
        if group.isdigit():
            (groups.add if sign == "+" else groups.discard)(int(group))
    kill_all(groups)


if __name__ == "__main__":
    main()
