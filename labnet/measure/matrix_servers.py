"""Where a matrix cell's server comes from: labnet's own, a command labnet starts, or one run by hand.

>>> with open_servers(setup, root=out / ".server_files", log_dir=out / "server-logs") as servers:
...     lease = servers.lease(cell)            # started now, or the running one reused
...     lease.before()                         # the server's own counts before the cell (its log)
...     result = stress.run(..., host=lease.host, port=lease.port)
...     outcome = lease.finish(result.records, expected_requests=...)
...     lease.release()

(``setup``: a :class:`labnet.measure.matrix_setup.ServerSetup`, the flags checked.)  What it holds:

* Three sources of servers, each a context manager with ``lease(cell)`` and ``close()``:
  :class:`OwnServers` (labnet's ``BackgroundServer``, one per model and pool size, its peak RSS
  reset before each cell), :class:`CommandServers` (a student's command under ``Supervised``:
  own process group, killed whole, optional memory limit; restarted only when the cell's model or pool size changes,
  or when it died), :class:`HandRunServer` (someone runs it by hand, maybe on another machine:
  nothing is started or stopped, its pool size is what was declared); :func:`open_servers`.
* :class:`LogCounter`: a server's own ok/failed counts read from its output with
  ``--server-log-regex``; :class:`TreeSampler`: the peak summed RSS of a process tree.
* :class:`CellServerError` (the cell could not get its server: status, category, note) and
  :class:`Outcome` (what the server did during a cell: peaks, memory, death, its own counts).

A command's server serves several cells in a row, so its ``peak_tree_rss`` is the peak since it
started (the cells of one model and pool size, in order).  Its output goes to
``log_dir/<label>_<model>_x<workers>_<time>_<n>.log`` and stays there for the student to read.

Resource rules: every server started here is stopped by its lease (labnet's) or by ``close()``
(a command's), on every exit path, ``KeyboardInterrupt`` included; a command's guard also kills it
when this process dies (``labnet.measure.supervisor``).  Waits are bounded: the start
(``start_timeout``), a fixed port held by TIME_WAIT (``port_wait``, with a message), the server's
log settling after a cell (``LOG_SETTLE`` s).

Must not import ``labnet.measure.matrix_run`` (which imports it), ``matrix_table``, ``stress``,
``plotting``/matplotlib or the server package (labnet's servers run as child processes).
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from labnet.config import MB
from labnet.errors import LabnetError
from labnet.measure.launcher import BackgroundServer
from labnet.measure.matrix_setup import ServerSetup, fill_template, free_port
from labnet.measure.supervisor import (
    PortNotFree,
    ServerDidNotStart,
    Supervised,
    SupervisorError,
    describe_status,
    wait_port_free,
)
from labnet.procutil import alive, peak_rss_bytes, reset_peak_rss, rss_bytes

LOG_SETTLE = 5.0  # seconds the server's log may take to show a cell's requests
IDLE_WAIT = 10.0  # seconds a reused server may take to end the last cell's connections
LOG_QUIET = 0.5  # ... or stop growing for this long
TAIL_LINES, TAIL_CHARS = 12, 1500  # what of a server's output goes into a row's note


class CellServerError(Exception):
    """The cell could not get a server.  ``status``: the row's (``failed``: the server's fault, the
    row is final; ``error``: labnet's or the machine's, tried again on resume); ``category``: the
    verdict (``did_not_start``, ``out_of_memory``, ``port_not_free``...); ``note``: for the row."""

    def __init__(self, status: str, category: str, note: str, memory_mechanism: str | None = None,
                 peak_tree_rss: int | None = None):  # fmt: skip
        super().__init__(note)
        self.status, self.category, self.note = status, category, note
        self.memory_mechanism, self.peak_tree_rss = memory_mechanism, peak_tree_rss  # what the server showed


def one_line(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text`` on one line (`` ⏎ `` between them), at most ``chars`` long."""
    kept = " ⏎ ".join(line.rstrip() for line in (text or "").strip().splitlines()[-lines:] if line.strip())
    return kept if len(kept) <= chars else "..." + kept[-chars:]


