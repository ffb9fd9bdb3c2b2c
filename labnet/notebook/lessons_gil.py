"""Notebook 03's GIL lesson on base64 itself: the standard library's backend holds the GIL, pybase64 does not.

What it holds:

* :func:`encode_in_threads` -- ``threads`` threads each run ``calls`` encodes of one buffer with
  labnet's streamed encoder (``labnet.protocol.codec.Encoder``) under a chosen backend; wall and CPU
  seconds of the whole;
* :func:`base64_threads` -- for each backend, one thread against two threads doing the same work
  each (so two threads do twice the work), repeated and interleaved; :func:`base64_summary`
  reduces the repeats to medians and spread of: the 2-thread/1-thread time ratio (1: the two
  threads ran at once; 2 or more: one at a time), the cores the two threads kept busy (CPU
  seconds / wall seconds, at most about 1 while the GIL is held), and the backend's speed;
* :func:`gil_lockout` -- one long encode call in a thread while another thread counts: the longest
  time the counting thread could not run.  A backend that holds the GIL locks it out for the whole
  call; one that releases it, only for the moments the OS gives the core to someone else.  Unlike a
  speed-up, this does not need a free core, so it holds on a busy machine too;
* :func:`server_backends` -- the same stress cell against a thread server whose workers and clients
  use each backend (``--base64``), repeated and interleaved; :func:`server_summary`;
* :func:`plot_base64_threads` draws the ratios.

Why it matters: a thread-pool server that encodes with ``binascii`` (what ``import base64`` runs)
encodes for one client at a time, however many workers it has, while pybase64 (SIMD, about
17 GB/s decode, and it releases the GIL while it works) leaves the GIL to the other threads.

Imports the measuring tools and the protocol's codec; matplotlib only inside the plot.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

from labnet.measure import stress
from labnet.measure.launcher import BackgroundServer
from labnet.procutil import cpu_seconds
from labnet.protocol import codec

CHUNK = 600_000  # bytes per encode call: 800 KB out, under the 1 MiB above which labnet's allocator
# setting (procutil.keep_buffers_warm) maps fresh pages for every result, which would time page faults
BIG_CALL = 30_000_000  # bytes of one long encode call, for the lock-out measurement


def _encode_loop(view, calls: int) -> None:
    enc = codec.Encoder("b64")
    for _ in range(calls):
        enc.encode(view)


def encode_in_threads(backend: str, threads: int, calls: int, data: bytes) -> tuple[float, float]:
    """``(wall_s, cpu_s)`` for ``threads`` threads each encoding ``data`` ``calls`` times with ``backend``."""
    view = memoryview(data)  # no copy per call: only the encoding itself is timed
    with codec.backend(backend):
        workers = [threading.Thread(target=_encode_loop, args=(view, calls)) for _ in range(threads)]
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - t0, cpu_seconds() - cpu0


def _calls_for(backend: str, data: bytes, target_s: float) -> int:
    """How many calls make one thread's work last about ``target_s`` (so both backends are timed alike)."""
    calls, wall = 1, 0.0
    while calls < 100_000:
        wall, _ = encode_in_threads(backend, 1, calls, data)
        if wall >= target_s / 4:
            break
        calls *= 4
    return max(1, round(calls * target_s / max(wall, 1e-6)))


def base64_threads(backends=codec.BACKENDS, repeats: int = 3, target_s: float = 0.1, size: int = CHUNK,
                   progress=None) -> list[dict]:  # fmt: skip
    """Rows ``{backend, repeat, calls, one_s, two_s, ratio, cores_two, MBps}``: one thread vs two threads
    (each doing the one thread's work) with each backend, ``repeats`` times, backends interleaved."""
    data = os.urandom(size - size % 3)
    calls = {b: _calls_for(b, data, target_s) for b in backends}
    rows = []
    for repeat in range(repeats):
        for b in backends:
            one, _ = encode_in_threads(b, 1, calls[b], data)
            two, cpu_two = encode_in_threads(b, 2, calls[b], data)
            rows.append({"backend": b, "repeat": repeat, "calls": calls[b], "one_s": one, "two_s": two,
                         "ratio": two / one, "cores_two": cpu_two / two,
                         "MBps": len(data) * calls[b] / one / 1e6})  # fmt: skip
            if progress:
                progress()
    return rows


def _spread(values) -> dict:
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def base64_summary(rows: list[dict]) -> dict:
    """Per backend: medians and spread of ``ratio``, ``cores_two`` and ``MBps`` over the repeats."""
    out = {}
    for b in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == b]
        out[b] = {"repeats": len(mine), **{k: _spread(r[k] for r in mine) for k in ("ratio", "cores_two", "MBps")}}
    return out


def format_base64_summary(summary: dict) -> str:
    out = [f"{'backend':>9} {'2 threads / 1 thread (time)':>30} {'cores used by 2 threads':>26} {'speed, 1 thread':>18}"]
    for b, s in summary.items():
        r, c, v = s["ratio"], s["cores_two"], s["MBps"]
        out.append(f"{b:>9} {r['median']:>9.2f}x ({r['min']:.2f}-{r['max']:.2f}) {'':>6} "
                   f"{c['median']:>8.2f} ({c['min']:.2f}-{c['max']:.2f}) {'':>4} {v['median']:>9.0f} MB/s")  # fmt: skip
    return "\n".join(out)


