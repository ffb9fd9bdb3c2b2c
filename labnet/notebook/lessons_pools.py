"""Notebooks 03 and 04's demonstrations (thread and process pools): the GIL, fork vs spawn, pool designs, queueing.

What it holds:

* :func:`cpu_task`, :func:`io_task`, :func:`square`, :func:`whoami` and
  :func:`encode_whole` are importable worker functions, so a process pool
  started with ``spawn`` can find them; :func:`pool_timing` and
  :func:`gil_demo` time them on thread and process pools (:func:`plot_gil`).
* :func:`try_in_pool` submits a function to a pool and reports what happened
  (a function defined in a notebook cannot be found by a ``spawn`` child),
  with what the child printed to its stderr captured (:func:`children_stderr_to`)
  and its one-line reason; :func:`process_start_time` / :func:`start_times`
  compare start methods (repeated: medians and spread).
* :func:`seed_style_encode` is the seed's process-pool design for a download
  (the seed: one student's submission; read the whole file, pickle it to a
  worker, encode it whole, pickle the result back); :func:`streamed_encode` is
  labnet's way (bounded chunks); both measure time, pickled bytes and peak
  Python memory (``tracemalloc``); :func:`compare_designs` runs both,
  :func:`plot_designs` draws them; :func:`design_file` and
  :func:`process_lesson_setup` choose the process notebook's sizes.
* :func:`served_one_at_a_time`, :func:`plot_timelines` and
  :func:`plot_queueing` read ``labnet.measure.stress`` results: who waited, who was served.
* :class:`Ticker` calls a function periodically while a cell runs.

Worker functions live here, at module level, because a process pool can only
run functions its children can import: so this module must not import
matplotlib (only inside the plotting functions), ``labnet.notebook.dashboard``
(imported lazily for the timelines) or anything else heavy at import time.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from labnet.config import CLIENT_POOLS, MB, quick_mode, size_label
from labnet.measure.files import data_dir, make_test_file
from labnet.notebook.dashboard_view import draw_timeline
from labnet.notebook.envcheck import lab_dimensions
from labnet.procutil import cpu_seconds
from labnet.protocol.codec import Encoder

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
            cpu0 = cpu_seconds()
            t0 = time.perf_counter()
            list(pool.map(fn, args))
            wall = time.perf_counter() - t0
            best = min(best, (wall, cpu_seconds() - cpu0))
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
        for kind in CLIENT_POOLS:
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
    for j, kind in enumerate(CLIENT_POOLS):
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
    error: str = ""  # what the caller saw (the future's exception)
    child_stderr: str = ""  # what the pool's processes printed, captured instead of spilling into the notebook

    @property
    def reason(self) -> str:
        """The one-line reason: the last ``SomethingError: ...`` line the child printed, else the caller's error."""
        lines = [ln for ln in self.child_stderr.splitlines() if _EXCEPTION_LINE.match(ln)]
        return lines[-1] if lines else self.error


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception)\b")


@contextmanager
def children_stderr_to(path):
    """Point file descriptor 2 at ``path`` while the block runs, then put it back.

    A child process started meanwhile inherits descriptor 2, so what it prints (the traceback of a
    ``spawn`` child that cannot import its function) lands in ``path`` instead of the notebook.
    Output of this process's own threads during the block lands there too.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def try_in_pool(fn, arg, method: str = "spawn", timeout: float = 60) -> PoolOutcome:
    """Run ``fn(arg)`` in a one-process pool started with ``method``; report what happened, with what the
    child process printed to its stderr captured (:attr:`PoolOutcome.reason`: its one-line reason)."""
    import multiprocessing
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labnet-pool-") as tmp:
        log = os.path.join(tmp, "stderr")
        with children_stderr_to(log):
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method))
            try:
                outcome = PoolOutcome(method, True, pool.submit(fn, arg).result(timeout=timeout))
            except Exception as exc:  # the lesson is in the exception
                outcome = PoolOutcome(method, False, error=f"{type(exc).__name__}: {exc}")
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        with open(log, encoding="utf-8", errors="replace") as f:
            outcome.child_stderr = f.read()
    return outcome


def process_start_time(method: str, workers: int = 4) -> float:
    """Seconds to start ``workers`` processes with ``method`` and have each run one call."""
    import multiprocessing

    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        pids = set(pool.map(whoami, range(workers * 4)))
    elapsed = time.perf_counter() - t0
    assert pids
    return elapsed


def start_times(methods=("fork", "spawn"), workers: int = 4, repeats: int = 3) -> dict:
    """:func:`process_start_time` ``repeats`` times per method, interleaved (so a busy moment of the
    machine hits both): ``{method: {"median", "min", "max", "n"}}`` in seconds."""
    import statistics

    times = {m: [] for m in methods}
    for _ in range(max(1, repeats)):
        for m in methods:
            times[m].append(process_start_time(m, workers))
    return {m: {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t)} for m, t in times.items()}


# ---------------------------------------------------------------------------
# The seed's process-pool design vs labnet's
# ---------------------------------------------------------------------------


def encode_whole(data: bytes) -> bytes:
    """Worker function of the seed's design: base64 of a whole file at once."""
    return base64.b64encode(data)


