"""Demonstrations for the notebooks: the seed's bugs reproduced, labnet's fixes shown.

Notebook 01 (protocol by hand):

* :func:`seed_receive` -- the seed's way of finding the end of a body: read
  until a ``__END__`` marker shows up.  :func:`split_marker_demo` and
  :func:`marker_in_file_demo` show the two ways that goes wrong;
  :func:`length_prefixed_receive` shows labnet's receiver getting the same
  bytes right whatever ``recv()`` returns.
* :func:`seed_encode` / :func:`seed_decode` -- the seed's base64: every
  1 MiB chunk encoded on its own, the concatenation decoded as one string.
  :func:`truncation_demo` reproduces the silent truncation and shows that a
  SHA-256 digest catches it, and that labnet's streamed codec does not truncate.
* :func:`codec_cost` and :func:`transfer_cost` measure what base64 costs in
  size and CPU against ``raw``; :func:`plot_base64_cost` draws it.

Notebooks 02 and 03 (pools):

* :func:`cpu_task` and :func:`io_task` are importable worker functions, so a
  process pool started with ``spawn`` can find them; :func:`pool_timing` and
  :func:`gil_demo` time them on thread and process pools.
* :func:`try_in_pool` submits a function to a pool and reports what happened
  (a function defined in a notebook cannot be found by a ``spawn`` child).
* :func:`seed_style_encode` is the seed's process-pool design for a download
  (read the whole file, pickle it to a worker, encode it whole, pickle the
  result back); :func:`streamed_encode` is labnet's way (bounded chunks).

Worker functions live here, at module level, because a process pool can only
run functions its children can import.  matplotlib is imported only inside
the plotting functions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from .codec import Decoder, Encoder
from .errors import PeerError
from .protocol import NEED_DATA, BodyEnd, BodySender, Data, Receiver

SEED_MARKER = b"__END__"
SEED_CHUNK = 1 << 20  # the seed encoded every 1 MiB on its own
MB = 10**6


# ---------------------------------------------------------------------------
# The seed's __END__ sentinel
# ---------------------------------------------------------------------------


@dataclass
class Received:
    """What a receiver made of a stream of ``recv()`` results."""

    data: bytes
    finished: bool  # did it believe the body was complete?
    reads: int  # recv() calls used
    note: str = ""


def seed_receive(reads, marker: bytes = SEED_MARKER) -> Received:
    """The seed's receive loop: read until a read contains the marker; what came before it is the file.

    ``reads`` is what successive ``recv()`` calls returned (a list of bytes, or
    any iterable; an empty bytes means the peer closed).  Like the seed, each
    read is checked on its own (``if b"__END__" in data``), and everything
    before the marker is taken as the file.
    """
    parts, n = [], 0
    for chunk in reads:
        n += 1
        if not chunk:
            return Received(b"".join(parts), False, n, "peer closed; marker never seen")
        at = chunk.find(marker)
        if at != -1:
            parts.append(chunk[:at])
            rest = len(chunk) - at - len(marker)
            return Received(b"".join(parts), True, n, f"{rest} byte(s) after the marker were dropped" if rest else "")
        parts.append(chunk)
    return Received(b"".join(parts), False, n, "no more data and no marker: the seed would wait here forever")


def seed_receive_searching(reads, marker: bytes = SEED_MARKER) -> Received:
    """A 'fixed' sentinel loop: search the whole buffer, stop at the first marker.

    This survives a marker split across reads, but not a file that contains
    the marker (and rescanning the buffer gets slow for big files).
    """
    buf, n = b"", 0
    for chunk in reads:
        n += 1
        if not chunk:
            return Received(buf, False, n, "peer closed; marker never seen")
        buf += chunk
        at = buf.find(marker)
        if at != -1:
            rest = len(buf) - at - len(marker)
            note = f"{rest} byte(s) after the first marker were left unread" if rest else ""
            return Received(buf[:at], True, n, note)
    return Received(buf, False, n, "no more data and no marker")


def split_marker_reads(payload: bytes, marker: bytes = SEED_MARKER, cut: int = 3) -> list[bytes]:
    """The reads a receiver may get when the marker is split: ``...__E`` then ``ND__``.

    TCP is a byte stream: one ``send()`` may arrive in several ``recv()``
    calls and several sends in one.  Here the split falls ``cut`` bytes
    into the marker.
    """
    stream = payload + marker
    at = len(payload) + cut
    return [stream[:at], stream[at:]]


def split_marker_demo(payload: bytes = b"hello, this is the whole file") -> dict:
    """The seed's loop against a marker split across two reads: it never sees the end."""
    reads = split_marker_reads(payload)
    got = seed_receive(reads)
    return {"reads": reads, "seed": got, "payload": payload, "searching": seed_receive_searching(reads)}


