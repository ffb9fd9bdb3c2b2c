"""Stress-run records and their summary: pure maths and formatting, no sockets.

What it holds: :class:`WorkerRecord` (what one worker did) and
:data:`RECORD_FIELDS`, the failure :data:`CATEGORIES` and :func:`classify`
(exception -> category), :func:`percentile`, :func:`server_counts` (the
difference of two ``STATS`` snapshots), :func:`summarize` (a run's summary
from its records), :func:`check_agreement` (downloads without a known digest
must agree) and :func:`format_summary` (the summary for people).

Every function here is a pure function of its arguments: unit-tested without
a server.  Must not import sockets, threads, processes or other labnet
modules than ``errors`` and ``config`` (every spawned stress worker imports
it); no tqdm, matplotlib or IPython.
"""

from __future__ import annotations

import errno
import math
from dataclasses import asdict, dataclass, fields

from labnet.config import size_label
from labnet.errors import Code, LabnetError, LocalError, PeerError, RemoteError, UsageError

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
    # the students' dialects (labnet.measure.dialect_transfer): judged by the bytes
    "truncated",  # fewer bytes arrived or were stored than the file has
    "corrupted",  # as many bytes (or more), but not the file's
    "unverified",  # the server said OK, but nothing could compare the bytes: not a success
    "not_understood",  # the reply is not the dialect
    "closed_early",  # the server closed in the middle of a reply
    "no_reply",  # connected, but not one byte came back in time
    "out_of_memory",  # the server's memory passed the limit and it was stopped
)

# One line a student can act on, per category.
HINTS = {
    "ok": "",
    "refused": "nothing listens on that host and port: is the server running, on this port?",
    "timeout": "no progress for too long: a stuck server, or a parser that rescans a big request (quadratic)",
    "reset": "the connection broke: look for an exception in the server's output",
    "protocol": "the server broke labnet's protocol: is it a labnet server? (try --dialect)",
    "server_error": "the server refused in its own words: read them",
    "integrity": "the bytes differ from the file's: a chunk lost, added or changed on the way",
    "busy": "every server worker was busy and the waiting list full: fewer clients, or more workers",
    "cancelled": "the run was stopped before this transfer finished",
    "client_error": "a problem on the client's side (a file, the disk, an argument): see the message",
    "error": "an unexpected error: the message says what",
    "truncated": "the file came out shorter: a loop that stops when one recv() returns less than asked, "
                 "or a decoder that stops at '=' padding",
    "corrupted": "as many bytes but other ones: lowercasing, text decoding of chunks, or mixed-up pieces",
    "unverified": "give --server-root (the server's folder) or allow download-back, so the bytes can be compared",
    "not_understood": "the reply is not what the dialect expects: check its framing (JSON + \\r\\n\\r\\n, "
                      "the end marker) or the profile",
    "closed_early": "the server closed before its reply ended: look for an exception in its output",
    "no_reply": "connected but never answered: does the server wait for a terminator this profile does not send?",
    "out_of_memory": "the server's memory grew past the limit: it holds whole files in memory (stream them)",
}  # fmt: skip


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
    timing: str = "greeting"  # what tells wait from transfer: labnet's greeting, a first byte, or nothing
    queue_position: int = 0  # where labnet's server queued this client (OK LABNET 1 QUEUED n); 0: served at once
    findings: str = ""  # what a dialect's base64 decoder noticed (block-by-block padding...)

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


def _timing_line(s: dict) -> str:
    timing = s.get("timing") or ["greeting"]
    if "total only" in timing:
        return "  waiting vs transferring: not told apart (this dialect shows no sign of when service started)"
    label = "" if timing == ["greeting"] else " (approximate: up to the first reply byte)"
    return f"  waiting to be served{label}: mean {_fmt(s['wait_mean'])}; transferring: mean {_fmt(s['transfer_mean'])}"


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
        "queued": sum(1 for r in records if r.queue_position),
        "queue_longest": max((r.queue_position for r in records), default=0),
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


def check_agreement(records) -> None:
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


def _fmt(value, unit="s", scale=1.0, digits=3) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f} {unit}"


def format_summary(summary: dict, records=()) -> str:
    s = summary
    lines = [
        f"stress {s['op']} {s['size_label']} x {s['clients']} {s['pool']} workers ({s['encoding']}), "
        f"wall {s['wall_seconds']:.2f} s{'  [CANCELLED]' if s.get('cancelled') else ''}",
        f"  clients: {s['ok']} ok, {s['failed']} failed"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(s['failures'].items()))})" if s["failures"] else ""),
        *[f"    {cat}: {HINTS[cat]}" for cat in sorted(s["failures"]) if HINTS.get(cat)],
        f"  total time per client: mean {_fmt(s['time_mean'])}, p50 {_fmt(s['time_p50'])}, "
        f"p95 {_fmt(s['time_p95'])}, max {_fmt(s['time_max'])}",
        _timing_line(s),
        *([f"  queued: {s['queued']} of {s['clients']} clients were told to wait in line "
           f"(the longest line: {s['queue_longest']})"] if s.get("queued") else []),
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