def plot_base64_threads(rows: list[dict]):
    """Each repeat's 2-thread/1-thread time ratio per backend (dots) and the median (bar); lines at 1 and 2."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.subplots()
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    for i, b in enumerate(backends):
        ratios = [r["ratio"] for r in rows if r["backend"] == b]
        ax.bar(i, statistics.median(ratios), color="#c44e52" if b == "binascii" else "#55a868", alpha=0.6)
        ax.plot([i] * len(ratios), ratios, "o", color="k", markersize=4)
    ax.axhline(1, color="#55a868", linestyle="--", linewidth=1, label="1: both threads at once")
    ax.axhline(2, color="#c44e52", linestyle="--", linewidth=1, label="2: one thread at a time")
    ax.set_xticks(range(len(backends)), backends)
    ax.set_ylabel("time, 2 threads / 1 thread")
    ax.set_title("Two threads encoding base64, each as much as one thread alone")
    ax.legend(fontsize="small", loc="upper right", frameon=False)
    return fig


def _lockout_once(backend: str, data: bytes) -> tuple[float, float]:
    """``(call_s, longest_gap_s)``: one encode of ``data`` in a thread, the longest pause of this thread meanwhile."""
    done = threading.Event()
    took: list[float] = []

    def encode() -> None:
        t0 = time.perf_counter()
        codec.Encoder("b64").encode(memoryview(data))  # a view: no copy of the input, only the encoding
        took.append(time.perf_counter() - t0)
        done.set()

    with codec.backend(backend):
        worker = threading.Thread(target=encode)
        gap, last = 0.0, time.perf_counter()
        worker.start()
        while not done.is_set():  # spin: every pass needs the GIL
            now = time.perf_counter()
            gap, last = max(gap, now - last), now
        worker.join()
    return took[0], gap


def gil_lockout(backends=codec.BACKENDS, repeats: int = 3, size: int = BIG_CALL, progress=None) -> list[dict]:
    """Rows ``{backend, repeat, call_s, gap_s, locked_fraction}``: one ``size``-byte encode per row, backends
    interleaved; ``locked_fraction`` = the other thread's longest pause / the call's duration (1: locked out)."""
    data = os.urandom(size - size % 3)
    rows = []
    for repeat in range(repeats):
        for b in backends:
            call, gap = _lockout_once(b, data)
            rows.append({"backend": b, "repeat": repeat, "call_s": call, "gap_s": gap,
                         "locked_fraction": min(gap / call, 1.0) if call > 0 else 0.0})  # fmt: skip
            if progress:
                progress()
    return rows


def lockout_summary(rows: list[dict]) -> dict:
    out = {}
    for b in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == b]
        out[b] = {"repeats": len(mine), **{k: _spread(r[k] for r in mine) for k in ("call_s", "gap_s", "locked_fraction")}}
    return out


def format_lockout(summary: dict) -> str:
    out = [f"{'backend':>9} {'one encode call':>18} {'other thread locked out (longest)':>36}"]
    for b, s in summary.items():
        c, g, f = s["call_s"], s["gap_s"], s["locked_fraction"]
        out.append(f"{b:>9} {c['median'] * 1000:>10.0f} ms {'':>6} {g['median'] * 1000:>10.1f} ms "
                   f"({f['median']:.0%} of the call; range {g['min'] * 1000:.1f}-{g['max'] * 1000:.1f} ms)")  # fmt: skip
    return "\n".join(out)


# ---------------------------------------------------------------------------
# The server, with each backend
# ---------------------------------------------------------------------------


def server_backends(volume, clients: int, workers: int, repeats: int = 3, backends=codec.BACKENDS,
                    op: str = "download", progress=None) -> dict[str, list]:  # fmt: skip
    """``{backend: [StressResult, ...]}``: the same cell (``clients`` thread clients, base64 bodies) against a
    thread server of ``workers`` workers, server and clients both using the backend (``--base64``); one
    server per backend, runs interleaved."""
    servers = {b: BackgroundServer("thread", workers=workers, base64=b) for b in backends}
    out: dict[str, list] = {b: [] for b in backends}
    try:
        for srv in servers.values():
            srv.start()
        for _ in range(repeats):
            for b, srv in servers.items():
                res = stress.run(op, volume, clients, "thread", *srv.address, encoding="b64", base64=b,
                                 progress=False, keep_downloads=False)  # fmt: skip
                res.config["server_base64"] = srv.base64
                out[b].append(res)
                if progress:
                    progress()
    finally:
        for srv in servers.values():
            srv.stop()
    return out


def server_summary(runs: dict[str, list]) -> dict:
    """Per backend: medians and spread of the run's wall time and the mean time per client, and ok counts."""
    return {b: {"wall_s": _spread(r.summary["wall_seconds"] for r in rs),
                "mean_s": _spread(r.summary["time_mean"] for r in rs),
                "ok": sum(r.summary["ok"] for r in rs), "clients": sum(r.summary["clients"] for r in rs),
                "server_base64": sorted({r.config["server_base64"] for r in rs})}
            for b, rs in runs.items()}  # fmt: skip
