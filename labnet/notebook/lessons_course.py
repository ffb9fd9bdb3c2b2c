"""The course's reference server, measured: its framing (``recv(32)`` per request) and its ``listen(1)``.

The course's reference server (rm77/progjar, folder progjar4a, ``file_server.py``) accepts a
connection, hands it to a thread of its own, and that thread reads ``recv(32)`` and answers each
32-byte chunk as one whole request, with one JSON reply ended by ``\\r\\n\\r\\n``.  Its listening
socket has a backlog of 1.  The student-style server
:mod:`labnet.notebook.students.course_recv32_server` is written that way; this module drives it
over real sockets and reports what happened, for notebook 01-framing (and the backlog measurement
for the thread-pool notebook):

* :func:`recv32_upload_demo` -- one ``UPLOAD`` with content sent to it: how many replies came back,
  what was stored, against what was sent;
* :func:`reads_of` / :func:`correct_reader_demo` -- the same request read off a real socket in 32-byte
  pieces and given to labnet's ``course`` :class:`~labnet.protocol.dialects.course_request.RequestParser`:
  one request, the whole content;
* :func:`queue_capacity` -- how many connections a listener that never accepts lets complete (Linux
  queues ``backlog + 1``: measured, not assumed);
* :func:`measure_backlog` -- ``clients`` simultaneous connects (each then one ``LIST``) against the
  reference-shaped server listening with each backlog, repeated; :func:`backlog_summary` reduces them
  to counts and medians; :func:`plot_backlog` draws every client's time.

Imports the notebook layer's :mod:`labnet.notebook.own_server` (which starts students' servers under
supervision) and the protocol; must not import matplotlib at import time, nor the server package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import select
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from labnet.notebook import own_server
from labnet.protocol.dialects import course_request, get_profile
from labnet.protocol.dialects.events import CLOSED, NEED_DATA, Data, Request, RequestEnd

SERVER = "course_recv32_server"
END = b"\r\n\r\n"
REFERENCE_READ = 32  # the reference server's recv() size
SLOW_CONNECT = 0.5  # seconds: a connect slower than this waited for a SYN retry (the first comes after 1 s)


@contextmanager
def reference_like(backlog: int = 1, workers: int = 60, host: str = "127.0.0.1"):
    """The reference-shaped server (:mod:`~labnet.notebook.students.course_recv32_server`), supervised, on a
    free port, serving a new temporary folder: yields its ``own_server.Started`` (``host``, ``port``,
    ``root``); stops it and removes the folder on the way out, also on an error."""
    root = Path(tempfile.mkdtemp(prefix="labnet-recv32-"))
    command = (f"{sys.executable} -m labnet.notebook.students.{SERVER} --host {{host}} --port {{port}} "
               f"--workers {int(workers)} --root {{root}} --backlog {int(backlog)}")  # fmt: skip
    started = None
    try:
        started = own_server.start_command(command, root=root, host=host, cwd=own_server.PROJECT)
        yield started
    finally:
        if started is not None:
            started.supervised.stop()
        shutil.rmtree(root, ignore_errors=True)


def demo_content(size: int = 300) -> bytes:
    """A small text file: readable when it shows up cut short."""
    line = b"The quick brown fox jumps over the lazy dog. "
    return (line * (size // len(line) + 1))[:size]


def upload_bytes(name: str, content: bytes) -> bytes:
    """A ``course`` UPLOAD as students send it: verb, name, the whole file's base64, the blank line."""
    return f"UPLOAD {name} ".encode() + base64.b64encode(content) + END