# --------------------------------------------------------------------------
# Measuring what the server does: its log, its memory
# --------------------------------------------------------------------------


class LogCounter:
    """A server's own ok/failed counts, read from its output with a regex (``--server-log-regex``).

    The regex is matched against each new line of the log; in a match, a group ``ok`` or ``failed``
    that holds a number sets that count (a server that prints its totals), any other text adds one
    (a server that prints a line per request).  ``counts()`` reads only what was added since.
    """

    def __init__(self, pattern: re.Pattern, path: Path):
        self.pattern, self.path = pattern, Path(path)
        self.offset, self.ok, self.failed = 0, 0, 0

    def counts(self) -> tuple[int, int]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while piece := f.read(1 << 20):
                    end = piece.rfind(b"\n") + 1  # whole lines only: a half-printed line counts next time
                    if end == 0 and len(piece) < 1 << 20:
                        break
                    end = end or len(piece)
                    self.offset += end
                    for line in piece[:end].decode(errors="replace").splitlines():
                        for m in self.pattern.finditer(line):
                            self.ok = self._count(m.group("ok"), self.ok)
                            self.failed = self._count(m.group("failed"), self.failed)
                    f.seek(self.offset)
        except OSError:
            pass
        return self.ok, self.failed

    @staticmethod
    def _count(text, total: int) -> int:
        if text is None:
            return total
        return int(text) if text.strip().isdigit() else total + 1

    def settle(self, base: tuple[int, int], expected: int, limit: float = LOG_SETTLE,
               quiet: float = LOG_QUIET) -> tuple[int, int]:  # fmt: skip
        """The counts once ``expected`` requests are counted since ``base``, or the log stopped growing
        for ``quiet`` s, or ``limit`` s passed (a server that never prints is not waited for long)."""
        end = time.monotonic() + limit
        last_size, changed = -1, time.monotonic()
        while True:
            ok, failed = self.counts()
            now = time.monotonic()
            with suppress(OSError):
                size = self.path.stat().st_size
                if size != last_size:
                    last_size, changed = size, now
            if (ok - base[0]) + (failed - base[1]) >= expected or now - changed >= quiet or now >= end:
                return ok, failed
            time.sleep(0.05)


class TreeSampler:
    """The peak of a process tree's summed RSS, sampled every ``every`` s in a daemon thread until
    ``stop()``; ``peak`` is the larger of that and the biggest VmHWM of one process (as
    ``Supervised.peak_tree_rss``)."""

    def __init__(self, pids, every: float = 0.05):
        self._pids, self._every = pids, every
        self._sum, self._hwm = 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="labnet-tree-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        pids = self._pids()
        self._sum = max(self._sum, sum(rss_bytes(p) for p in pids))
        self._hwm = max([self._hwm, *(peak_rss_bytes(p) for p in pids)])

    def _loop(self) -> None:
        while not self._done.wait(self._every):
            self.sample()

    def stop(self) -> int:
        if not self._done.is_set():
            self.sample()
            self._done.set()
            self._thread.join(timeout=2)
        return self.peak

    @property
    def peak(self) -> int:
        return max(self._sum, self._hwm)


@dataclass
class Outcome:
    """What the server did during one cell (``None``: not measured)."""

    peak_rss_max: int | None = None  # the biggest VmHWM of one of its processes
    processes: int | None = None
    peak_tree_rss: int | None = None
    memory_mechanism: str | None = None  # the row's column: "watchdog" (it acted), "watchdog, not reached"
    memory_acted: bool = False
    died: bool = False  # it ended during the cell (for memory or by itself)
    counts: tuple[int, int] | None = None  # (ok, failed) from its log
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------
# labnet's own servers: one per model and pool size, kept while its cells run
# --------------------------------------------------------------------------


