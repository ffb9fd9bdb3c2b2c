"""The thread-pool server: one process, a pool of N worker threads.

The main thread accepts (``BaseServer.serve_forever``) and queues each
connection; a pool thread serves the whole connection with
``labnet.server.session.serve_connection``.  Connections beyond N wait in
the queue (counted as ``waiting``) until a thread is free -- that wait is
the queueing the lab measures.  Threads suffice for this I/O-bound work
because socket, file and hashing calls release the GIL for large buffers.

Handlers that go wrong
----------------------
* An exception that escapes a handler is logged with its traceback and the
  thread goes on serving: the pool never shrinks silently.
* Python threads cannot be killed, so the deadlines (idle limit, grace
  period) are what bound a handler.  A handler that shows no progress (no
  request, no byte counted) for longer than every deadline allows --
  ``idle_timeout + grace + STUCK_MARGIN`` seconds -- is a bug: the watchdog
  logs it loudly with the thread's stack, counts it (``stuck``) and starts a
  replacement thread so the pool serves on (at most ``workers``
  replacements in a server's life); a stuck thread that ever finishes
  leaves instead of taking more work.  Pool threads are daemons: shutdown
  waits ``grace`` for them and then ends even if one never returns.

Memory: the same allocator setting for every pool size
--------------------------------------------------------
Freed chunk buffers stay with the process for reuse (``procutil.keep_buffers_warm``),
whatever the pool size.  Pools of more than 8 threads used to serve every buffer of
128 KiB or more with its own mmap (a fixed glibc mmap threshold, since removed), to keep peak
RSS flat; measured on the 2-core VM (CPU time and kernel counters, so the figures hold
on a busy machine), that fault-in of fresh zeroed pages for every chunk was most of what
a big pool cost:

* one 100 MB base64 upload to a 50-worker server: 24,800 page faults and 230-290 ms
  of server CPU, against 1 fault and 150 ms with 2 workers (download: 45,500 faults,
  170-200 ms against 0 and 50 ms) -- pool size alone made a single client slower;
  with buffers kept, 50 workers cost what 5 do (150-180 ms, 60-70 ms);
* 50 concurrent 100 MB base64 uploads to 50 workers: 1.04 M page faults, 22.7 s of
  server CPU (16.8 s of it in the kernel), peak RSS 65.9 MB; with buffers kept:
  12 k faults, 11.7 s (6.4 s kernel), peak RSS 68 MB -- and 48.6 MB once a busy
  server's base64 read buffer was halved to 128 KiB (``labnet.transport.transfer.SMALL_BUFFER``).
  Capping malloc arenas (``M_ARENA_MAX`` 1 or 2) moved neither CPU nor RSS
  beyond run-to-run noise: the peak is live buffers, not arena slack.

A server that goes idle gives the buffers it kept back at once: the thread that ends the last
active connection calls ``procutil.release_free_memory`` before the ``active`` gauge drops
to 0.  Measured: a 50-worker server reused for the ETS matrix's cells (``bench/matrix.py``)
kept 61-66 MB resident between cells (freed buffers in up to 16 malloc arenas); the 5-second
trim of the accept loop came too late for the next cell.

Idle pool threads cost nothing measurable: each blocks in ``SimpleQueue.get`` (no
wake-ups), and the watchdog wakes once a second (an idle 50-worker server: 10 ms of CPU
and 69 context switches in 10 s).

Must not import multiprocessing.
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import threading
import time
import traceback

from labnet.errors import Code
from labnet.procutil import keep_buffers_warm, release_free_memory
from labnet.server.base import BaseServer
from labnet.server.session import Flags, refuse, serve_connection

log = logging.getLogger("labnet.server")
STUCK_MARGIN = 5.0  # seconds beyond every deadline before a silent handler is called stuck
WATCH_EVERY = 1.0  # seconds between the watchdog's looks


class _Handler:
    """One pool thread's state, as the watchdog sees it."""

    def __init__(self):
        self.thread: threading.Thread | None = None
        self.busy = False
        self.beat = time.monotonic()  # last sign of progress while busy
        self.reported = False  # already logged as stuck
        self.retired = False  # replaced while stuck: leave after the current connection