def marker_in_file_demo(size: int = 10_000, at: int | None = None) -> dict:
    """A file that happens to contain ``__END__``: the receiver stops early, and says OK."""
    at = size // 3 if at is None else at
    content = bytes((i * 7) % 251 for i in range(size))
    content = content[:at] + SEED_MARKER + content[at + len(SEED_MARKER):]
    content = content[:size]
    stream = content + SEED_MARKER
    reads = [stream[i:i + 4096] for i in range(0, len(stream), 4096)]
    return {"content": content, "reads": reads,
            "seed": seed_receive(reads), "searching": seed_receive_searching(reads)}  # fmt: skip


def length_prefixed_receive(content: bytes, encoding: str = "b64", read_size: int = 1) -> Received:
    """labnet's way: the receiver knows the body length before it starts, and checks a digest.

    The sender's bytes (body plus ``SHA256`` trailer, exactly what the
    protocol sends) are fed to :class:`labnet.protocol.Receiver` ``read_size``
    bytes at a time -- one byte per "recv" by default, the worst case.
    """
    sender = BodySender(len(content), encoding)
    wire = sender.encode(content) + sender.finish()
    rx = Receiver()
    rx.start_body(len(content), encoding)
    out, reads = [], 0
    for i in range(0, len(wire), read_size):
        rx.receive_data(wire[i:i + read_size])
        reads += 1
        while True:
            event = rx.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, Data):
                out.append(event.data)
            elif isinstance(event, BodyEnd):
                return Received(b"".join(out), True, reads, f"SHA-256 verified: {event.sha256[:16]}...")
    return Received(b"".join(out), False, reads, "stream ended before the body did")


def stream_boundaries(pieces=(b"UPLOAD a.txt 5\r\n", b"hello", b"SHA256 ..."), settle: float = 0.2) -> dict:
    """Send ``pieces`` with separate ``send()`` calls over real loopback TCP and see what ``recv()`` returns.

    The receiver waits ``settle`` seconds before reading, as a busy server
    might: the pieces arrive glued together.  Message boundaries do not
    survive TCP; only a protocol can put them back.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tx:
            rx, _ = listener.accept()
            with rx:
                rx.settimeout(5)
                for p in pieces:
                    tx.sendall(p)
                time.sleep(settle)
                tx.shutdown(socket.SHUT_WR)
                reads = []
                while True:
                    chunk = rx.recv(65536)
                    if not chunk:
                        break
                    reads.append(chunk)
    return {"sent": list(pieces), "received": reads}


# ---------------------------------------------------------------------------
# The seed's per-chunk base64: silent truncation
# ---------------------------------------------------------------------------


def seed_encode(data: bytes, chunk: int = SEED_CHUNK) -> bytes:
    """The seed's sender: base64 of every ``chunk`` bytes on its own, concatenated.

    1 MiB is not a multiple of 3, so every chunk ends in ``=`` padding.
    """
    return b"".join(base64.b64encode(data[i:i + chunk]) for i in range(0, len(data), chunk))


def seed_decode(wire: bytes) -> bytes:
    """The seed's receiver: decode the whole concatenation as one base64 string.

    ``base64.b64decode`` (non-strict, the default) stops at the first
    padding and ignores the rest without a word.
    """
    return base64.b64decode(wire)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_content(size: int, seed: int = 1) -> bytes:
    """Pseudo-random bytes (not compressible, every MiB different)."""
    import random

    return random.Random(seed).randbytes(size)


@dataclass
class TruncationResult:
    size: int
    wire_bytes: int
    received: int
    padding_positions: list = field(default_factory=list)
    sha_sent: str = ""
    sha_received: str = ""
    seed_says: str = "OK"  # the seed's client printed success whatever arrived
    labnet_decoder: str = ""  # what labnet's streamed decoder made of the seed's wire bytes
    labnet_roundtrip_ok: bool = False

    @property
    def truncated(self) -> bool:
        return self.received != self.size

    @property
    def digest_caught_it(self) -> bool:
        return self.sha_sent != self.sha_received


def truncation_demo(size: int = 5 * MB, chunk: int = SEED_CHUNK) -> TruncationResult:
    """Reproduce the seed's truncation on ``size`` bytes and show who notices."""
    data = random_content(size)
    wire = seed_encode(data, chunk)
    got = seed_decode(wire)
    pads, start = [], 0
    while True:
        at = wire.find(b"=", start)
        if at == -1:
            break
        pads.append(at)
        start = at + 1
    res = TruncationResult(size, len(wire), len(got), pads[:10], sha256(data), sha256(got))
    # labnet's decoder, fed the seed's wire bytes, refuses them instead of truncating
    dec = Decoder("b64")
    try:
        for i in range(0, len(wire), 65536):
            dec.decode(wire[i:i + 65536], final=i + 65536 >= len(wire))
        res.labnet_decoder = "accepted"
    except PeerError as exc:
        res.labnet_decoder = f"refused: {exc}"
    # labnet's encoder: the same chunking, one continuous base64 string, decoded in full
    enc = Encoder("b64")
    wire2 = b"".join(enc.encode(data[i:i + chunk]) for i in range(0, len(data), chunk)) + enc.finish()
    res.labnet_roundtrip_ok = base64.b64decode(wire2) == data
    return res