class _Lease:
    """One cell's use of a server: ``host``/``port``; ``before()``, ``finish(...)``, ``release()``."""

    def __init__(self, host: str, port: int, notes=()):
        self.host, self.port, self.notes = host, port, list(notes)

    def before(self) -> None:
        pass

    def finish(self, records, expected_requests: int = 0) -> Outcome:
        return Outcome(notes=list(self.notes))

    def release(self) -> None:
        pass


class _OwnLease(_Lease):
    def __init__(self, owner: OwnServers, server: BackgroundServer, sampler: TreeSampler):
        super().__init__(*server.address)
        self.owner, self.server, self.sampler = owner, server, sampler
        self.finished = False

    def finish(self, records, expected_requests: int = 0) -> Outcome:
        peaks = self.server.peak_rss()  # VmHWM of every server process since lease() reset it
        self.finished = True
        return Outcome(peak_rss_max=max(peaks.values()) if peaks else None, processes=len(peaks),
                       peak_tree_rss=self.sampler.stop() or None)  # fmt: skip

    def release(self) -> None:
        self.sampler.stop()
        if not self.finished:  # the cell broke off (an error, Ctrl-C): the next cell gets a fresh server
            self.owner.stop_current()


class _Servers:
    def __init__(self, setup: ServerSetup):
        self.setup = setup
        self.starts: list[tuple] = []  # (model, workers) of every server started

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stop_current(self) -> None:
        """Stop the server this source started and still keeps, if any."""

    def close(self) -> None:
        self.stop_current()


def _idle(server: BackgroundServer, limit: float = IDLE_WAIT) -> bool:
    """Wait until ``server`` serves no connection and queues none (its counters say so), at most
    ``limit`` s.  A thread server returns its freed buffers before it shows idle (see
    ``labnet.server.thread_pool``), so a peak reset after this starts from what it really holds."""
    end = time.monotonic() + limit
    while True:
        try:
            counters = server.counters(timeout=min(limit, 5.0))
        except (LabnetError, OSError, ValueError):
            return False
        if counters.get("active") == 0 and counters.get("waiting") == 0:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)


class OwnServers(_Servers):
    """labnet's ``BackgroundServer``: one per model and pool size, kept for the cells that follow.

    ``run_matrix`` runs a pool size's cells one after another, so each server
    starts once (a start and a stop cost 0.6-0.7 s together, measured: 73 s of a
    236 s matrix when every one of the 108 cells had its own server).  What keeps
    the rows apart: before each cell the server must be idle (``IDLE_WAIT``) and
    every server process's peak RSS is reset (``procutil.reset_peak_rss``; where
    either fails, the cell gets a fresh server); the counts are ``STATS`` after
    the cell minus before it; a cell that broke off (error, interrupt) stops its
    server.  ``close()`` stops the one still running, on every exit path.
    """

    def __init__(self, setup: ServerSetup | None = None, *, root, env=None):
        super().__init__(setup or ServerSetup())
        self.root, self.env = Path(root), env
        self._key: tuple | None = None
        self._server: BackgroundServer | None = None

    def lease(self, cell) -> _Lease:
        key = (cell.server_model, cell.server_workers, max(128, 2 * cell.clients))
        server = self._server
        if server is not None and (key != self._key or not server.running or not _idle(server)
                                   or not all(reset_peak_rss(p) for p in server.pids())):  # fmt: skip
            self.stop_current()
            server = None
        if server is None:
            server = BackgroundServer(cell.server_model, cell.server_workers, root=self.root, status_every=0,
                                      max_waiting=key[2], env=self.env)  # fmt: skip
            try:
                server.start()
            except (LabnetError, OSError) as exc:
                server.cleanup_log()
                raise CellServerError("error", "error", f"{type(exc).__name__}: {exc}") from None
            self._key, self._server = key, server
            self.starts.append((cell.server_model, cell.server_workers))
        return _OwnLease(self, server, TreeSampler(server.pids).start())

    def stop_current(self) -> None:
        server, self._server, self._key = self._server, None, None
        if server is not None:
            try:
                server.stop()
            finally:
                server.cleanup_log()


