"""Servers in the background, for notebooks, experiments and tests.

>>> with BackgroundServer("process", workers=5) as srv:
...     Client(*srv.address).list()

Resource rules
--------------
* ``start()`` returns only when the server accepts connections (it waits for
  the server's ready line, then connects once), or raises with the log's tail:
  a port in use gives the server's own one-line message.
* The server runs as ``python -m labnet server`` in *this* process group (so
  Ctrl-C and a notebook's interrupt reach it too), with its output in a log
  file (never a pipe that could fill up and stall it).
* ``stop()`` asks for a graceful stop (SIGTERM), waits for the grace period,
  then kills the whole process tree; it is idempotent and also runs at
  interpreter exit (atexit) and when the object is garbage collected.
* If this process dies without running any of that (a notebook kernel killed
  by nbval, ``kill -9``), the server notices: a parent-death signal when
  started from the main thread, and a watchdog on the parent PID always.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

from labnet.client import Client
from labnet.config import DEFAULT_HOST, SERVER_MODELS
from labnet.errors import UsageError
from labnet.measure.files import data_dir
from labnet.procutil import alive, peak_rss_bytes, process_tree, rss_bytes
from labnet.protocol.console import (
    parse_counters_address,
    parse_counters_line,
    parse_ready_base64,
    parse_ready_line,
)

_LIVE: weakref.WeakSet = weakref.WeakSet()


class BackgroundServer:
    """A labnet server in a child process.  See the module docstring for the rules."""

    def __init__(self, model: str = "thread", workers: int = 5, host: str = DEFAULT_HOST, port: int = 0,
                 root=None, status_every: float = 0, grace: float = 5.0, max_waiting: int | None = None,
                 idle_timeout: float | None = None, max_upload: int | None = None,
                 start_method: str | None = None, start_timeout: float = 30.0, extra_args=(), env=None,
                 dialect: str = "labnet", profile=None, connection_log=None, base64: str | None = None):  # fmt: skip
        if model not in SERVER_MODELS:
            raise UsageError(f"unknown server model {model!r}; choose {' or '.join(SERVER_MODELS)}")
        self.model, self.workers = model, int(workers)
        self.host, self.port = host, int(port)
        self.counters_address: tuple[str, int] | None = None  # from the ready line
        self.root = Path(root) if root is not None else data_dir("server_files")
        self.status_every, self.grace = status_every, grace
        self.max_waiting, self.idle_timeout, self.max_upload = max_waiting, idle_timeout, max_upload
        self.start_method = start_method
        self.dialect = dialect  # what the server speaks: labnet, course, sentinel (its readiness check sends nothing)
        self.profile = None if profile is None else str(profile)
        self.connection_log = None if connection_log is None else str(connection_log)
        self.base64 = base64  # the server's codec backend (--base64 pybase64|binascii; None: its default)
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._logdir: str | None = None
        self.log_path: Path | None = None
        self._log_file = None
        self._known_pids: set[int] = set()

    # -- life cycle --------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "labnet", "server", "--model", self.model, "--workers", str(self.workers),
               "--host", self.host, "--port", str(self.port), "--root", str(self.root),
               "--status-every", str(self.status_every), "--grace", str(self.grace)]  # fmt: skip
        if self.dialect != "labnet":
            cmd += ["--dialect", self.dialect]
        for flag, value in (("--max-waiting", self.max_waiting), ("--idle-timeout", self.idle_timeout),
                            ("--max-upload", self.max_upload), ("--start-method", self.start_method),
                            ("--profile", self.profile), ("--connection-log", self.connection_log),
                            ("--base64", self.base64)):  # fmt: skip
            if value is not None:
                cmd += [flag, str(value)]
        return cmd + self.extra_args

    def start(self) -> BackgroundServer:
        if self.proc is not None:
            return self
        self._logdir = tempfile.mkdtemp(prefix="labnet-server-")
        self.log_path = Path(self._logdir) / "server.log"
        self._log_file = open(self.log_path, "wb")
        env = dict(os.environ if self.env is None else self.env)
        env["LABNET_PARENT_PID"] = str(os.getpid())
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so ask for it
        # only from the main thread; the server's parent-PID watchdog covers the other cases.
        env["LABNET_PDEATHSIG"] = "1" if threading.current_thread() is threading.main_thread() else "0"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                          env.get("PYTHONPATH")]))  # fmt: skip
        self.proc = subprocess.Popen(self.command(), stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)  # fmt: skip
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self._known_pids.update(process_tree(self.proc.pid))
        return self

    def _wait_ready(self) -> None:
        end = time.monotonic() + self.start_timeout
        while time.monotonic() < end:
            for line in self.log().splitlines():
                ready = parse_ready_line(line)
                if ready is not None:
                    self.port = ready[1]
                    self.counters_address = parse_counters_address(line)
                    self.base64 = parse_ready_base64(line) or self.base64  # what it really uses
                    self._connect_once()
                    self._wait_idle(end)
                    return
            if self.proc.poll() is not None:
                tail = self.log().strip().splitlines()[-3:]
                message = tail[-1] if tail else f"exit status {self.proc.returncode}"
                if message.startswith("labnet: error: "):
                    message = message[len("labnet: error: "):]
                raise UsageError(f"server did not start: {message}")
            time.sleep(0.02)
        raise TimeoutError(f"server not ready after {self.start_timeout:g} s; log:\n{self.log()[-2000:]}")

    def _wait_idle(self, end: float) -> None:
        """Until the worker that took the readiness connection is free again (bounded): a server
        returned by ``start()`` has every worker idle, so the first client is never told QUEUED."""
        if self.counters_address is None:
            return
        while time.monotonic() < end:
            try:
                snap = read_counters(self.counters_address, timeout=2.0)
            except (OSError, ValueError):
                return
            # connections >= 1: the readiness connection was accepted (a connect completes in the
            # kernel before the accept loop takes it, so 0 active and 0 waiting alone prove nothing)
            if snap.get("connections", 0) >= 1 and snap.get("active", 0) == 0 and snap.get("waiting", 0) == 0:
                return
            time.sleep(0.01)

    def _connect_once(self) -> None:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        with socket.create_connection((host, self.port), timeout=5):
            pass

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the server and everything it started; returns its exit status.  Idempotent."""
        proc = self.proc
        if proc is None:
            return None
        pids = self._known_pids | set(process_tree(proc.pid))
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout if timeout is not None else self.grace + 10)
            except subprocess.TimeoutExpired:
                pass
            except OSError:
                pass
        pids |= set(process_tree(proc.pid))
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        gone_by = time.monotonic() + 2.0  # a killed grandchild (spawn's resource tracker) dies a moment later
        while any(alive(pid) for pid in pids) and time.monotonic() < gone_by:
            time.sleep(0.01)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _LIVE.discard(self)
        return proc.returncode

    def cleanup_log(self) -> None:
        if self._logdir and self.proc is not None and self.proc.poll() is not None:
            shutil.rmtree(self._logdir, ignore_errors=True)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop(timeout=2)
        except Exception:
            pass

    # -- looking at it ---------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return host, self.port

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The server process and its workers (for the process model)."""
        return process_tree(self.proc.pid) if self.running else []

    def rss(self) -> dict[int, int]:
        """Resident memory now, per process of the server, in bytes."""
        return {pid: rss_bytes(pid) for pid in self.pids()}

    def peak_rss(self) -> dict[int, int]:
        """Peak resident memory so far (VmHWM), per live process of the server, in bytes."""
        return {pid: peak_rss_bytes(pid) for pid in self.pids()}

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def client(self, **kw):
        return Client(*self.address, **kw)

    def counters(self, timeout: float = 5.0) -> dict:
        """The server's counters, read from its counters listener: no worker is taken, so this
        answers while every worker is busy, and it is exact for a run shorter than one status line."""
        if self.counters_address is None:
            raise UsageError("this server has no counters listener (started with --counters-port off)")
        return read_counters(self.counters_address, timeout)

    def stats(self) -> dict:
        with self.client(timeout=10) as c:
            return c.stats()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<BackgroundServer {self.model} x{self.workers} on {self.host}:{self.port} {state}>"


def read_counters(address: tuple[str, int], timeout: float = 5.0) -> dict:
    """One counters line from a server's counters listener (``labnet.protocol.console``)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > 1 << 20:
                raise ValueError("counters line longer than 1 MiB")
    return parse_counters_line(data)


def stop_all() -> None:
    """Stop every background server this process started (also runs at exit)."""
    for server in list(_LIVE):
        server.stop(timeout=5)


atexit.register(stop_all)