# ---------------------------------------------------------------------------
# What base64 costs
# ---------------------------------------------------------------------------


def _backends():
    out = {"binascii": (lambda d: binascii.b2a_base64(d, newline=False), binascii.a2b_base64)}
    try:
        import pybase64

        out["pybase64"] = (pybase64.b64encode, pybase64.b64decode)
    except ImportError:
        pass
    return out


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def codec_cost(size: int = 20 * MB, repeats: int = 3) -> list[dict]:
    """Encode and decode ``size`` bytes with each base64 backend; also copying them (the raw baseline).

    Returns rows ``{backend, size, wire_bytes, encode_s, decode_s, encode_MBps, decode_MBps}``.
    """
    data = random_content(size)
    rows = [{"backend": "raw (copy)", "size": size, "wire_bytes": size,
             "encode_s": _best_of(lambda: bytes(bytearray(data)), repeats), "decode_s": 0.0}]  # fmt: skip
    rows[0]["decode_s"] = rows[0]["encode_s"]
    for name, (enc, dec) in _backends().items():
        wire = enc(data)
        assert dec(wire) == data
        rows.append({"backend": name, "size": size, "wire_bytes": len(wire),
                     "encode_s": _best_of(lambda enc=enc: enc(data), repeats),
                     "decode_s": _best_of(lambda dec=dec, wire=wire: dec(wire), repeats)})  # fmt: skip
    for r in rows:
        r["encode_MBps"] = size / MB / r["encode_s"] if r["encode_s"] > 0 else float("inf")
        r["decode_MBps"] = size / MB / r["decode_s"] if r["decode_s"] > 0 else float("inf")
    return rows


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def transfer_cost(address, path, encodings=("raw", "b64"), repeats: int = 2, dest_dir=None) -> list[dict]:
    """Upload then download ``path`` through a labnet server in each encoding.

    Rows: ``{encoding, op, bytes, wire_bytes, seconds, MBps, client_cpu_s}``
    (best of ``repeats``; client CPU is this process's CPU time for the
    transfer, where the client's base64 work shows up).
    """
    import tempfile
    from pathlib import Path

    from .client import Client

    path = Path(path)
    rows = []
    with tempfile.TemporaryDirectory(prefix="labnet-cost-") as tmp:
        dest = Path(dest_dir or tmp)
        with Client(*address, timeout=60) as c:
            for enc in encodings:
                name = f"cost-{enc}-{path.name}"
                for op in ("upload", "download"):
                    best = None
                    for _ in range(repeats):
                        cpu0 = _cpu_seconds()
                        if op == "upload":
                            r = c.upload(path, name=name, encoding=enc)
                        else:
                            r = c.download(name, dest, encoding=enc)
                        cpu = _cpu_seconds() - cpu0
                        if best is None or r.seconds < best["seconds"]:
                            best = {"encoding": enc, "op": op, "bytes": r.bytes, "wire_bytes": r.wire_bytes,
                                    "seconds": r.seconds, "MBps": r.bytes / MB / r.seconds, "client_cpu_s": cpu}  # fmt: skip
                    rows.append(best)
                c.delete(name)
    return rows


