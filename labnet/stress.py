"""Stress runs: N client workers each do one transfer, all started together.

>>> result = run("upload", "10MB", clients=5, pool="thread", port=8989)
>>> result.summary["ok"], result.summary["throughput_mean"]
>>> result.table()          # one dict per worker, ready for csv.DictWriter

This is the assignment's stress test ("each of ``clients`` workers uploads or
downloads the file once"), made measurable:

* Every worker waits on one start event, set only when all workers are ready
  (threads started, processes imported), so they really start together.
* Every worker yields a :class:`WorkerRecord`: ok or a failure *category*
  (see :data:`CATEGORIES`) with the server's code and message, the time
  waiting to be served (connect until the greeting: the queueing a small
  server pool causes, ``Client.wait_seconds``), the transfer time, the total
  time, the file bytes and the throughput (file bytes / total seconds).
* The summary (:func:`summarize`) holds ok/failed counts, mean/p50/p95/max
  total time per client, mean throughput per client, aggregate throughput,
  and the *server's own* success/failure counts for the run, taken from
  ``STATS`` before and after (:func:`server_counts`) -- measured or marked
  unmeasured, never estimated.

Resource and error rules
------------------------
* Nothing hangs: each transfer has a stall timeout (``timeout``: seconds
  without progress) and the run a time limit (``time_limit``, from the start
  event); a worker that reaches it aborts within 0.25 s with category
  ``timeout``.  Setting ``cancel`` (any object with ``is_set()``, e.g. a
  ``threading.Event``) ends the run early the same way, category
  ``cancelled``; the result is still complete and consistent.
* Thread workers are daemon threads that always return a record.  Process
  workers use an *explicit* start method (``spawn`` unless told otherwise),
  ignore SIGINT (the parent decides), get SIGTERM if the parent dies, and are
  joined, then terminated, then killed by the parent on every exit path,
  ``KeyboardInterrupt`` included: none is left behind.
* Downloads: worker ``i`` writes ``client_downloads/w{i:02d}-<name>`` (no two
  workers share a file), verified by the client before it appears; with
  ``keep_downloads=False`` it is deleted once counted.  Uploads read
  ``client_files/<label>.bin``, created on demand (``labnet.files``).
* A download run needs the file on the server: if it is missing (or of
  another size) it is uploaded first, before the "before" ``STATS``.
* Server counts are the difference of two ``STATS`` snapshots of the run's
  verb: run against a server nobody else uses at the same time.

Worker entry points (:func:`thread_worker`, :func:`process_worker`,
:func:`do_transfer`) are module-level so ``spawn`` can import them.  This
module must not import tqdm, matplotlib or IPython at import time (every
spawned worker imports it); progress bars are imported lazily in the parent.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .client import DEFAULT_PORT, Client
from .errors import Code, LabnetError, LocalError, PeerError, RemoteError, UsageError
from .files import data_dir, make_test_file, parse_size, size_label, test_file_name
from .procutil import alive, set_parent_death_signal

OPS = ("upload", "download")
POOLS = ("thread", "process")
MAX_CLIENTS = 1000
CATEGORIES = (
    "refused",  # nobody listening
    "timeout",  # no progress for `timeout` s, or the run's time limit reached
    "reset",  # the connection broke (reset, broken pipe, closed early)
    "protocol",  # the server broke the protocol
    "server_error",  # the server answered ERR <code> (the code is in .code)
    "integrity",  # SHA-256 or size mismatch, either side
    "busy",  # the server refused us: ERR BUSY
    "cancelled",  # the run was cancelled before this worker finished
    "client_error",  # a local problem: unreadable file, disk full, bad arguments
    "error",  # anything else (a bug: the message says what)
)
PROGRESS_BATCH = 1 << 20  # bytes a worker process accumulates before reporting
PROGRESS_EVERY = 0.1  # ... or seconds
STOP_GRACE = 5.0  # seconds workers get to stop after the time limit or a cancel
SETTLE_TIMEOUT = 10.0  # seconds to wait for the server to finish counting the run


# --------------------------------------------------------------------------
# Records and summary maths (no sockets: unit-tested on their own)
# --------------------------------------------------------------------------


@dataclass
class WorkerRecord:
    """What one worker did.  Times in seconds, sizes in bytes, throughput in bytes/s.

    ``bytes`` are file bytes moved (the whole file when ok, what got through
    when not); ``throughput`` = ``bytes / total_seconds`` for ok workers, 0
    otherwise; ``transfer_throughput`` excludes the wait for the server.
    """

    worker: int
    op: str
    ok: bool = False
    category: str = ""
    code: str = ""
    message: str = ""
    wait_seconds: float = 0.0
    transfer_seconds: float = 0.0
    total_seconds: float = 0.0
    bytes: int = 0
    size: int = 0
    throughput: float = 0.0
    transfer_throughput: float = 0.0
    sha256: str = ""
    path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorkerRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


RECORD_FIELDS = tuple(f.name for f in fields(WorkerRecord))


def percentile(values, p: float) -> float | None:
    """The ``p``-th percentile (0..100) with linear interpolation between ranks (numpy's default).

    ``None`` for no values.  ``percentile([1, 2, 3, 4], 50) == 2.5``.
    """
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _mean(values) -> float | None:
    xs = list(values)
    return sum(xs) / len(xs) if xs else None


def server_counts(before: dict | None, after: dict | None, op: str) -> dict:
    """The server's own counts for a run: differences of two ``STATS`` snapshots.

    Returns ``{"measured", "ok", "failed", "busy", "timeouts"}``; when either
    snapshot is missing the counts are ``None`` and ``measured`` is False --
    they are never guessed.  ``failed`` counts requests of the run's verb that
    the server's workers failed; ``busy`` counts connections the server
    refused with ``ERR BUSY`` before any worker saw them.
    """
    if not before or not after:
        return {"measured": False, "ok": None, "failed": None, "busy": None, "timeouts": None}
    verb = op.upper()
    vb, va = before["verbs"][verb], after["verbs"][verb]
    return {
        "measured": True,
        "ok": va["ok"] - vb["ok"],
        "failed": va["failed"] - vb["failed"],
        "busy": after.get("busy", 0) - before.get("busy", 0),
        "timeouts": after.get("timeouts", 0) - before.get("timeouts", 0),
    }


def summarize(records, *, op: str, size: int, clients: int, wall_seconds: float, pool: str = "thread",
              encoding: str = "b64", server: dict | None = None, cancelled: bool = False) -> dict:  # fmt: skip
    """The run's summary from its records (pure maths, no I/O).

    Time statistics (``time_*``: mean, p50, p95, max of total seconds per
    client) and ``throughput_mean`` (mean over clients of file bytes / total
    seconds) are over the *successful* workers; ``None`` when none succeeded.
    ``throughput_aggregate`` is all successfully moved file bytes divided by
    the run's wall time (start event to last worker done).  ``*_MBps`` fields
    repeat the throughputs in MB/s with MB = 10**6 bytes.
    """
    records = list(records)
    good = [r for r in records if r.ok]
    failures: dict[str, int] = {}
    for r in records:
        if not r.ok:
            failures[r.category or "error"] = failures.get(r.category or "error", 0) + 1
    times = [r.total_seconds for r in good]
    tput = [r.throughput for r in good]
    moved = sum(r.bytes for r in good)
    server = server or server_counts(None, None, op)
    summary = {
        "op": op,
        "size": size,
        "size_label": size_label(size),
        "clients": clients,
        "pool": pool,
        "encoding": encoding,
        "ok": len(good),
        "failed": len(records) - len(good),
        "failures": failures,
        "cancelled": cancelled,
        "time_mean": _mean(times),
        "time_p50": percentile(times, 50),
        "time_p95": percentile(times, 95),
        "time_max": max(times) if times else None,
        "wait_mean": _mean(r.wait_seconds for r in good),
        "transfer_mean": _mean(r.transfer_seconds for r in good),
        "throughput_mean": _mean(tput),
        "throughput_aggregate": moved / wall_seconds if wall_seconds > 0 and moved else (0.0 if not moved else None),
        "bytes_ok": moved,
        "wall_seconds": wall_seconds,
        "server_measured": server["measured"],
        "server_ok": server["ok"],
        "server_failed": server["failed"],
        "server_busy": server["busy"],
        "server_timeouts": server["timeouts"],
        "units": "seconds; bytes; throughput in bytes/s (MB/s fields: MB = 10**6 bytes)",
    }
    for key in ("throughput_mean", "throughput_aggregate"):
        value = summary[key]
        summary[key + "_MBps"] = None if value is None else value / 1e6
    return summary


def classify(exc: BaseException) -> tuple[str, str, str]:
    """``(category, code, message)`` for an exception a transfer raised (see :data:`CATEGORIES`)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, RemoteError):
        code = exc.code.value
        if exc.code == Code.BUSY:
            return "busy", code, exc.message
        if exc.code == Code.INTEGRITY:
            return "integrity", code, exc.message
        return "server_error", code, exc.message
    if isinstance(exc, UsageError):
        return "client_error", "", exc.message
    if isinstance(exc, PeerError):
        if exc.code == Code.INTEGRITY:
            return "integrity", "", exc.message
        if exc.code == Code.TIMEOUT:
            return "timeout", "", exc.message
        return "protocol", "", exc.message
    if isinstance(exc, LocalError):
        return ("cancelled" if exc.code == Code.SHUTDOWN else "client_error"), "", exc.message
    if isinstance(exc, LabnetError):
        return "error", exc.code.value, exc.message
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "", message
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return "timeout", "", message
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset", "", message
    if isinstance(exc, OSError):
        if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            return "refused", "", message
        if exc.errno == errno.ETIMEDOUT:
            return "timeout", "", message
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return "reset", "", message
        return "client_error", "", message
    return "error", "", f"{type(exc).__name__}: {message}"


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """SHA-256 of a file (cached by path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


# --------------------------------------------------------------------------
# One worker's transfer (runs in a thread or in a worker process)
# --------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    """Everything one worker needs (picklable: sent to spawned processes)."""

    worker: int
    op: str
    host: str
    port: int
    name: str  # the file's name on the server
    local: str  # upload: the file to send; download: the folder to write into
    save_as: str  # download: the file name written in `local`
    size: int
    encoding: str = "b64"
    timeout: float = 60.0
    time_limit: float = 1800.0
    expected_sha256: str = ""
    keep: bool = True


def do_transfer(spec: WorkerSpec, cancelled=None, progress=None) -> WorkerRecord:
    """Do ``spec``'s one transfer; always returns a record, never raises (except BaseException).

    ``cancelled()``: callable, true when the run is being cancelled.
    ``progress(n)``: called with file bytes as they move.
    """
    start = time.perf_counter()
    deadline = time.monotonic() + spec.time_limit
    rec = WorkerRecord(worker=spec.worker, op=spec.op, size=spec.size)
    moved = [0]

    def on_bytes(n: int) -> None:
        moved[0] += n
        if progress is not None:
            progress(n)

    def should_abort() -> bool:
        return time.monotonic() >= deadline or (cancelled is not None and bool(cancelled()))

    client = Client(spec.host, spec.port, timeout=spec.timeout, wait_timeout=max(spec.time_limit, 0.001),
                    should_abort=should_abort)  # fmt: skip
    try:
        client.connect()
        rec.wait_seconds = client.wait_seconds
        if spec.op == "upload":
            result = client.upload(spec.local, name=spec.name, encoding=spec.encoding, progress=on_bytes)
        else:
            result = client.download(spec.name, spec.local, encoding=spec.encoding, progress=on_bytes,
                                     save_as=spec.save_as)  # fmt: skip
        rec.total_seconds = time.perf_counter() - start
        rec.transfer_seconds = result.seconds
        rec.bytes, rec.sha256, rec.path = result.bytes, result.sha256, result.path
        if result.bytes != spec.size:
            raise PeerError(f"moved {result.bytes} bytes, expected {spec.size}", Code.INTEGRITY)
        if spec.expected_sha256 and result.sha256 != spec.expected_sha256:
            raise PeerError(f"SHA-256 {result.sha256[:16]}... differs from the expected "
                            f"{spec.expected_sha256[:16]}...", Code.INTEGRITY)  # fmt: skip
        rec.ok = True
        rec.throughput = rec.bytes / rec.total_seconds if rec.total_seconds > 0 else 0.0
        rec.transfer_throughput = rec.bytes / rec.transfer_seconds if rec.transfer_seconds > 0 else 0.0
    except Exception as exc:
        rec.ok = False
        if not rec.bytes:
            rec.bytes = moved[0]
        rec.category, rec.code, rec.message = classify(exc)
        if rec.category == "cancelled" and time.monotonic() >= deadline:
            rec.category, rec.message = "timeout", f"time limit of {spec.time_limit:g} s reached"
        elif rec.category == "cancelled":
            rec.message = "run cancelled"
        if not rec.wait_seconds:
            rec.wait_seconds = client.wait_seconds
    finally:
        if not rec.total_seconds:
            rec.total_seconds = time.perf_counter() - start
    try:
        if rec.ok:
            client.quit()
    except Exception:  # the transfer is done and counted; a failed goodbye changes nothing
        pass
    finally:
        client.close()
    if spec.op == "download" and not spec.keep and rec.path:  # verified and counted, or a mismatch
        try:
            os.unlink(rec.path)
        except OSError:
            pass
    return rec


def _not_started(spec: WorkerSpec, category: str, message: str) -> WorkerRecord:
    return WorkerRecord(worker=spec.worker, op=spec.op, size=spec.size, category=category, message=message)


def thread_worker(spec: WorkerSpec, ready, go, cancel, start_timeout: float, progress, done) -> None:
    """Entry point of a worker thread: signal ready, wait for go, transfer, hand the record to ``done``."""
    try:
        ready()
        if not go.wait(start_timeout) or cancel.is_set():
            rec = _not_started(spec, "cancelled", "run cancelled before this worker started")
        else:
            rec = do_transfer(spec, cancel.is_set, progress)
    except BaseException as exc:  # never lose a record, even on a bug
        rec = _not_started(spec, "error", f"{type(exc).__name__}: {exc}")
    done(rec)


class _Batcher:
    """Progress of a worker process: byte counts batched into queue messages."""

    def __init__(self, q, worker: int):
        self.q, self.worker = q, worker
        self.pending = 0
        self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.pending += n
        now = time.monotonic()
        if self.pending >= PROGRESS_BATCH or now - self.last >= PROGRESS_EVERY:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.pending:
            self.q.put(("bytes", self.worker, self.pending))
            self.pending = 0
        self.last = now or time.monotonic()


def process_worker(spec: WorkerSpec, go, stop, q, parent_pid: int, start_timeout: float,
                   direct_child: bool = True) -> None:  # fmt: skip
    """Entry point of a worker process (spawn-safe): messages ``ready``, ``bytes``, ``done`` on ``q``.

    ``direct_child``: False under ``forkserver``, where the parent of this
    process is the fork server, not the run: then the run's PID is watched instead.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    checked = [time.monotonic()]
    if direct_child:
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:
            return  # the parent died before prctl took effect

    def parent_gone() -> bool:
        if direct_child:
            return os.getppid() != parent_pid
        now = time.monotonic()
        if now - checked[0] < 0.25:
            return False
        checked[0] = now
        return not alive(parent_pid)

    batcher = _Batcher(q, spec.worker)

    def cancelled() -> bool:
        return stop.is_set() or parent_gone()

    try:
        q.put(("ready", spec.worker, None))
        if not go.wait(start_timeout) or cancelled():
            rec = _not_started(spec, "cancelled", "run cancelled before this worker started")
        else:
            rec = do_transfer(spec, cancelled, batcher.add)
        batcher.flush()
    except BaseException as exc:
        rec = _not_started(spec, "error", f"{type(exc).__name__}: {exc}")
    q.put(("done", spec.worker, rec.to_dict()))


