"""Timeouts with absolute deadlines (issue 5): idle connections are closed at the deadline with
``ERR TIMEOUT`` and their worker released; a request line must be complete by its deadline
however it trickles in; a transfer that keeps making progress is never cut off, however slow.

Tolerances are derived from the configured idle timeout and kept generous (machines are
noisy); the lower bounds are exact because the server's clock starts after our connect.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import threading
import time

import pytest
from faultproxy import FaultProxy, Wire, folder_state, temp_files

from labnet.client import Client

pytestmark = pytest.mark.timeout(60)

IDLE = 1.0
LATE = 2.5  # seconds after the deadline we still accept (a loaded 2-core machine)


def _queued_client(address, result: dict) -> threading.Thread:
    """Connect a client in the background; it waits for a worker (recording when it got one)."""

    def run():
        try:
            c = Client(*address, timeout=10, wait_timeout=15)
            c.connect()
            result["served_at"] = time.monotonic()
            result["list"] = c.list()
            c.quit()
        except Exception as exc:  # reported by the test
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_idle_client_closed_at_deadline_and_worker_released(start_server, model):
    srv = start_server(model, workers=1, idle_timeout=IDLE, max_waiting=4)
    t0 = time.monotonic()  # before connecting: the server's idle clock starts later than this
    idle = Wire(srv.address, timeout=IDLE + LATE + 5)
    assert idle.greeting == "OK LABNET 1 READY"
    queued: dict = {}
    waiter = _queued_client(srv.address, queued)  # the only worker is ours: this one waits

    line = idle.line()  # blocks until the server speaks: it must be the timeout
    closed_after = time.monotonic() - t0
    assert line.startswith("ERR TIMEOUT"), line
    assert idle.read_to_eof() == b"", "server kept the connection open after ERR TIMEOUT"
    idle.close()
    assert closed_after >= IDLE * 0.98, f"closed early: after {closed_after:.3f} s, idle timeout {IDLE} s"
    assert closed_after <= IDLE + LATE, f"closed late: after {closed_after:.3f} s, idle timeout {IDLE} s"

    waiter.join(15)
    assert "error" not in queued, queued.get("error")
    assert queued["list"] == []
    released_after = queued["served_at"] - t0
    assert released_after <= IDLE + LATE, f"worker released only after {released_after:.3f} s"
    print(f"\n[{model}] idle {IDLE} s: closed after {closed_after:.3f} s, queued client served after "
          f"{released_after:.3f} s")  # fmt: skip
    with Client(*srv.address, timeout=10) as c:
        assert c.list() == []
        assert c.stats()["timeouts"] == 1
    assert folder_state(srv.root) == {}


def test_request_line_deadline_is_absolute(start_server, model):
    """A request line trickled one byte every IDLE/5 s never completes: it is cut at the deadline."""
    srv = start_server(model, workers=1, idle_timeout=IDLE)
    t0 = time.monotonic()
    w = Wire(srv.address, timeout=IDLE + LATE + 5)
    reply = b""
    sent = 0
    end = t0 + IDLE + LATE + 2
    try:
        while time.monotonic() < end and b"\n" not in reply:
            readable, _, _ = select.select([w.sock], [], [], IDLE / 5)
            if readable:
                data = w.sock.recv(4096)
                if not data:
                    break
                reply += data
                continue
            w.send(b"LIST"[sent % 4 : sent % 4 + 1])  # "LISTLISTL..." with no end of line
            sent += 1
    except (BrokenPipeError, ConnectionResetError):
        pass
    cut_after = time.monotonic() - t0
    w.close()
    assert reply.startswith(b"ERR TIMEOUT"), reply
    assert sent >= 4, "the trickle never got going"
    assert IDLE * 0.98 <= cut_after <= IDLE + LATE, f"request line cut after {cut_after:.3f} s (deadline {IDLE} s)"
    with Client(*srv.address, timeout=10) as c:
        assert c.list() == []
        snap = c.stats()
    assert snap["timeouts"] == 1
    assert folder_state(srv.root) == {}


@pytest.mark.parametrize("size", [300_000, 12_000_000])
def test_stalled_download_releases_worker(start_server, model, client_dirs, size):
    """A client that asks for a file and never reads it holds its worker only until the idle limit.

    12 MB is more than the kernel buffers on both sides hold: the server's send stalls.  300 KB
    may fit: then the server waits for a request while its reply sits unacknowledged, and
    that output stops shrinking, so the connection is idle after all (at most two idle periods).
    """
    files, _ = client_dirs
    data = os.urandom(size)
    (files / "big.bin").write_bytes(data)
    srv = start_server(model, workers=1, idle_timeout=IDLE)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "big.bin", encoding="raw")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(10)
    stalled.connect(srv.address)
    try:
        stalled.sendall(b"DOWNLOAD big.bin raw\r\n")
        t0 = time.monotonic()
        queued: dict = {}
        _queued_client(srv.address, queued).join(IDLE + LATE + 10)
        assert "error" not in queued, queued.get("error")
        released_after = queued["served_at"] - t0
        assert queued["list"] == [("big.bin", len(data))]
        # Generous: the stall begins once both kernels' buffers are full, then IDLE s (or 2 x IDLE) more.
        assert released_after <= 2 * IDLE + LATE, f"worker released only after {released_after:.3f} s"
        print(f"\n[{model}] stalled {size} B download: worker released after {released_after:.3f} s (idle {IDLE} s)")
    finally:
        stalled.close()
    with Client(*srv.address, timeout=10) as c:
        assert c.list() == [("big.bin", len(data))]
        snap = c.stats()
    assert snap["timeouts"] == 1
    if size > 8_000_000:  # cannot all be in kernel buffers: the server was cut off while sending
        assert snap["verbs"]["DOWNLOAD"]["failed"] == 1
    assert folder_state(srv.root) == {"big.bin": data}


@pytest.mark.slow
def test_slow_but_progressing_transfers_survive(start_server, model, client_dirs):
    """Through a throttling proxy each transfer takes about twice the idle limit, and succeeds."""
    files, downloads = client_dirs
    up = os.urandom(3_000_000)
    # Larger than the server's send buffer (up to 4 MB): its send really waits, and the last
    # ~4 MB are still on their way to the client for ~2 s after the server's last send returned.
    down = os.urandom(6_000_000)
    (files / "up.bin").write_bytes(up)
    (files / "down.bin").write_bytes(down)
    srv = start_server(model, workers=2, idle_timeout=IDLE)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "down.bin", encoding="raw")
    with FaultProxy(srv.address, up_rate=2_000_000, down_rate=2_000_000, bufsize=16384) as proxy:
        with Client(*proxy.address, timeout=10) as c:
            r_up = c.upload(files / "up.bin", encoding="raw")
            r_down = c.download("down.bin", downloads, encoding="raw")
            assert c.list() == [("down.bin", len(down)), ("up.bin", len(up))]  # same connection, still open
    assert r_up.seconds > IDLE * 1.3, f"upload was not slow enough to prove anything ({r_up.seconds:.2f} s)"
    assert r_down.seconds > IDLE * 1.3, f"download was not slow enough to prove anything ({r_down.seconds:.2f} s)"
    assert r_up.sha256 == hashlib.sha256(up).hexdigest()
    assert (downloads / "down.bin").read_bytes() == down
    print(f"\n[{model}] idle {IDLE} s: slow upload {r_up.seconds:.2f} s, slow download {r_down.seconds:.2f} s")
    with Client(*srv.address, timeout=10) as c:
        assert c.list() == [("down.bin", len(down)), ("up.bin", len(up))]
        assert c.stats()["timeouts"] == 0
    assert folder_state(srv.root) == {"down.bin": down, "up.bin": up}
    assert temp_files(srv.root) == []


STEADY_CHUNK = 64 * 1024
# One read of STEADY_CHUNK every period: 3.2, 2.4 and 4.1 MB/s.  Before the fix the server looked
# at its unacknowledged output once per idle period, counted from when its last send() returned
# (with ~2.9 MB still queued), and closed the connection when that look fell in the few tenths of
# a second between the client's kernel acknowledging the last byte and the client reading it.
# Measured here: every run at 3.2 MB/s, none at 2.6 or 4.1; the other rates move that moment for
# machines whose buffers hold more or less than this one's.
STEADY_PERIODS = (0.020, 0.027, 0.016)


def _read_steadily(w: Wire, n: int, chunk: int, period: float) -> str:
    """Read exactly ``n`` body bytes, one ``recv(chunk)`` every ``period`` s on a fixed schedule
    (a steady reader, never a pause); return their SHA-256."""
    digest = hashlib.sha256(w.buf[:n])
    got, w.buf = min(len(w.buf), n), w.buf[n:]
    due = time.monotonic()
    while got < n:
        due += period
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        data = w.sock.recv(min(chunk, n - got))
        assert data, f"server closed the connection after {got} of {n} body bytes"
        digest.update(data)
        got += len(data)
    return digest.hexdigest()


@pytest.mark.slow
def test_steady_slow_reader_is_never_idle(start_server, model, client_dirs):
    """A client reading a long download steadily is never closed as idle, nor is its next request.

    The body is several times what the kernel buffers hold, so the server's last send() returns
    while ~3 MB of reply are still on their way, about a second of reading.  The client's 1 MiB
    receive buffer (SO_RCVBUF 512 KiB, doubled by the kernel) holds what its kernel has already
    acknowledged but the client has not read yet: a few tenths of a second during which the
    server sees no unacknowledged output and, before the fix, no activity either.
    """
    files, _ = client_dirs
    data = os.urandom(6_000_000)
    (files / "big.bin").write_bytes(data)
    srv = start_server(model, workers=2, idle_timeout=IDLE)  # a spare worker: nothing waits in the queue
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "big.bin", encoding="raw")
    want = hashlib.sha256(data).hexdigest()
    with Wire(srv.address, timeout=10, rcvbuf=512 * 1024) as w:
        before = "no download"
        for period in STEADY_PERIODS:
            w.send(b"DOWNLOAD big.bin raw\r\n")  # the next request, sent as soon as the last reply was read
            header = w.line()
            assert header == f"OK {len(data)} raw {len(data)}", f"request after {before}: {header!r}"
            before = f"a download read every {period} s"
            t0 = time.monotonic()
            assert _read_steadily(w, len(data), STEADY_CHUNK, period) == want
            assert w.line() == f"SHA256 {want}"
            print(f"\n[{model}] read {len(data)} B in {time.monotonic() - t0:.2f} s, one {STEADY_CHUNK} B read "
                  f"every {period} s (idle timeout {IDLE} s)")  # fmt: skip
        w.send(b"STATS\r\n")
        reply = w.line()
    assert reply.startswith("OK {"), f"request after {before}: {reply!r}"
    snap = json.loads(reply[3:])
    assert snap["timeouts"] == 0
    assert (snap["verbs"]["DOWNLOAD"]["ok"], snap["verbs"]["DOWNLOAD"]["failed"]) == (len(STEADY_PERIODS), 0)