def plot_base64_cost(codec_rows, transfer_rows=None):
    """Two or three panels: bytes on the wire, codec speed, and transfer speed per encoding."""
    from matplotlib.figure import Figure

    panels = 3 if transfer_rows else 2
    fig = Figure(figsize=(4.2 * panels, 3.6), layout="constrained")
    axes = fig.subplots(1, panels)
    size = codec_rows[0]["size"]
    ax = axes[0]
    labels = ["raw", "base64"]
    values = [size / MB, codec_rows[-1]["wire_bytes"] / MB]
    bars = ax.bar(labels, values, color=["#4c72b0", "#dd8452"])
    ax.bar_label(bars, fmt="%.2f MB")
    ax.set_ylabel("bytes on the wire (MB = 10^6 B)")
    ax.set_title(f"Size of a {size / MB:g} MB file on the wire")
    ax.set_ylim(0, max(values) * 1.2)

    ax = axes[1]
    names = [r["backend"] for r in codec_rows]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [r["encode_MBps"] for r in codec_rows], width=0.4, label="encode")
    ax.bar([i + 0.2 for i in x], [r["decode_MBps"] for r in codec_rows], width=0.4, label="decode")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("MB/s (one core)")
    ax.set_yscale("log")
    ax.set_title("CPU speed: copying vs base64")
    ax.legend()

    if transfer_rows:
        ax = axes[2]
        ops = ["upload", "download"]
        encs = sorted({r["encoding"] for r in transfer_rows}, key=lambda e: e != "raw")
        for j, enc in enumerate(encs):
            vals = [next(r["MBps"] for r in transfer_rows if r["op"] == op and r["encoding"] == enc) for op in ops]
            b = ax.bar([i + (j - 0.5) * 0.4 for i in range(len(ops))], vals, width=0.4, label=enc)
            ax.bar_label(b, fmt="%.0f")
        ax.set_xticks(range(len(ops)), ops)
        ax.set_ylim(0, max(r["MBps"] for r in transfer_rows) * 1.18)
        ax.set_ylabel("file MB/s through labnet (loopback)")
        ax.set_title("One transfer, raw vs b64")
        ax.legend()
    return fig


# ---------------------------------------------------------------------------
# Pools: importable worker functions, the GIL, fork vs spawn
# ---------------------------------------------------------------------------


