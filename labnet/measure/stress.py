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
  ``client_files/<label>.bin``, created on demand (``labnet.measure.files``).
* A download run needs the file on the server: if it is missing (or of
  another size) it is uploaded first, before the "before" ``STATS``.
* Server counts are the difference of two ``STATS`` snapshots of the run's
  verb: run against a server nobody else uses at the same time.

Where things are: this module holds :func:`run` (checks the arguments,
prepares the file, takes ``STATS`` before and after), :class:`StressResult`
and the ``labnet stress`` CLI; :mod:`labnet.measure.stress_report` holds the records
and the summary maths; :mod:`labnet.measure.stress_pools` the workers and the thread
and process pools (worker entry points are module-level there so ``spawn``
can import them).  This module must not import tqdm, matplotlib or IPython
at import time; progress bars are imported lazily in the parent.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from labnet.client import Client, StudentClient
from labnet.config import CLIENT_POOLS, DEFAULT_HOST, DEFAULT_PORT, ENCODINGS, OPERATIONS, parse_size, size_label
from labnet.errors import LabnetError, UsageError
from labnet.measure.files import data_dir, make_test_file, test_file_name
from labnet.measure.stress_pools import ProgressFanout, WorkerSpec, run_processes, run_threads
from labnet.measure.stress_report import (
    RECORD_FIELDS,
    WorkerRecord,
    check_agreement,
    format_summary,
    server_counts,
    summarize,
)
from labnet.protocol import codec
from labnet.protocol.dialects import get_profile

MAX_CLIENTS = 1000
SETTLE_TIMEOUT = 10.0  # seconds to wait for the server to finish counting the run


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


def _place_for_download(dialect, profile, host, port, name, local: Path, server_root, timeout) -> list[str]:
    """Put the lab's file on a student's server before a download run: copied into its folder when
    local, else uploaded through its dialect and downloaded back to check.  Returns notes."""
    if server_root:
        target = Path(server_root) / name
        if not (target.is_file() and file_sha256(target) == file_sha256(local)):
            shutil.copyfile(local, target)
        return []
    client = StudentClient(dialect, profile, host=host, port=port, timeout=timeout)
    try:
        sent = client.upload(local, name=name)
        with tempfile.TemporaryDirectory(prefix="labnet-place-") as scratch:
            back = client.download(sent.stored_name or name, scratch)
        if back.sha256 != sent.sha256:
            return [f"the server did not store {name} intact ({back.bytes} of {sent.bytes} bytes came back): "
                    "the downloads below compare with the lab's copy"]  # fmt: skip
        return []
    except (OSError, LabnetError) as exc:
        return [f"could not put {name} on the server through its dialect: {exc}"]


def _check_choice(value: str, choices, what: str) -> str:
    if value not in choices:
        raise UsageError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def run(op: str, size, clients: int, pool: str = "thread", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
        encoding: str = "b64", timeout: float = 60.0, *, time_limit: float = 1800.0, files_dir=None,
        downloads_dir=None, name: str | None = None, expected_sha256: str | None = None,
        keep_downloads: bool = True, progress=True, per_worker_bars: bool | None = None, on_record=None,
        on_progress=None, cancel=None, start_method: str | None = None, start_timeout: float = 120.0,
        server_stats: bool = True, dialect: str = "labnet", profile=None, server_root=None,
        verify_uploads: bool = True, base64: str | None = None) -> StressResult:  # fmt: skip
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
        that is not labnet's; always off for another dialect).
    dialect, profile: ``"course"`` or ``"sentinel"`` (and a profile naming the
        server's variants) to measure a student's server
        (``labnet.measure.dialect_transfer``): every client of an upload
        uploads to its own name (``w07_10mb.bin``); names are lower case (what
        every student server accepts); success is a digest match only.
    server_root: the server's folder when it is on this machine: uploads are
        verified by hashing what it stored, and a download's file is copied in.
        Without it, uploads are downloaded back after the run
        (``verify_uploads``; False: reported ``unverified``).
    base64: the clients' codec backend, ``"pybase64"`` or ``"binascii"`` (the standard library's, which
        holds the GIL); ``None``: the one in use (``labnet.protocol.codec.BACKEND``).  Thread workers
        switch this process's codec for the run (restored after); process workers switch their own.

    Raises ``UsageError`` for bad arguments; every network failure lands in
    the records instead.  ``KeyboardInterrupt`` stops all workers, then propagates.
    """
    op = _check_choice(str(op).lower(), OPERATIONS, "operation")
    pool = _check_choice(str(pool).lower(), CLIENT_POOLS, "client pool")
    encoding = _check_choice(str(encoding).lower(), ENCODINGS, "encoding")
    size = parse_size(size)
    if not 1 <= int(clients) <= MAX_CLIENTS:
        raise UsageError(f"clients must be 1..{MAX_CLIENTS}, not {clients}")
    clients = int(clients)
    if timeout <= 0 or time_limit <= 0:
        raise UsageError("timeout and time_limit must be positive")
    start_method = start_method or "spawn"
    base64 = _check_choice(str(base64 or codec.BACKEND).lower(), codec.BACKENDS, "base64 backend")
    if pool == "process" and start_method not in multiprocessing.get_all_start_methods():
        raise UsageError(f"start method {start_method!r} is not available here")
    student = dialect != "labnet"
    if student:
        profile = get_profile(dialect, profile)
        encoding = "b64"  # the students' dialects carry base64 only
        server_stats = False
    files_dir = Path(files_dir) if files_dir is not None else data_dir("client_files")
    downloads_dir = Path(downloads_dir) if downloads_dir is not None else data_dir("client_downloads")
    standard = name is None or name == test_file_name(size)
    name = name or (test_file_name(size).lower() if student else test_file_name(size))
    local = make_test_file(files_dir, size) if standard or (student and name == test_file_name(size).lower()) \
        else files_dir / name
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
    if op == "download" and student:
        expected = expected or file_sha256(local)
        notes.extend(_place_for_download(dialect, profile, host, port, name, local, server_root, timeout))
    elif op == "download":
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
    specs = [WorkerSpec(worker=i, op=op, host=host, port=port,
                        name=f"w{i:0{width}d}_{name}" if student and op == "upload" else name,
                        local=str(local) if op == "upload" else str(downloads_dir),
                        save_as=f"w{i:0{width}d}-{name}", size=size, encoding=encoding, timeout=timeout,
                        time_limit=time_limit, expected_sha256=expected, keep=keep_downloads,
                        dialect=dialect, profile=profile, server_root=str(server_root or ""),
                        verify_by_download=verify_uploads, base64=base64)
             for i in range(clients)]  # fmt: skip
    if per_worker_bars is None:
        per_worker_bars = clients <= 8
    prog = ProgressFanout(size * clients, clients, size, progress, per_worker_bars,
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
        with codec.backend(base64):  # thread workers encode in this process; process workers switch their own
            if pool == "thread":
                records, wall, started = run_threads(specs, internal_cancel, cancel, prog, on_done, time_limit,
                                                      start_timeout)  # fmt: skip
            else:
                records, wall, started = run_processes(specs, internal_cancel, cancel, prog, on_done, time_limit,
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
        check_agreement(records)

    after, after_note = None, ""
    if server_stats and before is not None:
        reached = sum(1 for r in records if r.ok or r.category not in ("refused", "cancelled", "client_error"))
        after, after_note = _settled_stats(host, port, op, before, reached, timeout)
    server = server_counts(before, after, op)
    summary = summarize(records, op=op, size=size, clients=clients, wall_seconds=wall, pool=pool,
                        encoding=encoding, server=server, cancelled=was_cancelled)  # fmt: skip
    if student:
        notes.append(f"server counts: not measured ({dialect} dialect: only labnet's servers answer STATS)")
        findings = sorted({r.findings for r in records if r.findings})
        if findings:
            notes.append("the base64 decoder noticed: " + " | ".join(findings))
    summary["server_note"] = "; ".join(filter(None, [before_note, after_note] + notes))
    summary["dialect"] = dialect
    summary["base64"] = base64  # the clients' codec backend
    summary["timing"] = sorted({r.timing for r in records})
    summary["digest"] = expected or next((r.sha256 for r in records if r.ok), "")
    summary["digest_reference"] = ("expected" if expected else "agreement")
    summary["host"], summary["port"] = host, port
    config = {"op": op, "size": size, "clients": clients, "pool": pool, "host": host, "port": port,
              "dialect": dialect, "profile": getattr(profile, "name", None),
              "encoding": encoding, "base64": base64, "timeout": timeout, "time_limit": time_limit, "name": name,
              "start_method": start_method if pool == "process" else None,
              "files_dir": str(files_dir), "downloads_dir": str(downloads_dir)}  # fmt: skip
    return StressResult(records, summary, config)
