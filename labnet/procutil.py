"""Small process helpers: parent-death signal, process-tree inspection, CPU time.

Linux only where it matters (``prctl``); elsewhere the helpers do nothing and
say so by their return value.  Reads ``/proc`` directly so the runtime needs
no psutil.  Must not import anything from labnet.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    A backstop for orphans: a notebook kernel killed by nbval or a crashed
    launcher still takes its servers down with it.  Returns False where the
    call is not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children_of(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                continue
    except OSError:
        return []
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first."""
    out, todo = [], [pid]
    while todo and len(out) < 10_000:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children_of(p))
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of ``pid`` so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Start ``pid``'s ``VmHWM`` over from its RSS now (Linux: ``5`` into ``/proc/<pid>/clear_refs``).

    Why: a server that serves several measurements in a row (the ETS matrix keeps one per pool
    size) reports each one's own peak only if the peak is reset in between.  False where the
    kernel or the permissions do not allow it (the caller then starts a fresh process instead).
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3


def cpu_seconds() -> float:
    """User plus system CPU seconds this process has used so far (all its threads, not its children)."""
    t = os.times()
    return t.user + t.system


def keep_buffers_warm(mmap_threshold: int = 1 << 20, trim_threshold: int = 4 << 20) -> bool:
    """Let freed transfer buffers be reused instead of returned to the kernel (glibc only).

    Why: a transfer allocates and frees a 192-256 KiB buffer per chunk.  With
    glibc's defaults those buffers keep being handed back to the kernel
    (mmap/munmap, or trimming the heap top) and faulted in again, zeroed,
    page by page: measured on the 2-core machine, receiving a 100 MB base64
    body cost 98 ms of CPU that way and 70 ms with buffers kept (at most
    ``trim_threshold`` bytes of free memory stay with the process).  Every
    server uses it, whatever its pool size: the alternative for many
    threads (a fixed 128 KiB mmap threshold, one mmap per buffer) kept RSS
    flat but made a 50-thread server fault in every chunk again (see
    ``labnet.server.thread_pool``, "Memory").  Idempotent; False where
    ``mallopt`` is not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return (libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
                and libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1)  # fmt: skip
    except (OSError, AttributeError):
        return False


def release_free_memory() -> bool:
    """Give memory that malloc holds but no longer uses back to the kernel (glibc ``malloc_trim``).

    Why: after many connections with 192-256 KiB buffers, glibc keeps freed
    chunks in its arenas, so a long-running server's RSS creeps upward
    although nothing leaks (Python-level memory stays flat under tracemalloc).
    Servers call this every few seconds; it costs a walk over the arenas, not
    a per-buffer price.  It returns what is free *now*; it cannot undo
    fragmentation (see ``bench/soak.py`` for what RSS actually does over
    time).  Returns False where not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False
