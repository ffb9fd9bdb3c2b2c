"""Notebook 08 (measure your own server): start a student's server safely, read its wire, measure its memory.

What it holds:

* :func:`start_student` starts one of the student-style examples
  (``labnet.notebook.students.<name>``) on a free port, in a temporary
  folder, under :class:`labnet.measure.supervisor.Supervised` (its own
  process group, its whole tree stopped by ``stop()``, at exit, or when the
  kernel dies); :func:`start_command` does the same for *your* command line
  (``{port}`` and ``{root}`` in it are filled in).  Both return a
  :class:`Started` ``(supervised, host, port, root)`` and remember it, so
  :func:`stop_all` can stop every server this kernel started here and say
  which processes are still alive (none, it must be).
* :func:`fetch_wire` sends one request over a plain socket and returns every
  byte the server sent until it closed: what a student's client would get;
  :func:`paced_upload` sends a ``course`` upload in pieces with pauses (a slow
  network) and returns the server's own reply; :func:`stored_sizes` says what
  a server stored for each client of an upload run.
* :func:`peak_after_download` is one point of the memory curve: a fresh
  server (a student example, or labnet's own), one download of a file of
  ``size`` bytes through ``labnet.measure.stress``, and that server's peak
  resident memory (``Supervised.peak_tree_rss``, or the sum of
  ``BackgroundServer.peak_rss()``).
* :func:`plot_memory` and :func:`plot_throughput` draw the notebook's two
  figures (matplotlib is imported inside them only).

Nothing here imports matplotlib, ipywidgets or IPython at import time.
"""

from __future__ import annotations

import base64
import re
import select
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from labnet.config import DEFAULT_HOST, parse_size, size_label
from labnet.errors import UsageError
from labnet.measure import stress
from labnet.measure.files import data_dir, make_test_file, test_file_name
from labnet.measure.launcher import BackgroundServer
from labnet.measure.supervisor import ServerDidNotStart, Supervised
from labnet.procutil import alive
from labnet.protocol.dialects import course_request, get_profile
from labnet.protocol.names import check_name

STUDENTS = "labnet.notebook.students"
PROJECT = Path(__file__).resolve().parents[2]  # `python -m labnet...` finds this labnet from here
LISTENING = re.compile(r"^listening on (\S+):(\d+)\s*$", re.M)
START_TIMEOUT = 30.0


class Started(NamedTuple):
    """A supervised server: unpack it as ``sup, host, port, root`` (root: its folder, None when unknown)."""

    supervised: Supervised
    host: str
    port: int
    root: Path | None


_STARTED: list[Started] = []
_TEMP_ROOTS: list[Path] = []