class HandRunServer(_Servers):
    """A server someone runs by hand: labnet neither starts nor stops it, nor sees its memory."""

    def lease(self, cell) -> _Lease:
        return _Lease(self.setup.connect_host, self.setup.port,
                      ["server run by hand: not started or stopped by labnet, its memory not measured"])


# --------------------------------------------------------------------------
# A student's command, supervised
# --------------------------------------------------------------------------


@dataclass
class _Running:
    key: tuple
    sup: Supervised
    port: int
    log: Path
    counter: LogCounter | None

    def running(self) -> bool:
        return self.sup.result is None and self.sup.pid is not None and alive(self.sup.pid)


class _CommandLease(_Lease):
    def __init__(self, owner: CommandServers, run: _Running, notes):
        super().__init__(owner.setup.connect_host, run.port, notes)
        self.owner, self.run, self.base = owner, run, (0, 0)

    def before(self) -> None:
        if self.run.counter is not None:
            self.base = self.run.counter.counts()

    def finish(self, records, expected_requests: int = 0) -> Outcome:
        run, setup = self.run, self.owner.setup
        out = Outcome(notes=list(self.notes))
        guard = run.sup.memory_guard
        if run.running():
            pids = run.sup.pids()
            peaks = [peak_rss_bytes(p) for p in pids]
            out.peak_rss_max, out.processes = (max(peaks) if peaks else None), len(pids)
            out.peak_tree_rss = run.sup.peak_tree_rss or None
            out.memory_mechanism = f"{guard}, not reached" if guard else None
        else:
            result = self.owner.stop_current()
            out.died, out.peak_tree_rss = True, result.peak_tree_rss or None
            if result.memory_exceeded:
                out.memory_acted, out.memory_mechanism = True, result.memory_mechanism
                why = f"; no cgroup: {run.sup.memory_note}" if result.memory_mechanism == "watchdog" else ""
                out.notes.append(f"out_of_memory: the server's processes went over the memory limit of "
                                 f"{setup.memory_limit / MB:g} MB and were killed by the {result.memory_mechanism}"
                                 f"{why}; its output: {run.log}")  # fmt: skip
            else:
                out.memory_mechanism = f"{guard}, not reached" if guard else None
                out.notes.append(f"server_died: the server {describe_status(result.returncode)} during this cell; "
                                 f"its last lines: {one_line(result.tail)}")  # fmt: skip
        if run.counter is not None:
            ok, failed = run.counter.settle(self.base, expected_requests)
            out.counts = (ok - self.base[0], failed - self.base[1])
        return out


