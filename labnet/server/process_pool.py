"""The process-pool server: N worker processes that each serve whole connections.

The parent accepts (``BaseServer.serve_forever``, where admission control
lives) and hands each accepted socket to the pool through a UNIX
``SOCK_SEQPACKET`` socket pair: ``socket.send_fds`` passes the file
descriptor itself, the kernel gives each message to exactly one worker
blocked in ``recv_fds``, and the worker then serves the connection with
``labnet.server.session.serve_connection`` -- file bytes never cross between
processes.  (The seed instead kept a thread per client in the parent and
shipped whole files to a ``ProcessPoolExecutor``: every byte pickled twice,
every file held in memory twice.)

Workers that die
----------------
A worker can vanish at any instant (the OOM killer, ``kill -9``, a crash in
a C extension).  Nothing a worker shares with the others can then stay
locked, because nothing shared has a lock: each worker writes its own row
of the counters (``labnet.server.stats``), and the stop flags are plain
shared bytes that only the parent writes.  The parent's accept loop waits on
every worker's sentinel together with the listener, so a death wakes it at
once: it logs the death (exit code or signal), retires the worker's counter
row (its connection counted as ``died``, its request as failed), removes
the temporary file of an upload the worker had in flight (temporary names
carry the worker's PID), and starts a replacement on the same row -- unless
the server is stopping.  Shutdown reaps deaths while it waits and never
waits for a dead worker.  One window is left, documented: a worker killed
between taking a connection from the hand-off socket and counting it leaves
``waiting`` one too high (the connection itself is closed by the kernel).

Start method: explicit.  ``fork`` by default on Linux -- the parent keeps
no thread of its own running while it forks (the accept loop prints the
status line itself), which makes fork safe, also for a replacement worker,
and 50 workers start in milliseconds; ``spawn`` (``--start-method spawn``,
the default elsewhere) works too because the worker entry point is this
module's importable :func:`worker_main`.  Workers ignore SIGINT and SIGHUP
(the parent decides), abort cleanly on SIGTERM, and get SIGTERM if the
parent dies (prctl), so no worker outlives its server.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time

from labnet.config import ServerConfig
from labnet.errors import Code
from labnet.procutil import keep_buffers_warm, release_free_memory, set_parent_death_signal
from labnet.protocol.codec import use_backend
from labnet.server.base import TRIM_EVERY, BaseServer
from labnet.server.connlog import accepted_from_message, accepted_message
from labnet.server.session import Flags, configure_refusals, refuse, serve_connection
from labnet.server.stats import Stats
from labnet.server.store import FileStore

log = logging.getLogger("labnet.server")
HANDOFF_POLL = 0.25


def default_start_method() -> str:
    return "fork" if sys.platform.startswith("linux") else "spawn"


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class ProcessPoolServer(BaseServer):
    model = "process"

    def _make_stats(self) -> Stats:
        self._ctx = multiprocessing.get_context(self.config.start_method or default_start_method())
        return Stats(mp_context=self._ctx, slots=self.config.workers + 1)  # row 0: this process

    def _start_workers(self) -> None:
        ctx = self._ctx
        # Plain shared bytes, written by this process only: unlike multiprocessing.Event (a lock and
        # a semaphore), nothing a worker killed while reading them could leave locked.
        self._stopping = ctx.RawValue("b", 0)
        self._aborting = ctx.RawValue("b", 0)
        self._handoff_tx, self._handoff_rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._handoff_tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self._handoff_tx.settimeout(5.0)
        self._workers: dict[int, multiprocessing.process.BaseProcess] = {}
        self.replacements = 0
        for slot in range(1, self.config.workers + 1):
            self._start_worker(slot)

    def _start_worker(self, slot: int, replacement: bool = False) -> None:
        inherited = []
        if self._ctx.get_start_method() == "fork":  # a forked child must drop the parent's ends
            inherited = [s.fileno() for s in (self.listener, self.counters_listener, self._handoff_tx) if s is not None]
            # and, in a replacement, the parent's ends of the other workers' sentinels (else every
            # replacement would hold a few more descriptors than the worker it replaces)
            inherited += [w.sentinel for w in self._workers.values()]
        stats = self.stats.writer(slot, test_hook=not replacement)
        w = self._ctx.Process(target=worker_main, name=f"labnet-worker-{slot}", daemon=True,
                              args=(self._handoff_rx, self.config, stats, self._stopping, self._aborting,
                                    inherited, os.getpid()))  # fmt: skip
        w.start()
        self._workers[slot] = w

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers.values()]

    def _watched(self) -> list:
        return [w.sentinel for w in self._workers.values()]

    def _workers_alive(self) -> bool:
        return any(w.exitcode is None for w in self._workers.values())

    def _check_workers(self) -> None:
        for slot, w in list(self._workers.items()):
            if w.exitcode is None:
                continue
            stopping = bool(self._stopping.value) or self.stop_requested.is_set()
            if stopping and w.exitcode == 0:
                continue  # a worker that finished as asked
            was = self.stats.retire(slot)
            removed = self.store.remove_temp_files_of(w.pid)
            doing = (f"while serving a {was['verb']} request" if was["verb"] and was["active"] > 0
                     else "while serving a connection" if was["active"] > 0 else "while idle")  # fmt: skip
            log.error("worker %s (pid %s) %s %s; %s%s", slot, w.pid, describe_exit(w.exitcode), doing,
                      f"removed {removed} temporary file(s); " if removed else "",
                      "not replaced: the server is stopping" if stopping else "starting a replacement")  # fmt: skip
            del self._workers[slot]
            w.close()
            if not stopping:
                self._start_worker(slot, replacement=True)
                self.replacements += 1

    def dispatch(self, conn: socket.socket) -> None:
        try:
            socket.send_fds(self._handoff_tx, [accepted_message(conn.fileno())], [conn.fileno()])
        except OSError as exc:
            self.stats.add("waiting", -1)
            self.stats.add("busy")
            refuse(conn, Code.BUSY, f"cannot queue the connection: {exc}")
            return
        conn.close()  # the worker has its own descriptor now

    def _begin_stopping(self) -> None:
        self._stopping.value = 1

    def _abort_and_join(self, timeout: float) -> None:
        self._aborting.value = 1
        end = time.monotonic() + timeout
        for w in self._workers.values():
            w.join(max(end - time.monotonic(), 0.01))
        for w in self._workers.values():
            if w.exitcode is None:
                log.warning("worker %s did not stop; terminating it", w.pid)
                w.terminate()
                w.join(1.0)
            if w.exitcode is None:
                w.kill()
                w.join(1.0)
        self._handoff_tx.close()
        self._handoff_rx.close()


def worker_main(handoff: socket.socket, config: ServerConfig, stats: Stats, stopping, aborting,
                inherited_fds: list[int], parent_pid: int) -> None:  # fmt: skip
    """Entry point of a worker process: take connections from ``handoff`` and serve them.

    ``stats`` is this worker's own row of the counters; ``stopping`` and ``aborting`` are
    shared bytes the parent sets.
    """
    for fd in inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    terminated = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: the parent decides
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    keep_buffers_warm()  # one connection at a time: reuse freed chunk buffers (see procutil)
    configure_refusals(config)  # a spawned worker starts without the parent's setting
    use_backend(config.base64)  # likewise the codec backend (--base64)
    store = FileStore(config.root, max_upload=config.max_upload, clean_temp=False)

    def is_stopping() -> bool:
        return bool(stopping.value)

    flags = Flags(is_stopping, lambda: bool(terminated) or bool(aborting.value))
    handoff.settimeout(HANDOFF_POLL)
    last_trim = time.monotonic()
    while not flags.aborting():
        try:
            message, fds, _, _ = socket.recv_fds(handoff, 64, 4)
        except TimeoutError:
            if is_stopping() or os.getppid() != parent_pid:
                break  # nothing queued and the server is stopping
            continue
        except OSError:
            break
        if not fds:
            break  # the parent's end is closed
        stats.add("waiting", -1)
        for extra in fds[1:]:
            os.close(extra)
        conn = socket.socket(fileno=fds[0])
        if is_stopping():
            refuse(conn, Code.SHUTDOWN, "server is shutting down")
            continue
        serve_connection(conn, store, stats, config, flags, accepted_from_message(message))
        if time.monotonic() - last_trim >= TRIM_EVERY:  # between connections: nothing of ours in flight
            release_free_memory()
            last_trim = time.monotonic()
    handoff.close()