# --------------------------------------------------------------------------
# Progress plumbing in the parent
# --------------------------------------------------------------------------


class _Progress:
    """Fan byte counts out to the overall bar, per-worker bars and user callbacks; thread-safe."""

    def __init__(self, total: int, clients: int, size: int, progress, per_worker_bars: bool, desc: str):
        self._lock = threading.Lock()
        self.bar = None
        self.worker_bars: dict[int, object] = {}
        self.callbacks = []
        if progress is True:
            from .progress import ByteBar

            self.bar = ByteBar(total=total, desc=desc)
            if per_worker_bars:
                self.worker_bars = {i: ByteBar(total=size, desc=f"  w{i:02d}", leave=False, position=i + 1)
                                    for i in range(clients)}  # fmt: skip
        elif progress not in (None, False):
            add = getattr(progress, "add", None) or getattr(progress, "update", None) or progress
            if not callable(add):
                raise UsageError("progress must be True, False, a callable taking a byte count, "
                                 "or an object with .add(n) or .update(n)")  # fmt: skip
            self.callbacks.append(add)
        self.per_worker_callbacks = []

    def __call__(self, worker: int, n: int) -> None:
        with self._lock:
            if self.bar is not None:
                self.bar.add(n)
            bar = self.worker_bars.get(worker)
            if bar is not None:
                bar.add(n)
            for cb in list(self.callbacks):
                try:
                    cb(n)
                except Exception:  # a broken display must not break the transfers
                    self.callbacks.remove(cb)
            for cb in list(self.per_worker_callbacks):
                try:
                    cb(worker, n)
                except Exception:
                    self.per_worker_callbacks.remove(cb)

    def for_worker(self, worker: int):
        return lambda n: self(worker, n)

    def close(self) -> None:
        for bar in self.worker_bars.values():
            bar.close()
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------
# Pools
# --------------------------------------------------------------------------