def cpu_task(n: int = 2_000_000) -> int:
    """Pure-Python arithmetic: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def io_task(seconds: float = 0.2) -> float:
    """Waiting (like a socket waiting for a slow client): releases the GIL."""
    time.sleep(seconds)
    return seconds


def square(x: int) -> int:
    """The smallest possible worker function, importable by any child process."""
    return x * x


def whoami(_: object = None) -> int:
    """The PID of the process that ran this call."""
    return os.getpid()


def pool_timing(kind: str, fn, args, workers: int, mp_context: str = "spawn", with_cpu: bool = False,
                repeats: int = 1):  # fmt: skip
    """Wall seconds to run ``fn(a)`` for every ``a`` in ``args`` on a pool of ``workers`` (best of ``repeats``).

    The pool is started (and, for processes, warmed up) before the clock starts,
    so only the work is timed.  ``with_cpu``: return ``(wall, cpu)`` where
    ``cpu`` is this process's CPU seconds meanwhile (all its threads; a
    process pool's work is not in it).
    """
    if kind == "thread":
        pool = ThreadPoolExecutor(workers)
    else:
        import multiprocessing

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(mp_context))
        list(pool.map(square, range(workers)))  # start every worker first
    best = (float("inf"), 0.0)
    with pool:
        for _ in range(max(1, repeats)):
            cpu0 = _cpu_seconds()
            t0 = time.perf_counter()
            list(pool.map(fn, args))
            wall = time.perf_counter() - t0
            best = min(best, (wall, _cpu_seconds() - cpu0))
    return best if with_cpu else best[0]


def gil_demo(tasks: int = 4, workers: int = 2, cpu_n: int = 1_000_000, io_s: float = 0.2, repeats: int = 2) -> list[dict]:
    """Time CPU-bound and I/O-bound tasks one after the other, on threads and on processes.

    Every timing is the best of ``repeats`` (after a warm-up call).
    Rows: ``work``, ``pool``, ``serial_s`` (all tasks one after the other),
    ``wall_s``, ``speedup`` (serial / wall) and, for thread pools,
    ``cores_used`` (CPU seconds / wall seconds: how many cores the threads
    kept busy on average; the GIL keeps it near 1 for Python code).
    Other programs on the machine can blur the speed-ups; ``cores_used``
    of a thread pool is not fooled by them.
    """
    rows = []
    for label, fn, arg in (("CPU-bound (pure Python)", cpu_task, cpu_n), ("I/O-bound (waiting)", io_task, io_s)):
        fn(arg)  # warm-up
        serial = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            for _ in range(tasks):
                fn(arg)
            serial = min(serial, time.perf_counter() - t0)
        for kind in ("thread", "process"):
            wall, cpu = pool_timing(kind, fn, [arg] * tasks, workers, with_cpu=True, repeats=repeats)
            rows.append({"work": label, "pool": kind, "tasks": tasks, "workers": workers, "serial_s": serial,
                         "wall_s": wall, "speedup": serial / wall,
                         "cores_used": cpu / wall if kind == "thread" and wall > 0 else None})  # fmt: skip
    return rows


def plot_gil(rows):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.4), layout="constrained")
    ax = fig.subplots()
    works = list(dict.fromkeys(r["work"] for r in rows))
    for j, kind in enumerate(("thread", "process")):
        vals = [next(r["speedup"] for r in rows if r["work"] == w and r["pool"] == kind) for w in works]
        b = ax.bar([i + (j - 0.5) * 0.38 for i in range(len(works))], vals, width=0.38, label=f"{kind} pool")
        ax.bar_label(b, fmt="%.1fx")
    w = rows[0]["workers"]
    ax.axhline(1, color="grey", lw=0.8)
    ax.axhline(w, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(works)), works)
    ax.set_ylabel(f"speed-up over one at a time ({w} workers)")
    ax.set_title("Threads help when waiting, not when computing (the GIL)")
    ax.legend()
    return fig


@dataclass
class PoolOutcome:
    method: str
    ok: bool
    result: object = None
    error: str = ""


def try_in_pool(fn, arg, method: str = "spawn", timeout: float = 60) -> PoolOutcome:
    """Run ``fn(arg)`` in a one-process pool started with ``method``; report what happened."""
    import multiprocessing

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method))
    try:
        return PoolOutcome(method, True, pool.submit(fn, arg).result(timeout=timeout))
    except Exception as exc:  # the lesson is in the exception
        return PoolOutcome(method, False, error=f"{type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def process_start_time(method: str, workers: int = 4) -> float:
    """Seconds to start ``workers`` processes with ``method`` and have each run one call."""
    import multiprocessing

    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        pids = set(pool.map(whoami, range(workers * 4)))
    elapsed = time.perf_counter() - t0
    assert pids
    return elapsed


# ---------------------------------------------------------------------------
# The seed's process-pool design vs labnet's
# ---------------------------------------------------------------------------


def encode_whole(data: bytes) -> bytes:
    """Worker function of the seed's design: base64 of a whole file at once."""
    return base64.b64encode(data)


def seed_style_encode(path, pool) -> dict:
    """The seed's download path: read the whole file, ship it to a pool process, get it back encoded.

    ``pool`` is a started ``ProcessPoolExecutor``.  The file crosses the
    process boundary twice (pickled there, pickled back 4/3 as big), and
    the parent holds file + encoded copy in memory at the same time.
    """
    import pickle

    t0 = time.perf_counter()
    with open(path, "rb") as f:
        data = f.read()
    t_read = time.perf_counter()
    encoded = pool.submit(encode_whole, data).result()
    t_done = time.perf_counter()
    t_p0 = time.perf_counter()
    pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL)
    pickling = time.perf_counter() - t_p0
    return {"design": "seed: whole file -> process pool", "bytes": len(data), "seconds": t_done - t0,
            "read_s": t_read - t0, "pool_s": t_done - t_read, "pickle_s": pickling,
            "bytes_crossing_processes": len(data) + len(encoded),
            "held_in_memory": len(data) + len(encoded)}  # fmt: skip


