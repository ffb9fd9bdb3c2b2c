"""Stress workers and their pools: one worker's transfer, run on threads or on processes.

What it holds: :class:`WorkerSpec` (everything one worker needs, picklable),
:func:`do_transfer` (one worker's transfer, always a record), the worker entry
points :func:`thread_worker` and :func:`process_worker`, progress plumbing
(a worker process batches byte counts into queue messages; in the parent
:class:`ProgressFanout` fans them out to bars and callbacks, fed by a
drainer thread), and the two pools :func:`run_threads` and
:func:`run_processes`, which start every worker together and stop, join,
terminate or kill them on every exit path.

Worker entry points are module-level so ``spawn`` can import them; the
``forkserver`` preloads this module.  Must not import tqdm, matplotlib or
IPython at import time (every spawned worker imports it; progress bars are
imported lazily in the parent), nor ``labnet.measure.stress`` (which imports this).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass

from labnet.client import Client
from labnet.errors import Code, PeerError, UsageError
from labnet.measure.dialect_transfer import do_dialect_transfer
from labnet.measure.stress_report import WorkerRecord, classify
from labnet.procutil import alive, set_parent_death_signal
from labnet.protocol.codec import use_backend

PROGRESS_BATCH = 1 << 20  # bytes a worker process accumulates before reporting
PROGRESS_EVERY = 0.1  # ... or seconds
STOP_GRACE = 5.0  # seconds workers get to stop after the time limit or a cancel


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
    dialect: str = "labnet"  # course, sentinel: labnet.measure.dialect_transfer
    profile: object = None  # the dialect's Profile (a frozen dataclass: picklable)
    server_root: str = ""  # the server's folder, when local: uploads are verified by hashing it
    verify_by_download: bool = True  # else: download an upload back after the timed part
    base64: str = ""  # the codec backend (pybase64/binascii): a spawned worker starts from the default


def do_transfer(spec: WorkerSpec, cancelled=None, progress=None) -> WorkerRecord:
    """Do ``spec``'s one transfer; always returns a record, never raises (except BaseException).

    ``cancelled()``: callable, true when the run is being cancelled.
    ``progress(n)``: called with file bytes as they move.
    """
    if spec.dialect != "labnet":
        return do_dialect_transfer(spec, cancelled, progress)
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
        rec.queue_position = client.queue_position or 0
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
    if spec.base64:
        use_backend(spec.base64)

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


class ProgressFanout:
    """Fan byte counts out to the overall bar, per-worker bars and user callbacks; thread-safe."""

    def __init__(self, total: int, clients: int, size: int, progress, per_worker_bars: bool, desc: str):
        self._lock = threading.Lock()
        self.bar = None
        self.worker_bars: dict[int, object] = {}
        self.callbacks = []
        if progress is True:
            # Imported here, in the parent only: every spawned worker imports this module, and
            # tqdm (with what it pulls in) would add to each worker's start-up.
            from labnet.measure.progress import ByteBar

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


def run_threads(specs, cancel: threading.Event, external_cancel, prog: ProgressFanout, on_done, time_limit: float,
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


def run_processes(specs, cancel: threading.Event, external_cancel, prog: ProgressFanout, on_done, time_limit: float,
                   start_timeout: float, start_method: str):  # fmt: skip
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":  # the fork server imports labnet once; each worker is a cheap fork of it
        ctx.set_forkserver_preload(["labnet.measure.stress_pools"])
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