def _run_threads(specs, cancel: threading.Event, external_cancel, prog: _Progress, on_done, time_limit: float,
                 start_timeout: float):  # fmt: skip
    go = threading.Event()
    ready = threading.Semaphore(0)
    records: dict[int, WorkerRecord] = {}
    last_done = [0.0]  # when the last record arrived: the run's wall time ends there
    started_ok = [True]
    lock = threading.Lock()

    def done(rec: WorkerRecord) -> None:
        with lock:
            records[rec.worker] = rec
            last_done[0] = time.perf_counter()
        on_done(rec)

    threads = [threading.Thread(target=thread_worker, name=f"labnet-stress-{s.worker}", daemon=True,
                                args=(s, ready.release, go, cancel, start_timeout, prog.for_worker(s.worker), done))
               for s in specs]  # fmt: skip
    t_go = time.perf_counter()
    try:
        for t in threads:
            t.start()
        start_end = time.monotonic() + start_timeout
        for _ in threads:
            if not ready.acquire(timeout=max(start_end - time.monotonic(), 0.001)):
                started_ok[0] = False
                cancel.set()
                break
        t_go = time.perf_counter()
        go.set()
        _wait_until(lambda: all(not t.is_alive() for t in threads), cancel, external_cancel,
                    time.monotonic() + time_limit + STOP_GRACE)
    finally:
        cancel.set()  # no-op when all are done; stops the rest on error or Ctrl-C
        go.set()
        end = time.monotonic() + STOP_GRACE
        for t in threads:
            t.join(max(end - time.monotonic(), 0.01))
    t_end = time.perf_counter()
    with lock:
        out = dict(records)
    for s in specs:
        if s.worker not in out:
            out[s.worker] = _not_started(s, "timeout", "worker thread did not stop in time")
    return [out[s.worker] for s in specs], max(last_done[0] or t_end, t_go) - t_go, started_ok[0]


def _wait_until(condition, cancel, external_cancel, deadline: float, step: float = 0.05) -> None:
    """Wait (bounded by ``deadline``) for ``condition()``; mirror an external cancel into ``cancel``."""
    while not condition() and time.monotonic() < deadline:
        if external_cancel is not None and external_cancel.is_set():
            cancel.set()
        time.sleep(step)


def _run_processes(specs, cancel: threading.Event, external_cancel, prog: _Progress, on_done, time_limit: float,
                   start_timeout: float, start_method: str):  # fmt: skip
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":  # the fork server imports labnet once; each worker is a cheap fork of it
        ctx.set_forkserver_preload(["labnet.stress"])
    q = ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    records: dict[int, WorkerRecord] = {}
    last_done = [0.0]
    started_ok = [True]
    ready: set[int] = set()
    lock = threading.Lock()
    drain_stop = threading.Event()

    def handle(msg) -> None:
        kind, worker, payload = msg
        if kind == "bytes":
            prog(worker, payload)
        elif kind == "ready":
            with lock:
                ready.add(worker)
        elif kind == "done":
            rec = WorkerRecord.from_dict(payload)
            with lock:
                records[worker] = rec
                last_done[0] = time.perf_counter()
            on_done(rec)

    def drain() -> None:  # the parent's thread that feeds the bar from the workers' queue
        while not drain_stop.is_set():
            try:
                handle(q.get(timeout=0.1))
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            except Exception:  # a message cut short by a killed worker: skip it
                continue
        while True:  # last messages, bounded by what is already queued
            try:
                handle(q.get(timeout=0.05))
            except (queue.Empty, EOFError, OSError):
                return
            except Exception:
                continue

    procs = [ctx.Process(target=process_worker, name=f"labnet-stress-{s.worker}", daemon=True,
                         args=(s, go, stop, q, os.getpid(), start_timeout, start_method != "forkserver"))
             for s in specs]  # fmt: skip
    drainer = threading.Thread(target=drain, name="labnet-stress-drain", daemon=True)
    drainer.start()
    t_go = time.perf_counter()
    started = []
    try:
        for p in procs:
            p.start()
            started.append(p)

        def all_ready() -> bool:
            with lock:
                n = len(ready)
            return n == len(procs) or any(p.exitcode is not None for p in procs)

        _wait_until(all_ready, cancel, external_cancel, time.monotonic() + start_timeout, step=0.02)
        with lock:
            if len(ready) < len(procs):
                started_ok[0] = False
                cancel.set()
        if cancel.is_set():
            stop.set()
        t_go = time.perf_counter()
        go.set()

        def finished() -> bool:
            if cancel.is_set():
                stop.set()
            return all(p.exitcode is not None for p in procs)

        _wait_until(finished, cancel, external_cancel, time.monotonic() + time_limit + STOP_GRACE)
    finally:
        stop.set()
        go.set()
        end = time.monotonic() + STOP_GRACE
        for p in started:
            p.join(max(end - time.monotonic(), 0.01))
        for p in started:
            if p.is_alive():
                p.terminate()
                p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        t_end = time.perf_counter()
        drain_stop.set()
        drainer.join(5.0)
        exitcodes = {p.name: p.exitcode for p in started}
        for p in started:
            if p.exitcode is not None:
                p.close()
        q.close()
        q.join_thread()
    with lock:
        out = dict(records)
    for s, p in zip(specs, procs, strict=True):
        if s.worker not in out:
            with lock:
                was_ready = s.worker in ready
            hint = "" if was_ready else " before it was ready"
            if not was_ready and exitcodes.get(p.name) == 1:
                hint += " (a script that starts process pools must guard its code with `if __name__ == '__main__':`)"
            out[s.worker] = _not_started(s, "error", f"worker process ended (exit status {exitcodes.get(p.name)}) "
                                                     f"without a result{hint}")  # fmt: skip
    return [out[s.worker] for s in specs], max(last_done[0] or t_end, t_go) - t_go, started_ok[0]


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