def _new_root(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"labnet-{prefix}-"))
    _TEMP_ROOTS.append(root)
    return root


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nobody listens on now (the OS's choice); a server started right after can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _started(sup: Supervised, host: str, port: int | None, root: Path | None, timeout: float) -> Started:
    """Wait until ``sup`` listens (on ``port``, or the port its ``listening on`` line names); stop it on failure."""
    try:
        if port is None:
            end = time.monotonic() + timeout
            while not (found := LISTENING.search(sup.tail(50))):
                if not sup.pids() or time.monotonic() > end:
                    raise ServerDidNotStart(f"no 'listening on HOST:PORT' line within {timeout:g} s; its last "
                                            f"lines:\n{sup.tail()}", None, sup.tail())  # fmt: skip
                time.sleep(0.02)
            port = int(found.group(2))
        sup.wait_listening(host, port, timeout=timeout)
    except BaseException:
        sup.stop()
        raise
    started = Started(sup, host, port, root)
    _STARTED.append(started)
    return started


def start_student(name: str, workers: int = 5, root=None, host: str = DEFAULT_HOST, memory_limit=None,
                  timeout: float = START_TIMEOUT) -> Started:  # fmt: skip
    """Start the example ``labnet.notebook.students.<name>`` on a free port, serving ``root`` (default: a new
    temporary folder, removed by :func:`stop_all`).  Returns once it accepts connections."""
    if not re.fullmatch(r"[a-z_]+", name) or not (PROJECT / "labnet" / "notebook" / "students" / f"{name}.py").is_file():
        raise UsageError(f"no student example {name!r} in {STUDENTS}")
    root = Path(root) if root is not None else _new_root(name)
    argv = [sys.executable, "-m", f"{STUDENTS}.{name}", "--host", host, "--port", "0", "--workers", str(workers),
            "--root", str(root)]  # fmt: skip
    sup = Supervised(argv, cwd=PROJECT, memory_limit=memory_limit).start()
    return _started(sup, host, None, root, timeout)


def start_command(command: str, root=None, host: str = DEFAULT_HOST, port: int | None = None, cwd=None,
                  memory_limit=None, timeout: float = START_TIMEOUT) -> Started:  # fmt: skip
    """Start *your* server: ``command`` is a shell command line in which ``{port}``, ``{host}`` and ``{root}``
    are filled in (port: ``port``, else a free one; root: ``root``, else a new temporary folder when the
    command names ``{root}``, else None: its folder is its own business).  Returns once ``host:port``
    accepts connections (``ServerDidNotStart`` with the command's last lines otherwise)."""
    port = port or free_port(host)
    if root is not None:
        root = Path(root).resolve()
    elif "{root}" in command:
        root = _new_root("mine")
    line = command.format(port=port, host=host, root=shlex.quote(str(root)) if root is not None else None)
    sup = Supervised(line, cwd=cwd, memory_limit=memory_limit).start()
    return _started(sup, host, port, root, timeout)


def started() -> list[Started]:
    """Every server started here so far (stopped ones included)."""
    return list(_STARTED)


def stop_all() -> list[int]:
    """Stop every server started here, remove the temporary folders made for them; return the PIDs of
    their processes still alive afterwards (an empty list: nothing was left behind)."""
    left = []
    for item in _STARTED:
        result = item.supervised.stop()
        seen = result.pids_seen if result is not None else ()
        left += [pid for pid in seen if alive(pid)]
    for root in _TEMP_ROOTS:
        shutil.rmtree(root, ignore_errors=True)
    _TEMP_ROOTS.clear()
    return sorted(left)


def fetch_wire(host: str, port: int, request: bytes, timeout: float = 30.0, limit: int = 1 << 30) -> bytes:
    """Send ``request`` on a plain socket, then read until the server closes: every byte it sent, as it sent
    them (at most ``limit``).  For one-request-per-connection dialects (``sentinel``: the server closes)."""
    parts, total = [], 0
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        while total < limit and (chunk := s.recv(1 << 20)):
            parts.append(chunk)
            total += len(chunk)
    return b"".join(parts)


def paced_upload(host: str, port: int, name: str, data: bytes, piece: int = 4000, pause: float = 0.02,
                 first_pause: float = 0.3, timeout: float = 30.0) -> tuple[bytes, int]:
    """A ``course`` upload as a slow network delivers it: the request line and ``piece`` base64 characters at a
    time, with pauses; sending stops once the server has answered (it closes then).  ``(the server's reply,
    base64 characters sent)``: its own words, read with a plain socket."""
    framing = course_request.upload_request(get_profile("course"), check_name(name), len(data))
    b64, sent, reply = base64.b64encode(data), 0, b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(framing.head + b64[:piece])
        sent = min(piece, len(b64))
        time.sleep(first_pause)
        while not select.select([s], [], [], 0)[0]:
            if sent >= len(b64):
                s.sendall(framing.tail)
                break
            s.sendall(b64[sent:sent + piece])
            sent = min(sent + piece, len(b64))
            time.sleep(pause)
        while not reply.endswith(b"\r\n\r\n") and (chunk := s.recv(65536)):
            reply += chunk
    return reply, sent


def stored_sizes(run: stress.StressResult, root) -> list[int | None]:
    """For an upload run against a student's server: the size of what the server stored for each client
    (``root/w07_<name>``, the name each client uploaded to), in record order; None where no file is."""
    width = max(2, len(str(run.summary["clients"] - 1)))
    paths = [Path(root) / f"w{r.worker:0{width}d}_{run.config['name']}" for r in run.records]
    return [p.stat().st_size if p.is_file() else None for p in paths]


def peak_after_download(size, student: str | None = None, workers: int = 2) -> tuple[int, stress.StressResult]:
    """``(peak RSS in bytes, the run)`` of a fresh server that served one download of a ``size``-byte file.

    ``student``: the example to measure (dialect ``course`` or ``sentinel``, from its name), its peak
    being ``Supervised.peak_tree_rss`` (every process of its tree); None: labnet's own thread server,
    its peak the sum of ``BackgroundServer.peak_rss()`` over its processes.  The file is put in the
    server's folder beforehand, so the peak is the download's (and the server's start-up's)."""
    size = parse_size(size)
    local = make_test_file(data_dir("client_files"), size)
    root = _new_root("memory")
    common = dict(progress=False, keep_downloads=False, time_limit=600, timeout=120)
    try:
        if student is not None:
            dialect = "sentinel" if student.startswith("sentinel") else "course"
            sup, host, port, _ = start_student(student, workers=workers, root=root)
            try:
                run = stress.run("download", size, 1, "thread", host, port, dialect=dialect, server_root=root,
                                 **common)  # fmt: skip
            finally:
                result = sup.stop()
            return result.peak_tree_rss, run
        shutil.copyfile(local, root / test_file_name(size))  # on the server before it starts
        with BackgroundServer("thread", workers=workers, root=root) as ours:
            run = stress.run("download", size, 1, "thread", *ours.address, **common)
            peak = sum(ours.peak_rss().values())
        return peak, run
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if root in _TEMP_ROOTS:
            _TEMP_ROOTS.remove(root)


def plot_memory(rows: list[dict]):
    """Peak server memory (MB) against file size (MB), one line per server; ``rows``: dicts with
    ``size`` (bytes) and one key per server holding its peak in bytes.  Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    sizes = [r["size"] / 1e6 for r in rows]
    for key in (k for k in rows[0] if k != "size"):
        ax.plot(sizes, [r[key] / 1e6 for r in rows], marker="o", label=key)
    ax.set_xlabel("file size (MB, 10^6 bytes)")
    ax.set_ylabel("server peak RSS (MB)")
    ax.set_title("one download: server memory against file size")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_throughput(runs: dict):
    """Throughput per client (MB/s) side by side, one group of bars per client worker, one colour per server;
    ``runs``: label -> ``StressResult`` of the same stress cell.  A failed client shows as 0.  Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(runs))
    for i, (label, run) in enumerate(runs.items()):
        xs = [r.worker + (i - (len(runs) - 1) / 2) * width for r in run.records]
        mean = run.summary["throughput_mean_MBps"]
        ax.bar(xs, [r.throughput / 1e6 for r in run.records], width,
               label=f"{label} (mean {mean:.0f} MB/s)" if mean else f"{label} (no client ok)")  # fmt: skip
    any_run = next(iter(runs.values()))
    s = any_run.summary
    ax.set_xticks(range(s["clients"]), [f"w{i:02d}" for i in range(s["clients"])])
    ax.set_xlabel("client worker")
    ax.set_ylabel("throughput per client (MB/s)")
    ax.set_title(f"{s['op']} {size_label(s['size'])} x {s['clients']} clients ({s['pool']} pool)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig
