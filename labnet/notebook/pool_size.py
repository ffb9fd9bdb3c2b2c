"""What a big thread pool costs by itself on a few cores, measured with plain code (notebook 03).

:func:`pool_size_cost` runs the same fixed amount of a server's per-chunk
work -- base64-decode a chunk, SHA-256 it, write it to a new file, all calls
that release the GIL -- as ``units`` independent "transfers" on thread pools
of several sizes, and reports for each size the wall time, the CPU time,
the context switches of the worker threads (voluntary: a thread waited, for
the GIL or the disk; involuntary: the scheduler took its core) and their
page faults.  No sockets and no labnet protocol: what changes between rows
is only how many threads share the cores at once, so the difference between
the rows is what a pool of that size costs by itself (the GIL hand-offs and
the cache each thread's chunk loses while it waits).

Why it is worth a cell: on the 2-core lab VM a labnet thread server with 50
workers once took ~3x the wall time of one with 5 for the same 50 uploads;
most of that was labnet's own allocator setting (see
``labnet.server.thread_pool``, "Memory"), and what is left is the part this
function shows for plain code too.  ``rows_text(rows)`` prints the table.

Measured on the 2-core VM (2026-12-02, other work sharing the cores, so
read the CPU column): 50 units of 10 MB, 96 KiB chunks, pools of 2, 5 and
50 threads took 0.89, 0.83 and 0.85 s of CPU (then 0.81, 0.82, 0.81): the
same work costs the same CPU on 50 threads as on 2.  What grows is the
switching -- 31-47 voluntary context switches with 2 threads, 1,158-1,600
with 50 -- and that costs no measurable CPU at this chunk size.  The
heavy benchmark (``bench/heavy.py``) says the same of plain socket servers:
a ``ThreadPoolExecutor`` of 50 used 10.6 s of CPU for 50 x 100 MB base64
uploads where one of 5 used 11.4 s.  So with chunks of ~100 KiB and more,
the GIL hand-offs of a big pool are not where the time goes; per-chunk
costs that a pool *multiplies* (page faults from a buffer the allocator
hands back to the kernel each time) are.

Must not import the server, the client, sockets or matplotlib.
"""

from __future__ import annotations

import base64
import hashlib
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from labnet.config import MB

try:
    import pybase64

    _decode = pybase64.b64decode
except ImportError:  # pragma: no cover - the lab installs pybase64
    _decode = base64.b64decode


def _thread_counters() -> tuple[int, int, int]:
    """(voluntary, involuntary context switches, minor page faults) of the calling thread so far."""
    ru = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
    return ru.ru_nvcsw, ru.ru_nivcsw, ru.ru_minflt


def _one_unit(path: str, wire_chunk: bytes, chunks: int) -> tuple[int, int, int]:
    """One "transfer": ``chunks`` times decode, hash, write; returns this thread's counters spent."""
    start = _thread_counters()
    sha = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(chunks):
            data = _decode(wire_chunk)
            sha.update(data)
            out.write(data)
    os.unlink(path)
    end = _thread_counters()
    return end[0] - start[0], end[1] - start[1], end[2] - start[2]


def pool_size_cost(pools=(2, 5, 50), units: int = 50, unit_mb: float = 10, chunk_kib: int = 96) -> list[dict]:
    """Run ``units`` units of ``unit_mb`` MB each on a thread pool of each size in ``pools``.

    Returns one dict per pool size: ``threads``, ``wall_s``, ``cpu_s`` (this
    process, user + system), ``mb_per_s`` (decoded bytes / wall), and the
    worker threads' ``voluntary`` and ``involuntary`` context switches and
    ``minor_faults``.  A first, untimed round warms the caches and the allocator.
    """
    raw = os.urandom(1024 * chunk_kib)
    wire = base64.b64encode(raw)
    chunks = max(1, int(unit_mb * MB) // len(raw))
    work = tempfile.mkdtemp(prefix="labnet-poolsize-")
    rows = []
    try:
        _one_unit(os.path.join(work, "warm"), wire, chunks)
        for n in pools:
            t0, c0 = time.perf_counter(), os.times()
            with ThreadPoolExecutor(n) as pool:
                spent = list(pool.map(lambda i: _one_unit(os.path.join(work, f"u{i}"), wire, chunks), range(units)))
            wall, c1 = time.perf_counter() - t0, os.times()
            rows.append({
                "threads": n, "wall_s": wall, "cpu_s": (c1.user + c1.system) - (c0.user + c0.system),
                "mb_per_s": units * chunks * len(raw) / wall / MB,
                "voluntary": sum(s[0] for s in spent), "involuntary": sum(s[1] for s in spent),
                "minor_faults": sum(s[2] for s in spent),
            })  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def rows_text(rows: list[dict]) -> str:
    """The rows as a small table, each pool's wall and CPU also relative to the first row's."""
    if not rows:
        return ""
    first = rows[0]
    lines = [f"{'threads':>7} {'wall s':>7} {'MB/s':>6} {'cpu s':>6} {'wall x':>6} {'cpu x':>6} "
             f"{'vol cs':>8} {'invol cs':>8} {'faults':>7}"]  # fmt: skip
    for r in rows:
        lines.append(f"{r['threads']:>7} {r['wall_s']:>7.2f} {r['mb_per_s']:>6.0f} {r['cpu_s']:>6.2f} "
                     f"{r['wall_s'] / first['wall_s']:>6.2f} {r['cpu_s'] / max(first['cpu_s'], 1e-9):>6.2f} "
                     f"{r['voluntary']:>8} {r['involuntary']:>8} {r['minor_faults']:>7}")  # fmt: skip
    return "\n".join(lines)