@dataclass
class StressResult:
    """A finished run: ``records`` (one :class:`WorkerRecord` per worker, by id) and ``summary`` (a dict)."""

    records: list[WorkerRecord]
    summary: dict
    config: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every worker succeeded."""
        return self.summary["failed"] == 0 and self.summary["ok"] == len(self.records)

    def table(self) -> list[dict]:
        """One dict per worker (keys :data:`RECORD_FIELDS`): for csv, a notebook table, or pandas if you have it."""
        return [r.to_dict() for r in self.records]

    def to_dict(self) -> dict:
        return {"summary": self.summary, "config": self.config, "records": self.table()}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kw)

    def to_csv(self) -> str:
        """The per-worker table as CSV text (header = :data:`RECORD_FIELDS`)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=RECORD_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.table())
        return out.getvalue()

    def format(self) -> str:
        """A readable summary for people (MB = 10**6 bytes)."""
        return format_summary(self.summary, self.records)

    def __repr__(self) -> str:
        s = self.summary
        return f"<StressResult {s['op']} {s['size_label']} x{s['clients']} ({s['pool']}): {s['ok']} ok, {s['failed']} failed>"


def _fmt(value, unit="s", scale=1.0, digits=3) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f} {unit}"


def format_summary(summary: dict, records=()) -> str:
    s = summary
    lines = [
        f"stress {s['op']} {s['size_label']} x {s['clients']} {s['pool']} workers ({s['encoding']}), "
        f"wall {s['wall_seconds']:.2f} s{'  [CANCELLED]' if s.get('cancelled') else ''}",
        f"  clients: {s['ok']} ok, {s['failed']} failed"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(s['failures'].items()))})" if s["failures"] else ""),
        f"  total time per client: mean {_fmt(s['time_mean'])}, p50 {_fmt(s['time_p50'])}, "
        f"p95 {_fmt(s['time_p95'])}, max {_fmt(s['time_max'])}",
        f"  waiting to be served: mean {_fmt(s['wait_mean'])}; transferring: mean {_fmt(s['transfer_mean'])}",
        f"  throughput per client: mean {_fmt(s['throughput_mean'], 'MB/s', 1e6, 2)}; "
        f"aggregate {_fmt(s['throughput_aggregate'], 'MB/s', 1e6, 2)}  (MB = 10^6 bytes)",
    ]
    if s["server_measured"]:
        lines.append(f"  server (STATS before/after): {s['server_ok']} ok, {s['server_failed']} failed, "
                     f"{s['server_busy']} refused busy")  # fmt: skip
    else:
        lines.append(f"  server: not measured ({s.get('server_note') or 'STATS unavailable'})")
    bad = [r for r in records if not r.ok]
    for r in bad[:10]:
        code = f" {r.code}" if r.code else ""
        lines.append(f"  w{r.worker:02d} {r.category}{code}: {r.message}")
    if len(bad) > 10:
        lines.append(f"  ... and {len(bad) - 10} more failures")
    return "\n".join(lines)


def _stats(host: str, port: int, timeout: float, wait: float, cancel=None) -> dict:
    abort = (lambda: cancel.is_set()) if cancel is not None else None
    with Client(host, port, timeout=timeout, wait_timeout=wait, should_abort=abort) as c:
        return c.stats()


def _settled_stats(host, port, op, before, expected_total, timeout, cancel=None):
    """``STATS`` once the server has finished with the run's connections (bounded by SETTLE_TIMEOUT).

    Settled = no connection active but ours and none waiting, or the run's verb
    counted as often as workers reached the server.  Returns ``(snapshot, note)``.
    """
    end = time.monotonic() + SETTLE_TIMEOUT
    snap, note = None, ""
    while True:
        try:
            snap = _stats(host, port, timeout, max(end - time.monotonic(), 1.0))
        except (OSError, LabnetError) as exc:
            return snap, f"STATS after the run failed: {exc}"
        if snap.get("active", 0) <= 1 and snap.get("waiting", 0) == 0:
            return snap, note
        counted = server_counts(before, snap, op)
        if expected_total and counted["ok"] + counted["failed"] >= expected_total and snap.get("waiting", 0) == 0:
            return snap, note
        if time.monotonic() >= end:
            return snap, (f"server still had {snap.get('active', 0) - 1} connection(s) active after "
                          f"{SETTLE_TIMEOUT:g} s; counts are what it had counted by then")  # fmt: skip
        time.sleep(0.05)


def _ensure_remote(host, port, name, path: Path, size: int | None, encoding, timeout) -> tuple[bool, int]:
    """Make sure the server has ``name`` (of ``size`` bytes, when given); upload ``path`` if not.

    Returns ``(uploaded, size on the server)``.
    """
    with Client(host, port, timeout=timeout, wait_timeout=timeout) as c:
        remote = dict(c.list()).get(name)
        if remote is not None and (size is None or remote == size):
            return False, remote
        if not path.is_file():
            raise UsageError(f"{name} is not on the server and there is no {path} to upload")
        result = c.upload(path, name=name, encoding=encoding)
        return True, result.bytes