class _BeatStats:
    """The server's counters as one handler sees them: every update is also a sign of life."""

    def __init__(self, stats, handler: _Handler, leaving: threading.Lock):
        self._stats = stats
        self._handler = handler
        self._leaving = leaving  # the server's: held while a connection leaves the ``active`` gauge

    def add(self, field: str, amount: int = 1) -> None:
        self._handler.beat = time.monotonic()
        if field == "active" and amount < 0:
            with self._leaving:  # one connection counts itself out at a time: the last one knows it is
                if self._stats.get("active") <= -amount:
                    # The last connection out: hand the buffers kept warm back to the kernel before it
                    # counts itself out, so whoever sees the server idle in STATS sees its memory returned.
                    release_free_memory()
                self._stats.add(field, amount)
            return
        self._stats.add(field, amount)

    def count(self, verb: str, ok: bool) -> None:
        self._handler.beat = time.monotonic()
        self._stats.count(verb, ok)

    def request_started(self, verb: str) -> None:
        self._handler.beat = time.monotonic()
        self._stats.request_started(verb)

    def get(self, field: str) -> int:
        return self._stats.get(field)

    def snapshot(self) -> dict:
        return self._stats.snapshot()


class ThreadPoolServer(BaseServer):
    model = "thread"

    def _start_workers(self) -> None:
        self._stopping = threading.Event()
        self._aborting = threading.Event()
        self._flags = Flags(self._stopping.is_set, self._aborting.is_set)
        keep_buffers_warm()  # any pool size: reuse freed chunk buffers (see "Memory" in the module doc)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._handlers: list[_Handler] = []
        self._handlers_lock = threading.Lock()
        self._leaving = threading.Lock()
        self.replacements = 0
        self.handler_errors = 0
        for _ in range(self.config.workers):
            self._spawn()
        self._watchdog = threading.Thread(target=self._watch, name="labnet-watchdog", daemon=True)
        self._watchdog.start()

    def _spawn(self) -> None:
        handler = _Handler()
        with self._handlers_lock:
            index = len(self._handlers)
            self._handlers.append(handler)
        handler.thread = threading.Thread(target=self._loop, args=(handler,), name=f"labnet-worker-{index}",
                                          daemon=True)  # fmt: skip
        handler.thread.start()

    def dispatch(self, conn: socket.socket) -> None:
        self._queue.put(conn)

    def _loop(self, handler: _Handler) -> None:
        stats = _BeatStats(self.stats, handler, self._leaving)
        while not handler.retired:
            conn = self._queue.get()
            if conn is None:  # shutdown
                return
            handler.busy, handler.beat = True, time.monotonic()
            try:
                self._work(conn, stats)
            except BaseException:  # serve_connection catches what it expects: this is a bug, keep serving
                self.handler_errors += 1
                log.exception("a connection handler raised; the thread serves on")
            finally:
                handler.busy = False

    def _work(self, conn: socket.socket, stats) -> None:
        stats.add("waiting", -1)
        if self._stopping.is_set():
            refuse(conn, Code.SHUTDOWN, "server is shutting down")
            return
        serve_connection(conn, self.store, stats, self.config, self._flags)

    def stuck_after(self) -> float:
        return self.config.idle_timeout + self.config.grace + STUCK_MARGIN

    def _watch(self) -> None:
        while not self._aborting.wait(WATCH_EVERY):
            limit = self.stuck_after()
            now = time.monotonic()
            with self._handlers_lock:
                handlers = list(self._handlers)
            for h in handlers:
                if h.busy and not h.reported and now - h.beat > limit:
                    self._report_stuck(h, now - h.beat)

    def _report_stuck(self, handler: _Handler, silent: float) -> None:
        handler.reported = True
        frame = sys._current_frames().get(handler.thread.ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
        replace = self.replacements < self.config.workers and not self._stopping.is_set()
        log.error("BUG: handler thread %s shows no progress for %.0f s, past every deadline (idle %g s + grace "
                  "%g s); %s. Its stack:\n%s", handler.thread.name, silent, self.config.idle_timeout,
                  self.config.grace, "starting a replacement thread" if replace else "no replacement left",
                  stack)  # fmt: skip
        if replace:
            handler.retired = True
            self.replacements += 1
            self._spawn()
        self.stats.add("stuck")  # last: whoever sees the count also finds the log line and the replacement

    def _begin_stopping(self) -> None:
        self._stopping.set()

    def _abort_and_join(self, timeout: float) -> None:
        self._aborting.set()
        with self._handlers_lock:
            handlers = list(self._handlers)
        for _ in handlers:
            self._queue.put(None)
        # Every wait in a worker is sliced (labnet.transport.channel.POLL), so this ends promptly;
        # a handler that does not is stuck, and as a daemon it will not hold the process.
        end = time.monotonic() + timeout
        for h in handlers:
            h.thread.join(max(0.0, end - time.monotonic()))
            if h.thread.is_alive():
                log.error("handler thread %s did not stop within %g s; leaving it", h.thread.name, timeout)
        while True:  # connections nobody took: tell them
            try:
                conn = self._queue.get_nowait()
            except queue.Empty:
                break
            if conn is not None:
                refuse(conn, Code.SHUTDOWN, "server is shutting down")