class CommandServers(_Servers):
    """A student's server from a command template, under ``Supervised``; one at a time, restarted only
    when a cell needs another model or pool size (or it died).  ``close()`` stops it."""

    def __init__(self, setup: ServerSetup, *, root, log_dir, env=None, say=None, start_timeout: float = 30.0,
                 port_wait: float = 90.0):  # fmt: skip
        super().__init__(setup)
        self.root, self.log_dir = Path(root), Path(log_dir)
        self.env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}  # its prints reach the log
        self.say = say or (lambda message: None)
        self.start_timeout, self.port_wait = start_timeout, port_wait
        self.current: _Running | None = None
        self.failed: dict[tuple, tuple] = {}  # (model, workers) -> (category, note, mechanism) of a failed start

    def lease(self, cell) -> _Lease:
        key = (cell.server_model, cell.server_workers)
        if key in self.failed:
            category, note, mechanism = self.failed[key]
            raise CellServerError("failed", category, f"{note} (an earlier cell of this model and pool size)",
                                  mechanism)  # fmt: skip
        notes = []
        if self.current is not None and (self.current.key != key or not self.current.running()):
            same, result = self.current.key == key, self.stop_current()
            if same:  # it ended between two cells
                notes.append(f"server_died: the server {describe_status(result.returncode)} after the last cell; "
                             f"started again; its last lines: {one_line(result.tail, 4)}")  # fmt: skip
        if self.current is None:
            self.current = self._start(key, notes)
        return _CommandLease(self, self.current, notes)

    def stop_current(self):
        run, self.current = self.current, None
        return run.sup.stop() if run is not None else None

    def _start(self, key: tuple, notes: list) -> _Running:
        model, workers = key
        setup = self.setup
        port = free_port(setup.host) if setup.port is None else setup.port
        command = fill_template(setup.commands[model], port=port, workers=workers, host=setup.host,
                                root=setup.root or self.root, model=model)  # fmt: skip
        self.log_dir.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", setup.label)
        log = self.log_dir / f"{safe}_{model}_x{workers}_{time.strftime('%Y%m%d-%H%M%S')}_{len(self.starts) + 1}.log"
        waited = False
        while True:
            sup = Supervised(command, cwd=setup.cwd, env=self.env, log_path=log, memory_limit=setup.memory_limit,
                             start_timeout=self.start_timeout)  # fmt: skip
            try:
                sup.start()
                sup.wait_listening(setup.host, port, timeout=self.start_timeout)
                break
            except ServerDidNotStart as exc:
                result = sup.stop()
                if setup.port is not None and not waited and exc.returncode is not None and _busy(setup.host, port):
                    waited = True  # it could not bind its fixed port: TIME_WAIT of the last run? wait, once
                    notes.append(self._wait_port(port))
                    continue
                oom = result is not None and result.memory_exceeded
                category = "out_of_memory" if oom else "did_not_start"
                mechanism = result.memory_mechanism if oom else None
                said = str(exc).split("; its last lines:")[0]
                note = (f"{category}: {said}" + (f" (killed by the {mechanism})" if oom else "")
                        + f"; command: {command}; its last lines: {one_line(exc.tail)}; full output: {log}")
                self.failed[key] = (category, note, mechanism)
                raise CellServerError("failed", category, note, mechanism,
                                      result.peak_tree_rss if result is not None else None) from None
            except PortNotFree as exc:
                sup.stop()
                raise CellServerError("error", "port_not_free", str(exc)) from None
            except SupervisorError as exc:
                sup.stop()
                raise CellServerError("error", "error", f"cannot supervise the server's command: {exc}") from None
            except BaseException:
                sup.stop()
                raise
        self.starts.append(key)
        counter = None
        if setup.log_regex is not None:
            counter = LogCounter(setup.log_regex, log)
            # what the server logs of labnet's readiness connection lands before the cell's "before"
            counter.settle(counter.counts(), 1 << 30, limit=2.0, quiet=0.3)
        notes.append(f"server started for this cell on port {port} (output: {log.name})"
                     + ("; labnet's readiness check connected once, sending nothing, before the counts began"
                        if counter is not None else ""))  # fmt: skip
        return _Running(key, sup, port, log, counter)

    def _wait_port(self, port: int) -> str:
        try:
            seconds = wait_port_free(self.setup.host, port, timeout=self.port_wait, on_wait=self.say)
        except PortNotFree as exc:
            raise CellServerError("error", "port_not_free", str(exc)) from None
        return f"waited {seconds:.1f} s for port {port} to be free (TIME_WAIT of the last server's connections)"


def _busy(host: str, port: int) -> bool:
    try:
        wait_port_free(host, port, timeout=0)
        return False
    except PortNotFree:
        return True


def open_servers(setup: ServerSetup, *, root, log_dir, env=None, say=None, start_timeout: float = 30.0):
    """The source of servers for ``setup`` (a context manager; ``close()`` stops what it started)."""
    if setup.kind == "command":
        return CommandServers(setup, root=root, log_dir=log_dir, env=env, say=say, start_timeout=start_timeout)
    if setup.kind == "hand":
        return HandRunServer(setup)
    return OwnServers(setup, root=setup.root or root, env=env)