def _check_choice(value: str, choices, what: str) -> str:
    if value not in choices:
        raise UsageError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def run(op: str, size, clients: int, pool: str = "thread", host: str = "127.0.0.1", port: int = DEFAULT_PORT,
        encoding: str = "b64", timeout: float = 60.0, *, time_limit: float = 1800.0, files_dir=None,
        downloads_dir=None, name: str | None = None, expected_sha256: str | None = None,
        keep_downloads: bool = True, progress=True, per_worker_bars: bool | None = None, on_record=None,
        on_progress=None, cancel=None, start_method: str | None = None, start_timeout: float = 120.0,
        server_stats: bool = True) -> StressResult:  # fmt: skip
    """Run ``clients`` workers that each ``op`` (upload or download) one file of ``size`` once, together.

    Arguments
    ---------
    size: bytes or a label (``"10MB"``; MB = 10**6).  The file is
        ``files_dir/<label>.bin`` (``client_files/`` by default), made on demand.
    pool: ``"thread"`` or ``"process"`` (workers are processes started with
        ``start_method``, default ``"spawn"``: a fresh interpreter per worker,
        about 0.1 s of CPU each, more in a notebook kernel, whose main module
        each child imports; ``"forkserver"`` forks workers from one server
        process that imported labnet once -- faster for big pools, and that
        server stays until this interpreter exits).
    timeout: seconds without progress before a transfer fails (``timeout``).
    time_limit: seconds from the common start after which unfinished workers
        abort (category ``timeout``); it also bounds the wait to be served.
    downloads_dir: where downloads land (``client_downloads/``); worker ``i``
        writes ``w{i:02d}-<name>``; ``keep_downloads=False`` deletes them once checked.
    name: the file's name on the server, default ``<label>.bin`` (the test
        file).  With another name the file's real size counts: uploads send
        ``files_dir/<name>`` as it is; downloads take the size the server lists.
    expected_sha256: digest every transfer must have; by default the local
        file's digest (uploads, and downloads whose file this run uploaded).
        For a download of a file already on the server with no expected digest,
        workers must agree with each other (the majority digest wins).
    progress: ``True`` for a ``tqdm.auto`` byte bar (plus per-worker bars when
        ``per_worker_bars``, default for up to 8 workers), ``False``/``None``
        for none, or a callable ``f(nbytes)`` / an object with ``.add(n)`` or
        ``.update(n)`` (a tqdm bar, an ipywidgets adapter).  Calls are serialized.
    on_progress: optional ``f(worker, nbytes)`` for per-worker displays.
    on_record: optional ``f(WorkerRecord)`` called as each worker finishes
        (from a worker or drainer thread: keep it quick).
    cancel: optional object with ``is_set()`` (``threading.Event``): set it
        and the run ends early, cleanly; unfinished workers are ``cancelled``.
    server_stats: take ``STATS`` before and after (set False for a server
        that is not labnet's).

    Raises ``UsageError`` for bad arguments; every network failure lands in
    the records instead.  ``KeyboardInterrupt`` stops all workers, then propagates.
    """
    op = _check_choice(str(op).lower(), OPS, "operation")
    pool = _check_choice(str(pool).lower(), POOLS, "client pool")
    encoding = _check_choice(str(encoding).lower(), ("b64", "raw"), "encoding")
    size = parse_size(size)
    if not 1 <= int(clients) <= MAX_CLIENTS:
        raise UsageError(f"clients must be 1..{MAX_CLIENTS}, not {clients}")
    clients = int(clients)
    if timeout <= 0 or time_limit <= 0:
        raise UsageError("timeout and time_limit must be positive")
    start_method = start_method or "spawn"
    if pool == "process" and start_method not in multiprocessing.get_all_start_methods():
        raise UsageError(f"start method {start_method!r} is not available here")
    files_dir = Path(files_dir) if files_dir is not None else data_dir("client_files")
    downloads_dir = Path(downloads_dir) if downloads_dir is not None else data_dir("client_downloads")
    standard = name is None or name == test_file_name(size)
    name = name or test_file_name(size)
    local = make_test_file(files_dir, size) if standard else files_dir / name
    if op == "upload":
        if not local.is_file():
            raise UsageError(f"no file to upload: {local}")
        size = local.stat().st_size  # a file of the caller's own (name=...) moves whole
    else:
        downloads_dir.mkdir(parents=True, exist_ok=True)

    notes = []
    expected = expected_sha256 or ""
    if not expected and op == "upload":
        expected = file_sha256(local)
    if op == "download":
        try:
            uploaded, remote_size = _ensure_remote(host, port, name, local, size if standard else None, encoding,
                                                   timeout)  # fmt: skip
            size = remote_size
            if uploaded and not expected:
                expected = file_sha256(local)
        except (OSError, LabnetError) as exc:
            notes.append(f"could not check the server's copy of {name}: {exc}")
    before, before_note = None, ""
    if server_stats:
        try:
            before = _stats(host, port, timeout, min(timeout, 30.0))
        except (OSError, LabnetError) as exc:
            before_note = f"STATS before the run failed: {exc}"

    width = max(2, len(str(clients - 1)))
    specs = [WorkerSpec(worker=i, op=op, host=host, port=port, name=name,
                        local=str(local) if op == "upload" else str(downloads_dir),
                        save_as=f"w{i:0{width}d}-{name}", size=size, encoding=encoding, timeout=timeout,
                        time_limit=time_limit, expected_sha256=expected, keep=keep_downloads)
             for i in range(clients)]  # fmt: skip
    if per_worker_bars is None:
        per_worker_bars = clients <= 8
    prog = _Progress(size * clients, clients, size, progress, per_worker_bars,
                     desc=f"{op} {size_label(size)} x{clients} {pool}")  # fmt: skip
    if on_progress is not None:
        prog.per_worker_callbacks.append(on_progress)

    def on_done(rec: WorkerRecord) -> None:
        if on_record is not None:
            try:
                on_record(rec)
            except Exception:
                pass

    internal_cancel = threading.Event()
    try:
        if pool == "thread":
            records, wall, started = _run_threads(specs, internal_cancel, cancel, prog, on_done, time_limit,
                                                  start_timeout)  # fmt: skip
        else:
            records, wall, started = _run_processes(specs, internal_cancel, cancel, prog, on_done, time_limit,
                                                    start_timeout, start_method)  # fmt: skip
    finally:
        prog.close()
    if not started and not (cancel is not None and cancel.is_set()):
        for r in records:  # nobody cancelled: the workers could not all start in time
            if r.category == "cancelled":
                r.category = "error"
                r.message = f"not every worker was ready within {start_timeout:g} s; the run did not start"
    was_cancelled = (cancel is not None and cancel.is_set()) or any(r.category == "cancelled" for r in records)
    if op == "download" and not expected_sha256 and not expected:
        _check_agreement(records)

    after, after_note = None, ""
    if server_stats and before is not None:
        reached = sum(1 for r in records if r.ok or r.category not in ("refused", "cancelled", "client_error"))
        after, after_note = _settled_stats(host, port, op, before, reached, timeout)
    server = server_counts(before, after, op)
    summary = summarize(records, op=op, size=size, clients=clients, wall_seconds=wall, pool=pool,
                        encoding=encoding, server=server, cancelled=was_cancelled)  # fmt: skip
    summary["server_note"] = "; ".join(filter(None, [before_note, after_note] + notes))
    summary["digest"] = expected or next((r.sha256 for r in records if r.ok), "")
    summary["digest_reference"] = ("expected" if expected else "agreement")
    summary["host"], summary["port"] = host, port
    config = {"op": op, "size": size, "clients": clients, "pool": pool, "host": host, "port": port,
              "encoding": encoding, "timeout": timeout, "time_limit": time_limit, "name": name,
              "start_method": start_method if pool == "process" else None,
              "files_dir": str(files_dir), "downloads_dir": str(downloads_dir)}  # fmt: skip
    return StressResult(records, summary, config)