def _exchange(address, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request``, close our sending side, read every reply until the server closes."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
    return bytes(got)


def split_replies(data: bytes) -> list[dict]:
    """The JSON replies in ``data``, each ended by ``\\r\\n\\r\\n`` (JSON escapes CR and LF, so the first
    ``\\r\\n\\r\\n`` ends each one)."""
    return [json.loads(part) for part in data.split(END) if part.strip()]


def recv32_upload_demo(name: str = "note.txt", content: bytes | None = None, started=None) -> dict:
    """Upload ``content`` to the reference-shaped server; measure the outcome.

    ``started``: a server from :func:`reference_like`; by default one is started for this call
    and stopped after it.

    Returns ``{request_bytes, reads_of_32, replies, ok_replies, error_replies, sent_bytes, stored_bytes,
    stored_matches, first_reply}``: ``stored_bytes`` is the size of ``root/name`` afterwards (None: no file).
    """
    content = demo_content() if content is None else content
    request = upload_bytes(name, content)
    with ExitStack() as stack:
        if started is None:
            started = stack.enter_context(reference_like(workers=4))
        replies = split_replies(_exchange((started.host, started.port), request))
        stored = Path(started.root) / name
        stored_bytes = stored.stat().st_size if stored.is_file() else None
        stored_matches = stored_bytes is not None and stored.read_bytes() == content
    return {"request_bytes": len(request), "reads_of_32": -(-len(request) // REFERENCE_READ),
            "replies": len(replies), "ok_replies": sum(r.get("status") == "OK" for r in replies),
            "error_replies": sum(r.get("status") != "OK" for r in replies), "sent_bytes": len(content),
            "stored_bytes": stored_bytes,
            "stored_matches": stored_matches,
            "first_replies": replies[:3]}  # fmt: skip


def reads_of(data: bytes, size: int = REFERENCE_READ, timeout: float = 10.0) -> list[bytes]:
    """What ``recv(size)`` returns, call after call, when ``data`` is sent over real loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()[:2], timeout=timeout) as tx:
            rx, _ = listener.accept()
            with rx:
                rx.settimeout(timeout)
                tx.sendall(data)
                tx.shutdown(socket.SHUT_WR)
                reads = []
                while chunk := rx.recv(size):
                    reads.append(chunk)
    return reads


def correct_reader_demo(name: str = "note.txt", content: bytes | None = None, size: int = REFERENCE_READ) -> dict:
    """The same UPLOAD, read in ``size``-byte pieces off a real socket and given to labnet's ``course`` parser.

    Returns ``{reads, requests, ended_by, name, content_bytes, content_matches}``.
    """
    content = demo_content() if content is None else content
    reads = reads_of(upload_bytes(name, content), size)
    parser = course_request.RequestParser(get_profile("course"))
    requests, ends, got = [], [], bytearray()
    for piece in [*reads, b""]:  # b"": the client closed its side
        parser.receive_data(piece)
        while (event := parser.next_event()) not in (NEED_DATA, CLOSED):
            if isinstance(event, Request):
                requests.append(event)
            elif isinstance(event, Data):
                got += event.data
            elif isinstance(event, RequestEnd):
                ends.append(event.ended_by)
    return {"reads": len(reads), "requests": len(requests), "ops": [r.op for r in requests], "ended_by": ends,
            "name": requests[0].name if requests else None, "content_bytes": len(got),
            "content_matches": hashlib.sha256(got).digest() == hashlib.sha256(content).digest()}  # fmt: skip


# ---------------------------------------------------------------------------
# The listen backlog
# ---------------------------------------------------------------------------


def queue_capacity(backlog: int, tries: int | None = None, settle: float = 0.3) -> int:
    """How many connects complete against a listener with ``backlog`` that never calls ``accept()``.

    Non-blocking connects, all at once; after ``settle`` seconds, count those the kernel completed
    (the handshake is done by the kernel; ``accept()`` only takes them off the queue).  On Linux this
    is ``backlog + 1``; the others wait for SYN retries.
    """
    tries = tries or backlog + 6
    with socket.create_server(("127.0.0.1", 0), backlog=backlog) as listener:
        address = listener.getsockname()[:2]
        socks = []
        try:
            for _ in range(tries):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.setblocking(False)
                s.connect_ex(address)
            time.sleep(settle)
            _, writable, _ = select.select([], socks, [], 0)
            return sum(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for s in writable)
        finally:
            for s in socks:
                s.close()


def _served_after(address, barrier: threading.Barrier, timeout: float) -> float | None:
    """Seconds from connect() to the end of a LIST reply; None if it did not come within ``timeout``."""
    barrier.wait()
    began = time.perf_counter()
    deadline = began + timeout
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(b"LIST" + END)
            got = b""
            while END not in got:
                sock.settimeout(max(0.01, deadline - time.perf_counter()))
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                got += chunk
    except OSError:  # TimeoutError included: still waiting for a SYN retry
        return None
    return time.perf_counter() - began


def connect_burst(address, clients: int = 50, timeout: float = 2.5) -> list[float | None]:
    """``clients`` threads connect at the same instant, each sends ``LIST`` and reads the reply.

    Per client: seconds until its reply, or None (no reply within ``timeout``: its SYN was dropped
    twice -- Linux retries after 1 s and 3 s).
    """
    barrier = threading.Barrier(clients)
    out: list[float | None] = [None] * clients

    def one(i):
        out[i] = _served_after(address, barrier, timeout)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return out


def measure_backlog(backlogs=(1, 128), clients: int = 50, repeats: int = 3, timeout: float = 2.5,
                    progress=None) -> list[dict]:  # fmt: skip
    """For each backlog, start the reference-shaped server (thread per connection, as the reference) and
    run :func:`connect_burst` ``repeats`` times.  Rows ``{backlog, repeat, clients, times}``
    (``times``: seconds per client, None for no reply in ``timeout``).  ``progress``: called after each run.
    """
    rows = []
    for backlog in backlogs:
        with reference_like(backlog=backlog, workers=clients + 10) as started:
            for repeat in range(repeats):
                times = connect_burst((started.host, started.port), clients, timeout)
                rows.append({"backlog": backlog, "repeat": repeat, "clients": clients, "times": times})
                if progress:
                    progress()
    return rows


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def backlog_summary(rows: list[dict], slow: float = SLOW_CONNECT) -> list[dict]:
    """Per backlog: over all repeats, clients ``slow`` (reply after more than ``slow`` s),
    ``no_reply`` (None), the median and p95 of the replies' times; and per repeat the count of slow
    or missing clients (``slow_or_missing_per_run``: its spread across runs)."""
    out = []
    for backlog in dict.fromkeys(r["backlog"] for r in rows):
        runs = [r for r in rows if r["backlog"] == backlog]
        times = [t for r in runs for t in r["times"]]
        served = [t for t in times if t is not None]
        per_run = [sum(t is None or t > slow for t in r["times"]) for r in runs]
        out.append({"backlog": backlog, "runs": len(runs), "clients": len(times),
                    "slow": sum(t > slow for t in served), "no_reply": times.count(None),
                    "median_s": statistics.median(served) if served else None, "p95_s": _p95(served),
                    "slow_or_missing_per_run": per_run})  # fmt: skip
    return out


def plot_backlog(rows, slow: float = SLOW_CONNECT):
    """One panel per backlog: each client's time to its reply, every run (dots), the ``slow`` line, and the
    clients with no reply drawn at the top (x)."""
    from matplotlib.figure import Figure

    backlogs = list(dict.fromkeys(r["backlog"] for r in rows))
    fig = Figure(figsize=(4.2 * len(backlogs), 3.4), layout="constrained")
    axes = fig.subplots(1, len(backlogs), sharey=True, squeeze=False)[0]
    top = max([t for r in rows for t in r["times"] if t is not None] + [slow * 2])
    for ax, backlog in zip(axes, backlogs, strict=True):
        for r in (r for r in rows if r["backlog"] == backlog):
            served = [(i, t) for i, t in enumerate(r["times"]) if t is not None]
            missing = [i for i, t in enumerate(r["times"]) if t is None]
            ax.scatter([i for i, _ in served], [t for _, t in served], s=10, label=f"run {r['repeat'] + 1}")
            ax.scatter(missing, [top * 1.1] * len(missing), marker="x", color="red", s=18)
        ax.axhline(slow, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_title(f"listen({backlog}): {rows[0]['clients']} connects at once")
        ax.set_xlabel("client")
    axes[0].set_ylabel("seconds to the LIST reply (x: none)")
    axes[0].legend(fontsize="small")
    return fig
