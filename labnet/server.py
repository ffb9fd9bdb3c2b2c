"""What every server model shares: listening, admission control, status, shutdown.

A concrete server (``server_thread.ThreadPoolServer``,
``server_process.ProcessPoolServer``) only says how an accepted connection
reaches a worker (:meth:`BaseServer.dispatch`) and how its workers start and
stop -- like ``socketserver.ThreadingMixIn.process_request`` or pyftpdlib's
``_start_task``.  Everything the workers do with a connection lives in
``labnet.session``.

Lifecycle
---------
``start()`` binds and starts the workers; ``serve_forever()`` accepts until
``request_stop()`` (SIGINT/SIGTERM call it); then ``shutdown()``: stop
accepting, tell queued clients ``ERR SHUTDOWN``, give transfers in flight
``grace`` seconds, abort the rest (their temporary files are removed), stop
the workers.  ``run_server()`` does all of that for the CLI.

Must not import a concrete server module at import time (they import this).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time

from .errors import Code, UsageError
from .procutil import release_free_memory, set_parent_death_signal
from .session import ServerConfig, refuse
from .stats import Stats, status_line
from .store import FileStore

log = logging.getLogger("labnet.server")

ACCEPT_POLL = 0.25  # seconds between checks of the stop flag while accepting
READY_PREFIX = "labnet server ready on"
TRIM_EVERY = 5.0  # seconds between malloc_trim calls (see procutil.release_free_memory)
MODELS = ("thread", "process")


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
        self.store = FileStore(config.root, max_upload=config.max_upload)
        self.stats = self._make_stats()
        self.listener: socket.socket | None = None
        self._stop_requested = threading.Event()
        self._stop_time: float | None = None  # when the stop was asked for: the grace period counts from it
        self._status_thread: threading.Thread | None = None

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

    # -- shared ----------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def start(self) -> None:
        self.listener = make_listener(self.config.host, self.config.port, self.config.backlog)
        self._start_workers()  # before any thread of ours exists: fork-safe
        if self.config.status_every and self.config.status_every > 0:
            self._status_thread = threading.Thread(target=self._print_status, name="labnet-status", daemon=True)
            self._status_thread.start()

    def request_stop(self) -> None:
        if self._stop_time is None:
            self._stop_time = time.monotonic()
        self._stop_requested.set()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`request_stop`; admission control happens here."""
        self.listener.settimeout(ACCEPT_POLL)
        last_trim = time.monotonic()
        while not self._stop_requested.is_set():
            if time.monotonic() - last_trim >= TRIM_EVERY:  # hand freed buffers back to the kernel
                release_free_memory()
                last_trim = time.monotonic()
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("accept failed: %s", exc)
                time.sleep(ACCEPT_POLL)
                continue
            conn.settimeout(None)
            self.stats.add("connections")
            # Full = every worker busy *and* max_waiting queued.  Counting the sum, not just the
            # queue, keeps a connection still on its way to an idle worker from causing a BUSY.
            if self.stats.get("active") + self.stats.get("waiting") >= self.config.workers + self.config.max_waiting:
                self.stats.add("busy")
                refuse(conn, Code.BUSY, f"all {self.config.workers} workers busy and "
                       f"{self.config.max_waiting} clients waiting; try again later")  # fmt: skip
                continue
            self.stats.add("waiting", 1)
            self.dispatch(conn)

    def shutdown(self) -> None:
        """Stop accepting, let transfers finish within the grace period, abort the rest, stop workers."""
        if self.listener is not None:
            self.listener.close()
        self._begin_stopping()
        end = (self._stop_time or time.monotonic()) + self.config.grace
        while time.monotonic() < end and (self.stats.get("active") > 0 or self.stats.get("waiting") > 0):
            time.sleep(0.05)
        self._abort_and_join(timeout=5.0)
        removed = self.store.remove_stale_temp_files()
        if removed:
            log.warning("removed %d temporary file(s) of aborted uploads", removed)

    def _print_status(self) -> None:
        every = self.config.status_every
        while not self._stop_requested.wait(every):
            print(status_line(self.stats.snapshot()), flush=True)


def create_server(config: ServerConfig) -> BaseServer:
    if config.model == "thread":
        from .server_thread import ThreadPoolServer

        return ThreadPoolServer(config)
    if config.model == "process":
        from .server_process import ProcessPoolServer

        return ProcessPoolServer(config)
    raise UsageError(f"unknown server model {config.model!r}; choose thread or process")


def _watch_parent(server: BaseServer, parent_pid: int) -> None:
    """Stop the server when the process that launched it is gone (a killed notebook kernel)."""
    while not server._stop_requested.wait(0.5):
        if os.getppid() != parent_pid:
            print("[labnet] launching process is gone: stopping", flush=True)
            server.request_stop()
            return


def run_server(config: ServerConfig) -> int:
    """Run a server in this process until SIGINT/SIGTERM; the CLI's ``labnet server``.

    When started by ``labnet.launcher`` (``LABNET_PARENT_PID`` set), the server
    also stops when its launcher dies: a parent-death signal (prctl) where the
    launcher asked for one, and a watchdog on the parent PID in every case.
    """
    parent_pid = int(os.environ.get("LABNET_PARENT_PID", "0") or 0)
    if parent_pid:
        if os.environ.get("LABNET_PDEATHSIG") == "1":
            set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:
            return 1
    server = create_server(config)
    server.start()
    host, port = server.address
    if parent_pid:
        threading.Thread(target=_watch_parent, args=(server, parent_pid), daemon=True).start()

    def on_signal(signum, frame):
        print(f"[labnet] {signal.Signals(signum).name}: stopping (grace {config.grace:g} s)", flush=True)
        server.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"WARNING: listening on {config.host}: anyone who can reach this host can list, "
                  "upload, download and delete files here (no authentication). See docs/security.md.",
                  file=sys.stderr, flush=True)  # fmt: skip
        print(f"{READY_PREFIX} {host}:{port} (model={config.model}, workers={config.workers}, "
              f"root={server.store.root})", flush=True)  # fmt: skip
        server.serve_forever()
    finally:
        server.shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
        print(status_line(server.stats.snapshot()), flush=True)
        print("[labnet] server stopped", flush=True)
    return 0
