"""Test helper: find every process a test run started, however deep in the process tree, and fail a
test that leaves one behind (:func:`no_process_outlives`, the body of an autouse fixture)."""

from __future__ import annotations

import os
import signal
import time
import uuid

from labnet.procutil import alive


def processes_with_env(name: str, value: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of live processes (zombies excluded, this one too) whose
    environment holds ``name=value``: how tests find everything a run started, however
    deep in the process tree (Linux ``/proc``; empty elsewhere)."""
    needle = f"{name}={value}".encode()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            if not alive(int(entry)):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(entry), cmd))
    return found


def wait_for(predicate, timeout: float = 15.0):
    """``predicate()`` once it is true, polled every 50 ms, or its last false value after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < end:
        time.sleep(0.05)
    return value


def no_process_outlives(monkeypatch, mark: str, stop, timeout: float = 15.0):
    """The body of an autouse fixture (``yield from`` it): tags every process the test starts with the
    environment variable ``mark`` and yields the tag; afterwards calls ``stop()`` (the module's way to
    stop what it started) and fails the test if a tagged process is still alive ``timeout`` s later
    (it is killed first, so one test's leftovers never reach the next)."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(mark, tag)
    yield tag
    stop()
    wait_for(lambda: not processes_with_env(mark, tag), timeout)
    left = processes_with_env(mark, tag)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