def streamed_encode(path, chunk: int = 3 * 64 * 1024) -> dict:
    """labnet's way: the process serving the connection encodes as it reads, in bounded chunks."""
    enc = Encoder("b64")
    t0 = time.perf_counter()
    total = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            enc.encode(block)
            total += len(block)
    enc.finish()
    seconds = time.perf_counter() - t0
    return {"design": "labnet: streamed in the worker", "bytes": total, "seconds": seconds, "read_s": 0.0,
            "pool_s": 0.0, "pickle_s": 0.0, "bytes_crossing_processes": 0,
            "held_in_memory": chunk + chunk * 4 // 3}  # fmt: skip


def plot_designs(rows):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    names = [r["design"].split(":")[0] for r in rows]
    b = ax1.bar(names, [r["seconds"] for r in rows], color=["#dd8452", "#4c72b0"][: len(rows)])
    ax1.bar_label(b, fmt="%.3f s")
    ax1.set_ylabel("seconds to encode one file")
    ax1.set_title(f"Encoding a {rows[0]['bytes'] / MB:g} MB file for download")
    b = ax2.bar(names, [r["held_in_memory"] / MB for r in rows], color=["#dd8452", "#4c72b0"][: len(rows)])
    ax2.bar_label(b, fmt="%.2f MB")
    ax2.set_ylabel("memory held per transfer (MB = 10^6 B)")
    ax2.set_title("...and the memory it needs per client")
    return fig


# ---------------------------------------------------------------------------
# Queueing: plots of stress runs (labnet.stress results)
# ---------------------------------------------------------------------------


def served_one_at_a_time(result, slack: float = 0.002) -> bool:
    """True if the transfers of ``result`` never overlapped in time.

    With one server worker they cannot: the next client is greeted only after
    the previous one said QUIT, so its request comes after the previous
    transfer ended.  Then all transfers fit one after the other into the run's
    wall time (common start to last client done): their sum is at most the
    wall time.  Unlike per-client timestamps, this does not depend on when
    each client thread happened to get the CPU.
    """
    busy = sum(r.transfer_seconds for r in result.records if r.ok)
    return busy <= result.summary["wall_seconds"] * 1.01 + slack


def plot_timelines(results, titles=None):
    """Side by side, each run's clients on a timeline (grey: waiting, blue: transferring); shared time axis."""
    from matplotlib.figure import Figure

    from .dashboard import draw_timeline

    results = list(results)
    fig = Figure(figsize=(4.6 * len(results), 0.35 * max(len(r.records) for r in results) + 2.2),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(1, len(results), sharex=True, squeeze=False)[0]
    for i, (ax, res) in enumerate(zip(axes, results, strict=True)):
        draw_timeline(ax, res, title=(titles[i] if titles else None), legend=False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    return fig


def plot_queueing(results, title: str = ""):
    """Mean time per client split into waiting and transferring, for every (server workers, clients) run.

    ``results``: ``StressResult``s whose ``config`` has ``server_workers``.
    One panel per server pool size, clients on the x axis.
    """
    from matplotlib.figure import Figure

    results = list(results)
    pools = sorted({r.config["server_workers"] for r in results})
    fig = Figure(figsize=(3.6 * len(pools) + 0.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(pools), sharey=True, squeeze=False)[0]
    for ax, workers in zip(axes, pools, strict=True):
        runs = sorted((r for r in results if r.config["server_workers"] == workers), key=lambda r: r.summary["clients"])
        labels = [str(r.summary["clients"]) for r in runs]
        wait = [r.summary["wait_mean"] or 0 for r in runs]
        transfer = [r.summary["transfer_mean"] or 0 for r in runs]
        ax.bar(labels, wait, color="#c7c7c7", label="waiting to be served")
        ax.bar(labels, transfer, bottom=wait, color="#4c72b0", label="transferring")
        ax.set_title(f"{workers} server worker{'s' if workers > 1 else ''}")
        ax.set_xlabel("client workers")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("mean seconds per client")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------
# Small helpers for the notebooks
# ---------------------------------------------------------------------------


class Ticker:
    """Call ``fn()`` every ``every`` seconds on a daemon thread until stopped (a context manager)."""

    def __init__(self, fn, every: float = 0.5):
        self.fn, self.every = fn, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="labnet-ticker")
        self.errors: list[str] = []

    def _run(self):
        while not self._stop.wait(self.every):
            try:
                self.fn()
            except Exception as exc:  # keep ticking; remember why it failed
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.fn()
        except Exception:
            pass