def _peak_python_memory(fn):
    """``(fn(), peak bytes)``: the peak of Python's allocations (all threads, ``tracemalloc``) while
    ``fn`` ran, above what was allocated when it started."""
    import tracemalloc

    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        if started_here:
            tracemalloc.stop()


def seed_style_encode(path, pool) -> dict:
    """The seed's download path: read the whole file, ship it to a pool process, get it back encoded.

    ``pool`` is a started ``ProcessPoolExecutor``.  Measured: the time, the peak of this process's
    Python memory while it ran (``held_in_memory``, ``tracemalloc``: the file, its pickled copy for
    the pool's pipe, the base64 that comes back), and the pickled sizes of what crosses the process
    boundary (``bytes_crossing_processes``: the argument there, the result back).
    """
    import pickle

    def run():
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            data = f.read()
        t_read = time.perf_counter()
        encoded = pool.submit(encode_whole, data).result()
        return data, encoded, t0, t_read, time.perf_counter()

    (data, encoded, t0, t_read, t_done), peak = _peak_python_memory(run)
    t_p0 = time.perf_counter()
    crossing = len(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    crossing += len(pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL))
    pickling = time.perf_counter() - t_p0
    return {"design": "seed: whole file -> process pool", "bytes": len(data), "seconds": t_done - t0,
            "read_s": t_read - t0, "pool_s": t_done - t_read, "pickle_s": pickling,
            "bytes_crossing_processes": crossing, "held_in_memory": peak}  # fmt: skip


def streamed_encode(path, chunk: int = 3 * 64 * 1024) -> dict:
    """labnet's way: the process serving the connection encodes as it reads, in bounded chunks.

    Measured like :func:`seed_style_encode` (time, peak Python memory); nothing crosses a process
    boundary because no other process is involved.
    """

    def run():
        enc = Encoder("b64")
        t0 = time.perf_counter()
        total = 0
        with open(path, "rb") as f:
            while block := f.read(chunk):
                enc.encode(block)
                total += len(block)
        enc.finish()
        return total, time.perf_counter() - t0

    (total, seconds), peak = _peak_python_memory(run)
    return {"design": "labnet: streamed in the worker", "bytes": total, "seconds": seconds, "read_s": 0.0,
            "pool_s": 0.0, "pickle_s": 0.0, "bytes_crossing_processes": 0, "held_in_memory": peak}  # fmt: skip


def design_file():
    """The file the design comparison encodes: the lab's largest test file in quick mode, 50 MB otherwise."""
    return make_test_file(data_dir("client_files"), lab_dimensions()["volumes"][-1] if quick_mode() else 50 * MB)


def compare_designs(path) -> tuple[dict, dict]:
    """:func:`seed_style_encode` on a started ``spawn`` pool of 2 (as the seed's server had one running),
    then :func:`streamed_encode`, on the same file."""
    import multiprocessing

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(square, range(2)))  # start the pool first, as the seed's server did
        seed_row = seed_style_encode(path, pool)
    return seed_row, streamed_encode(path)


def process_lesson_setup() -> tuple:
    """The process-pool notebook's dimensions: ``(clients, server workers, volume label, MANY)`` -- the lab's
    pools (small in quick mode), the largest quick file or the assignment's smallest, and a 'many'
    clients count for the hand-over demonstration."""
    dims = lab_dimensions()
    volume = size_label(dims["volumes"][-1] if quick_mode() else dims["volumes"][0])
    return dims["clients"], dims["server_workers"], volume, max(dims["clients"][1], 2)


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
    ax2.set_ylabel("peak memory per transfer, measured (MB = 10^6 B)")
    ax2.set_title("...and the memory it needs per client")
    return fig


# ---------------------------------------------------------------------------
# Queueing: plots of stress runs (labnet.measure.stress results)
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
