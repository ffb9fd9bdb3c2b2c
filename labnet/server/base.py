"""What every server model shares: listening, admission control, status, shutdown.

A concrete server (``labnet.server.thread_pool.ThreadPoolServer``,
``labnet.server.process_pool.ProcessPoolServer``) only says how an accepted
connection reaches a worker (:meth:`BaseServer.dispatch`) and how its workers
start and stop -- like ``socketserver.ThreadingMixIn.process_request`` or
pyftpdlib's ``_start_task``.  Everything the workers do with a connection
lives in ``labnet.server.session``.

Lifecycle
---------
``start()`` binds and starts the workers; ``serve_forever()`` accepts until
``request_stop()`` (SIGINT/SIGTERM call it); then ``shutdown()``: stop
accepting, tell queued clients ``ERR SHUTDOWN``, give transfers in flight
``grace`` seconds, abort the rest (their temporary files are removed), stop
the workers.  ``labnet.server.run_server()`` does all of that for the CLI.

Imports the server's own session, store and counters, the protocol,
``errors``, ``config`` and ``procutil``; never a concrete model (they import
this), the client or the lab's tools.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from multiprocessing.connection import wait as wait_for

from labnet.config import ServerConfig
from labnet.errors import Code, UsageError
from labnet.procutil import release_free_memory
from labnet.protocol.console import counters_line, status_line
from labnet.protocol.messages import queued_line
from labnet.server.connlog import note_accepted
from labnet.server.session import configure_refusals, refuse
from labnet.server.stats import Stats
from labnet.server.store import FileStore

log = logging.getLogger("labnet.server")

ACCEPT_POLL = 0.25  # seconds between checks of the stop flag while accepting
ACCEPT_BURST = 64  # connections taken from the listen queue before the loop looks around again
COUNTERS_HOST = "127.0.0.1"  # the counters listener answers this machine only
TRIM_EVERY = 5.0  # seconds between malloc_trim calls (see procutil.release_free_memory)


def make_listener(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket; a clear ``UsageError`` when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == 98:  # EADDRINUSE
            raise UsageError(f"port {port} on {host} is already in use (another server running? try --port 0)") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class BaseServer:
    model = "?"

    def __init__(self, config: ServerConfig):
        if config.workers < 1:
            raise UsageError("--workers must be at least 1")
        self.config = config
        configure_refusals(config)  # BUSY / SHUTDOWN in the server's dialect (a bad profile fails here)
        self.store = FileStore(config.root, max_upload=config.max_upload)
        self.stats = self._make_stats()
        self.listener: socket.socket | None = None
        self.counters_listener: socket.socket | None = None
        self._stop_event = threading.Event()
        self._stop_time: float | None = None  # when the stop was asked for: the grace period counts from it

    # -- to be provided by a model -------------------------------------------

    def _make_stats(self) -> Stats:
        return Stats()

    def _start_workers(self) -> None:
        raise NotImplementedError

    def dispatch(self, conn: socket.socket) -> None:
        """Hand an accepted connection to a worker (it is counted as waiting)."""
        raise NotImplementedError

    def _begin_stopping(self) -> None:
        raise NotImplementedError

    def _abort_and_join(self, timeout: float) -> None:
        raise NotImplementedError

    def _watched(self) -> list:
        """Extra objects the accept loop waits on (a model's worker sentinels): one becoming ready
        wakes the loop at once, which then calls :meth:`_check_workers`."""
        return []

    def _check_workers(self) -> None:
        """Notice workers that died (log, count, replace); called by the accept loop and shutdown."""

    def _workers_alive(self) -> bool:
        return True

    # -- shared ----------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    @property
    def counters_address(self) -> tuple[str, int] | None:
        """Where the counters can be read without a worker (see :meth:`_answer_counters`)."""
        return None if self.counters_listener is None else self.counters_listener.getsockname()[:2]

    def start(self) -> None:
        self.listener = make_listener(self.config.host, self.config.port, self.config.backlog)
        if self.config.counters_port is not None:
            self.counters_listener = make_listener(COUNTERS_HOST, self.config.counters_port, 16)
            self.counters_listener.setblocking(False)
        self._start_workers()  # the parent has no thread of ours yet: fork-safe

    @property
    def stop_requested(self) -> threading.Event:
        """Set once :meth:`request_stop` was called; wait on it to follow the server's life."""
        return self._stop_event

    def request_stop(self) -> None:
        if self._stop_time is None:
            self._stop_time = time.monotonic()
        self._stop_event.set()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`request_stop`; admission control happens here.

        One loop, no helper thread: it waits on the listener, the counters listener and the
        model's worker sentinels together, so a worker's death is noticed the moment it happens,
        and the status line is printed from here too (a process model forks replacement
        workers from this process: no other thread of ours may hold a lock at that moment).
        """
        self.listener.setblocking(False)
        last_trim = time.monotonic()
        every = self.config.status_every if self.config.status_every and self.config.status_every > 0 else None
        next_status = time.monotonic() + every if every else None
        waitables = [self.listener] + ([self.counters_listener] if self.counters_listener is not None else [])
        while not self._stop_event.is_set():
            now = time.monotonic()
            if now - last_trim >= TRIM_EVERY:  # hand freed buffers back to the kernel
                release_free_memory()
                last_trim = now
            if next_status is not None and now >= next_status:
                print(status_line(self.stats.snapshot()), flush=True)
                next_status = now + every
            timeout = ACCEPT_POLL if next_status is None else max(0.0, min(ACCEPT_POLL, next_status - now))
            try:
                ready = wait_for(waitables + self._watched(), timeout=timeout)
            except OSError:  # a sentinel closed under us: look again
                ready = []
            self._check_workers()
            if self.counters_listener is not None and self.counters_listener in ready:
                self._answer_counters()
            if self.listener in ready:
                self._accept_ready()

    def _accept_ready(self) -> None:
        for _ in range(ACCEPT_BURST):  # take what is queued, but let the loop look at deaths and stops
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("accept failed: %s", exc)
                time.sleep(ACCEPT_POLL)
                return
            conn.setblocking(True)
            note_accepted(conn.fileno())  # for the connection log: the worker takes it back
            self.stats.add("connections")
            # Full = every worker busy *and* max_waiting queued.  Counting the sum, not just the
            # queue, keeps a connection still on its way to an idle worker from causing a BUSY.
            if self.stats.get("active") + self.stats.get("waiting") >= self.config.workers + self.config.max_waiting:
                self.stats.add("busy")
                refuse(conn, Code.BUSY, f"all {self.config.workers} workers busy and "
                       f"{self.config.max_waiting} clients waiting; try again later")  # fmt: skip
                continue
            ahead = self.stats.get("active") + self.stats.get("waiting") - self.config.workers
            if ahead >= 0 and self.config.dialect == "labnet":  # no idle worker: say so now (labnet's own line)
                try:
                    conn.setblocking(False)
                    conn.send(queued_line(ahead + 1))  # a few bytes on a fresh socket: never blocks
                except OSError:
                    pass
                finally:
                    conn.setblocking(True)
            self.stats.add("waiting", 1)
            self.dispatch(conn)

    def _answer_counters(self) -> None:
        """One JSON line of counters to whoever connects to the counters listener, then close.

        Answered by the accept loop itself, so the counters can be read while every worker is
        busy (or dead), in any dialect, as often as a dashboard likes: a snapshot is a few
        hundred bytes, which a fresh socket's send buffer always takes without blocking.
        """
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = self.counters_listener.accept()
            except (BlockingIOError, OSError):
                return
            try:
                snap = self.stats.snapshot()
                snap.update({"model": self.config.model, "workers": self.config.workers, "pid": os.getpid(),
                             "base64": self.config.base64})  # fmt: skip
                conn.setblocking(False)
                conn.send(counters_line(snap))
            except OSError:
                pass
            finally:
                conn.close()

    def shutdown(self) -> None:
        """Stop accepting, let transfers finish within the grace period, abort the rest, stop workers.

        Never waits for a dead worker: deaths are reaped while waiting, and a server whose workers
        are all gone has nobody left to wait for.
        """
        for listener in (self.listener, self.counters_listener):
            if listener is not None:
                listener.close()
        self._begin_stopping()
        end = (self._stop_time or time.monotonic()) + self.config.grace
        while time.monotonic() < end and (self.stats.get("active") > 0 or self.stats.get("waiting") > 0):
            self._check_workers()
            if not self._workers_alive():
                break
            time.sleep(0.05)
        self._abort_and_join(timeout=5.0)
        self._check_workers()
        removed = self.store.remove_stale_temp_files()
        if removed:
            log.warning("removed %d temporary file(s) of aborted uploads", removed)
