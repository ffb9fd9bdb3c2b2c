"""Server counters that stay exact across threads and processes, and that no dead process can block.

Design: one row per writer, no shared lock
------------------------------------------
The counters are a table of 64-bit integers in shared memory
(``multiprocessing.RawArray``): one *row* per process that writes them.
The server's parent process (the accept loop) writes row 0; in the process
model, worker process *i* writes row *i* (:meth:`Stats.writer` hands each
worker a view bound to its row before it starts).  Every row has exactly
one writing process, so no lock is shared between processes: the threads of
one process serialise on a lock that lives in that process only.  Readers
(``STATS`` in any worker, the status line, the counters listener of the
accept loop) sum the rows without locking anything: an aligned 64-bit
load cannot be torn on the machines labnet runs on, so a snapshot is a sum
of values each of which was true at some instant during the read.

Why a dead process cannot block the others: the only locks are
process-local, so a worker killed at any instant -- even in the middle of
``add`` -- leaves nothing locked that another process waits for; at worst
its own row holds a half-finished update, and that row is retired by the
parent (:meth:`Stats.retire`) when it sees the worker die.  The earlier
design (one array guarded by one ``multiprocessing.Lock``) could stay
locked forever after a ``kill -9`` and freeze every worker and the parent.

Retiring a dead worker's row folds its counters into row 0 and corrects its
gauges: the connection it was serving is counted in ``died`` (a category of
its own), the request it was serving (``request_started``) is counted as a
failure of its verb, and its ``active`` gauge drops.  Until the fold is
done a concurrent reader may see that row's counts twice or not at all for
an instant; totals settle at once.

Counted per verb: ``ok`` and ``failed``.  Also bytes in and out (file bytes
on the wire, updated per chunk so a live dashboard sees progress), active
and waiting connections, connections accepted, refused as BUSY, closed for
TIMEOUT, lost with a dead worker (``died``), worker processes that died,
and handler threads found running past every deadline (``stuck``).

Test hook (inert unless set): ``LABNET_TEST_KILL_AT=<point>@<n>`` makes the
process that reaches ``<point>`` for the ``<n>``-th time kill itself with
SIGKILL, to test worker deaths at chosen instants.  Points:
``request:<VERB>`` (a worker starts serving a request) and
``add:<field>`` (in the middle of updating a counter, between reading and
writing it; ``add:bytes_in`` lands mid-upload).  With ``LABNET_TEST_KILL_ONCE=<file>``
set too, only the first process to get there dies (it creates ``<file>``;
the others see it and live on).  Only a server's first worker processes
obey it (``Stats.writer`` views of rows >= 1), never the parent, a
replacement worker or a test process.

This module must not import sockets.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

VERB_KEYS = ("LIST", "UPLOAD", "DOWNLOAD", "DELETE", "STATS", "QUIT", "INVALID")
GAUGES = ("active", "waiting")
COUNTERS = ("bytes_in", "bytes_out", "connections", "busy", "timeouts", "died", "worker_deaths", "stuck")

_FIELDS = [f"{v}.{k}" for v in VERB_KEYS for k in ("ok", "failed")] + list(GAUGES) + list(COUNTERS)
_INDEX = {name: i for i, name in enumerate(_FIELDS)}
_CURRENT = len(_FIELDS)  # per-row note (not summed): 1 + index of the verb being served, 0 when none
_WIDTH = len(_FIELDS) + 1
_VERB_CODE = {v: i + 1 for i, v in enumerate(VERB_KEYS)}

KILL_ENV = "LABNET_TEST_KILL_AT"
KILL_ONCE_ENV = "LABNET_TEST_KILL_ONCE"


def _kill_point() -> tuple[str, int] | None:
    spec = os.environ.get(KILL_ENV, "")
    if not spec:
        return None
    point, _, nth = spec.rpartition("@")
    return (point, int(nth)) if point and nth.isdigit() else (spec, 1)


class Stats:
    """Shared counters with ``slots`` rows (see the module docstring); pass ``mp_context`` for worker processes."""

    def __init__(self, mp_context=None, slots: int = 1):
        ctx = mp_context or multiprocessing.get_context()
        self.slots = max(1, int(slots))
        self._values = ctx.RawArray("q", self.slots * _WIDTH)
        self._row = 0
        self._lock = threading.Lock()  # this process's threads only
        self._kill = None
        self.started = time.time()

    # -- views -----------------------------------------------------------------

    def writer(self, slot: int, test_hook: bool = True) -> Stats:
        """A view of the same table that writes row ``slot``: what worker process ``slot`` gets.

        ``test_hook``: obey ``LABNET_TEST_KILL_AT`` (a server arms only its first workers, so that
        a replacement does not die at the same point again)."""
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} out of range 0..{self.slots - 1}")
        view = object.__new__(Stats)
        view.__dict__.update(self.__dict__)
        view._row = slot
        view._lock = threading.Lock()  # fresh: never one a parent thread might hold at fork
        view._kill = _kill_point() if slot > 0 and test_hook else None
        view._kill_count = {}
        return view

    def __getstate__(self):
        # Picklable only towards a child process being started (spawn); the lock is made anew there.
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- writing (this process's row) ------------------------------------------

    def _maybe_die(self, point: str) -> None:
        name, nth = self._kill
        if name != point:
            return
        seen = self._kill_count[point] = self._kill_count.get(point, 0) + 1
        if seen != nth:
            return
        once = os.environ.get(KILL_ONCE_ENV)
        if once:  # only the first process of the server to get here dies: it creates the file
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)

    def add(self, field: str, amount: int = 1) -> None:
        i = self._row * _WIDTH + _INDEX[field]
        with self._lock:
            value = self._values[i] + amount
            if self._kill is not None:
                self._maybe_die(f"add:{field}")
            self._values[i] = value

    def count(self, verb: str, ok: bool) -> None:
        key = verb if verb in VERB_KEYS else "INVALID"
        self.add(f"{key}.{'ok' if ok else 'failed'}")
        self._values[self._row * _WIDTH + _CURRENT] = 0

    def request_started(self, verb: str) -> None:
        """Note the request this writer is serving, so that its death counts it as failed."""
        key = verb if verb in VERB_KEYS else "INVALID"
        self._values[self._row * _WIDTH + _CURRENT] = _VERB_CODE[key]
        if self._kill is not None:
            self._maybe_die(f"request:{key}")

    # -- reading (every row, no lock) ------------------------------------------

    def _totals(self) -> list[int]:
        values = self._values[:]  # one copy; each aligned 64-bit load is whole
        totals = [0] * len(_FIELDS)
        for row in range(self.slots):
            base = row * _WIDTH
            for i in range(len(_FIELDS)):
                totals[i] += values[base + i]
        return totals

    def get(self, field: str) -> int:
        i = _INDEX[field]
        return sum(self._values[row * _WIDTH + i] for row in range(self.slots))

    def snapshot(self) -> dict:
        """``{"verbs": {VERB: {"ok", "failed"}}, "ok", "failed", gauges..., counters..., "uptime"}``."""
        values = self._totals()
        verbs = {v: {"ok": values[_INDEX[f"{v}.ok"]], "failed": values[_INDEX[f"{v}.failed"]]}
                 for v in VERB_KEYS}  # fmt: skip
        snap = {"verbs": verbs,
                "ok": sum(c["ok"] for c in verbs.values()),
                "failed": sum(c["failed"] for c in verbs.values())}  # fmt: skip
        for name in GAUGES + COUNTERS:
            snap[name] = values[_INDEX[name]]
        snap["uptime"] = round(time.time() - self.started, 3)
        return snap

    # -- the parent's side ------------------------------------------------------

    def retire(self, slot: int) -> dict:
        """Fold the row of a dead writer into this (the parent's) row and settle its gauges.

        Returns what the writer was doing: ``{"active": n, "verb": VERB or None}``.
        Call only once that process is gone (nothing writes the row any more).
        """
        if slot == self._row or not 0 <= slot < self.slots:
            raise ValueError(f"cannot retire slot {slot}")
        base = slot * _WIDTH
        row = self._values[base:base + _WIDTH]
        active = row[_INDEX["active"]]
        code = row[_CURRENT]
        verb = VERB_KEYS[code - 1] if 0 < code <= len(VERB_KEYS) else None
        mine = self._row * _WIDTH
        with self._lock:
            for i in range(len(_FIELDS)):
                self._values[mine + i] += row[i]
            self._values[mine + _INDEX["active"]] -= active
            self._values[mine + _INDEX["died"]] += max(active, 0)
            self._values[mine + _INDEX["worker_deaths"]] += 1
            if verb is not None and active > 0:
                self._values[mine + _INDEX[f"{verb}.failed"]] += 1
        for i in range(_WIDTH):
            self._values[base + i] = 0
        return {"active": active, "verb": verb}
