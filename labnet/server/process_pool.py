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

Counters live in shared memory (``labnet.server.stats``) so ``STATS`` is exact.

Start method: explicit.  ``fork`` by default on Linux -- the workers are
started before the parent creates any thread, which makes fork safe, and
50 workers start in milliseconds; ``spawn`` (``--start-method spawn``, the
default elsewhere) works too because the worker entry point is this module's
importable :func:`worker_main`.  Workers ignore SIGINT (the parent decides),
abort cleanly on SIGTERM, and get SIGTERM if the parent dies (prctl), so no
worker outlives its server.
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
from labnet.server.base import TRIM_EVERY, BaseServer
from labnet.server.session import Flags, refuse, serve_connection
from labnet.server.stats import Stats
from labnet.server.store import FileStore

log = logging.getLogger("labnet.server")
HANDOFF_POLL = 0.25


def default_start_method() -> str:
    return "fork" if sys.platform.startswith("linux") else "spawn"


class ProcessPoolServer(BaseServer):
    model = "process"

    def _make_stats(self) -> Stats:
        self._ctx = multiprocessing.get_context(self.config.start_method or default_start_method())
        return Stats(mp_context=self._ctx)

    def _start_workers(self) -> None:
        ctx = self._ctx
        self._stopping = ctx.Event()
        self._aborting = ctx.Event()
        self._handoff_tx, handoff_rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._handoff_tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self._handoff_tx.settimeout(5.0)
        inherited = []
        if ctx.get_start_method() == "fork":  # a forked child must drop the parent's ends
            inherited = [self.listener.fileno(), self._handoff_tx.fileno()]
        self._workers = [
            ctx.Process(target=worker_main, name=f"labnet-worker-{i}", daemon=True,
                        args=(handoff_rx, self.config, self.stats, self._stopping, self._aborting,
                              inherited, os.getpid()))  # fmt: skip
            for i in range(self.config.workers)
        ]
        for w in self._workers:
            w.start()
        handoff_rx.close()  # the workers hold it now

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def dispatch(self, conn: socket.socket) -> None:
        try:
            socket.send_fds(self._handoff_tx, [b"c"], [conn.fileno()])
        except OSError as exc:
            self.stats.add("waiting", -1)
            self.stats.add("busy")
            refuse(conn, Code.BUSY, f"cannot queue the connection: {exc}")
            return
        conn.close()  # the worker has its own descriptor now

    def _begin_stopping(self) -> None:
        self._stopping.set()

    def _abort_and_join(self, timeout: float) -> None:
        self._aborting.set()
        end = time.monotonic() + timeout
        for w in self._workers:
            w.join(max(end - time.monotonic(), 0.01))
        for w in self._workers:
            if w.is_alive():
                log.warning("worker %s did not stop; terminating it", w.pid)
                w.terminate()
                w.join(1.0)
            if w.is_alive():
                w.kill()
                w.join(1.0)
        self._handoff_tx.close()


def worker_main(handoff: socket.socket, config: ServerConfig, stats: Stats, stopping, aborting,
                inherited_fds: list[int], parent_pid: int) -> None:  # fmt: skip
    """Entry point of a worker process: take connections from ``handoff`` and serve them."""
    for fd in inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    terminated = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    keep_buffers_warm()  # one connection at a time: reuse freed chunk buffers (see procutil)
    store = FileStore(config.root, max_upload=config.max_upload, clean_temp=False)
    flags = Flags(stopping.is_set, lambda: bool(terminated) or aborting.is_set())
    handoff.settimeout(HANDOFF_POLL)
    last_trim = time.monotonic()
    while not flags.aborting():
        try:
            _, fds, _, _ = socket.recv_fds(handoff, 16, 4)
        except TimeoutError:
            if stopping.is_set() or os.getppid() != parent_pid:
                break  # nothing queued and the server is stopping
            continue
        except OSError:
            break
        if not fds:
            break  # the parent's end is closed
        for extra in fds[1:]:
            os.close(extra)
        conn = socket.socket(fileno=fds[0])
        stats.add("waiting", -1)
        if stopping.is_set():
            refuse(conn, Code.SHUTDOWN, "server is shutting down")
            continue
        serve_connection(conn, store, stats, config, flags)
        if time.monotonic() - last_trim >= TRIM_EVERY:  # between connections: nothing of ours in flight
            release_free_memory()
            last_trim = time.monotonic()
    handoff.close()
