"""Server counters that stay exact when many threads or processes update them.

One flat array of 64-bit integers in shared memory (``multiprocessing.RawArray``)
guarded by one lock.  The thread-pool server uses it from threads, the
process-pool server from forked or spawned worker processes (the array and
the lock are passed to the workers when they start), and ``STATS`` and the
periodic status line read a consistent snapshot under the same lock.

Counted per verb: ``ok`` and ``failed``.  Also bytes in and out (file bytes
on the wire, updated per chunk so a live dashboard sees progress), active
and waiting connections, connections accepted, refused as BUSY, and closed
for TIMEOUT.

This module must not import sockets.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

VERB_KEYS = ("LIST", "UPLOAD", "DOWNLOAD", "DELETE", "STATS", "QUIT", "INVALID")
GAUGES = ("active", "waiting")
COUNTERS = ("bytes_in", "bytes_out", "connections", "busy", "timeouts")

_FIELDS = [f"{v}.{k}" for v in VERB_KEYS for k in ("ok", "failed")] + list(GAUGES) + list(COUNTERS)
_INDEX = {name: i for i, name in enumerate(_FIELDS)}


class Stats:
    """Shared counters.  Pass ``mp_context`` when worker processes will update them."""

    def __init__(self, mp_context=None):
        ctx = mp_context or multiprocessing.get_context()
        self._values = ctx.RawArray("q", len(_FIELDS))
        self._lock = ctx.Lock() if mp_context is not None else threading.Lock()
        self.started = time.time()

    def __getstate__(self):
        # Picklable only towards a child process being started (spawn).
        return {"_values": self._values, "_lock": self._lock, "started": self.started}

    def add(self, field: str, amount: int = 1) -> None:
        i = _INDEX[field]
        with self._lock:
            self._values[i] += amount

    def count(self, verb: str, ok: bool) -> None:
        key = verb if verb in VERB_KEYS else "INVALID"
        self.add(f"{key}.{'ok' if ok else 'failed'}")

    def request_started(self, verb: str) -> None:
        """Note the request this worker is serving now (see the counters' redesign below)."""

    def get(self, field: str) -> int:
        with self._lock:
            return self._values[_INDEX[field]]

    def snapshot(self) -> dict:
        """A consistent copy: ``{"verbs": {VERB: {"ok", "failed"}}, "ok", "failed", ...}``."""
        with self._lock:
            values = list(self._values)
        verbs = {v: {"ok": values[_INDEX[f"{v}.ok"]], "failed": values[_INDEX[f"{v}.failed"]]}
                 for v in VERB_KEYS}  # fmt: skip
        snap = {"verbs": verbs,
                "ok": sum(c["ok"] for c in verbs.values()),
                "failed": sum(c["failed"] for c in verbs.values())}  # fmt: skip
        for name in GAUGES + COUNTERS:
            snap[name] = values[_INDEX[name]]
        snap["uptime"] = round(time.time() - self.started, 3)
        return snap