def _check_agreement(records) -> None:
    """Without a known digest, successful downloads must agree; the odd ones out are integrity failures."""
    counts: dict[str, int] = {}
    for r in records:
        if r.ok:
            counts[r.sha256] = counts.get(r.sha256, 0) + 1
    if len(counts) <= 1:
        return
    majority = max(counts, key=counts.get)
    for r in records:
        if r.ok and r.sha256 != majority:
            r.ok, r.category = False, "integrity"
            r.message = f"SHA-256 {r.sha256[:16]}... differs from the other workers' {majority[:16]}..."
            r.throughput = r.transfer_throughput = 0.0


# --------------------------------------------------------------------------
# CLI: labnet stress OP SIZE CLIENTS [POOL]
# --------------------------------------------------------------------------


def add_cli(sub) -> None:
    """Add ``labnet stress`` to the CLI's subparsers (``func`` = :func:`cli_main`)."""
    from .cli import _add_address, _positive_int, _seconds

    p = sub.add_parser("stress", help="N client workers each upload or download a file once, together",
                       description="Seed-compatible form: labnet stress upload 10MB 5 thread.  "
                                   "MB = 10^6 bytes.  Exit status 1 if any worker failed.")  # fmt: skip
    p.add_argument("op", choices=OPS, help="operation every worker does once")
    p.add_argument("size", help="file size, e.g. 10MB (MB = 10^6 bytes); the file is client_files/<size>.bin")
    p.add_argument("clients", type=_positive_int, help="number of client workers")
    p.add_argument("pool", nargs="?", choices=POOLS, default="thread", help="client worker pool (default thread)")
    p.add_argument("--encoding", choices=["b64", "raw"], default="b64")
    p.add_argument("--time-limit", type=_seconds, default=1800.0,
                   help="seconds after the start when unfinished workers give up (default 1800)")  # fmt: skip
    p.add_argument("--files", default=None, help="folder of files to upload (default client_files)")
    p.add_argument("--dest", default=None, help="folder for downloads (default client_downloads)")
    p.add_argument("--no-keep", action="store_true", help="delete downloaded files once verified")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--per-worker-bars", action="store_true", default=None, help="one bar per worker too")
    p.add_argument("--start-method", choices=["spawn", "forkserver", "fork"], default=None,
                   help="start method of worker processes (default spawn)")  # fmt: skip
    p.add_argument("--csv", action="store_true", help="print the per-worker table as CSV on stdout")
    _add_address(p)
    p.set_defaults(func=cli_main)


def cli_main(args) -> int:
    if args.json and args.csv:
        raise UsageError("choose one of --json and --csv")
    result = run(args.op, args.size, args.clients, args.pool, host=args.host, port=args.port,
                 encoding=args.encoding, timeout=args.timeout, time_limit=args.time_limit or 1800.0,
                 files_dir=args.files, downloads_dir=args.dest, keep_downloads=not args.no_keep,
                 progress=not args.no_progress, per_worker_bars=args.per_worker_bars,
                 start_method=args.start_method)  # fmt: skip
    if args.json:
        print(result.to_json())
    elif args.csv:
        print(result.to_csv(), end="")
    else:
        print(result.format())
    return 0 if result.ok else 1
