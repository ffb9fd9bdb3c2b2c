"""The thread-pool server: one process, a ``ThreadPoolExecutor`` of N workers.

The main thread accepts (``BaseServer.serve_forever``) and submits each
connection to the pool; a pool thread serves the whole connection with
``labnet.server.session.serve_connection``.  Connections beyond N wait in the
executor's queue (counted as ``waiting``) until a thread is free -- that wait
is the queueing the lab measures.  Threads suffice for this I/O-bound work
because socket, file and hashing calls release the GIL for large buffers.

Must not import multiprocessing.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from labnet.errors import Code
from labnet.procutil import MANY_THREADS, keep_buffers_warm, limit_heap_fragmentation
from labnet.server.base import BaseServer
from labnet.server.session import Flags, refuse, serve_connection


class ThreadPoolServer(BaseServer):
    model = "thread"

    def _start_workers(self) -> None:
        self._stopping = threading.Event()
        self._aborting = threading.Event()
        self._flags = Flags(self._stopping.is_set, self._aborting.is_set)
        if self.config.workers > MANY_THREADS:  # keeps peak RSS flat with many busy threads (see procutil)
            limit_heap_fragmentation()
        else:  # few threads: reuse freed chunk buffers instead of faulting fresh pages in
            keep_buffers_warm()
        self._pool = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="labnet-worker")

    def dispatch(self, conn: socket.socket) -> None:
        self._pool.submit(self._work, conn)

    def _work(self, conn: socket.socket) -> None:
        self.stats.add("waiting", -1)
        if self._stopping.is_set():
            refuse(conn, Code.SHUTDOWN, "server is shutting down")
            return
        serve_connection(conn, self.store, self.stats, self.config, self._flags)

    def _begin_stopping(self) -> None:
        self._stopping.set()

    def _abort_and_join(self, timeout: float) -> None:
        self._aborting.set()
        # Every wait in a worker is sliced (labnet.transport.channel.POLL), so this ends promptly.
        self._pool.shutdown(wait=True, cancel_futures=False)
