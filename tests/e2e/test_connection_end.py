"""How connections and servers end (issue 10): QUIT keeps what was already answered, and
SIGHUP (a closed terminal) stops every model as cleanly as SIGTERM.

QUIT: when the client has sent more bytes after ``QUIT`` (pipelined junk, a confused
script), closing at once with that input unread makes the kernel answer with a reset.
The client's reading then ends in ``ECONNRESET`` instead of the end of the replies, and
replies not yet delivered (on some systems: not yet read) are lost, ``OK BYE`` and those
before it.  The server must half-close and drain first.
"""

from __future__ import annotations

import os
import signal
import socket

import pytest
from faultproxy import Wire, folder_state, temp_files, wait_for

from labnet.client import Client
from labnet.procutil import alive

pytestmark = pytest.mark.timeout(90)

QUIT_ROUNDS = 20
# More than the server takes in one read (labnet.transport.channel.RECV_SIZE, 256 KiB), so part of it
# is still in the server's kernel buffer, unread, when QUIT has been answered.  (A few KB would come
# in the same read as QUIT and be dropped in user space: no reset, the bug would not show.)
JUNK = b"junk after quit " * (64 * 1024)  # 1 MiB


def _read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (the socket timeout bounds each wait)."""
    out = b""
    while len(out) < limit:
        data = sock.recv(65536)
        if not data:
            return out
        out += data
    raise AssertionError(f"more than {limit} bytes before the server closed")


def test_quit_with_input_after_it_keeps_every_reply(start_server, model, client_dirs):
    files, _ = client_dirs
    (files / "a.txt").write_bytes(b"hello\n")
    srv = start_server(model, workers=3)  # each round finds a free worker: nothing waits in the queue
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "a.txt")
    want = b"OK LABNET 1 READY\r\nOK 1 files\r\n6 a.txt\r\nOK BYE\r\n"
    for i in range(QUIT_ROUNDS):
        with socket.create_connection(srv.address, timeout=10) as s:
            try:
                s.sendall(b"LIST\r\nQUIT\r\n" + JUNK)  # one send: the junk is behind QUIT on the wire
                got = _read_all(s)
            except (ConnectionResetError, BrokenPipeError) as exc:
                pytest.fail(f"round {i}: the server reset the connection ({exc}): replies not yet read are lost")
        assert got == want, f"round {i}: {got!r}"
    with Client(*srv.address, timeout=10) as c:
        snap = c.stats()
    assert snap["verbs"]["QUIT"]["ok"] == QUIT_ROUNDS + 1  # and the Client's own QUIT (the upload)
    assert snap["verbs"]["INVALID"]["failed"] == 0  # the junk was drained, never taken as requests


GRACE = 1.0
EXIT_WITHIN = GRACE + 3.0  # a bound for the poll (abort, join, a loaded machine), not a measurement


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_stops_every_model_cleanly(start_server, model):
    """The terminal closes during an upload paused mid-body: every process of the server gets
    SIGHUP (as a terminal's whole job would).  The server stops as on SIGTERM: the upload is
    told ``ERR SHUTDOWN`` when the grace period ends, its temporary file is removed, the server
    exits with status 0, and no process is left."""
    srv = start_server(model, workers=2, grace=GRACE, idle_timeout=60)
    body = os.urandom(400_000)
    half = len(body) // 2
    w = Wire(srv.address)
    try:
        w.send(f"UPLOAD paused.bin {len(body)} raw\r\n".encode())
        assert w.line() == f"OK SEND {len(body)}"
        w.send(body[:half])
        with Client(*srv.address, timeout=10) as c:  # the second worker answers while the first waits
            wait_for(lambda: c.stats()["bytes_in"] >= half, 10, "the server to receive half of the body")
        assert len(temp_files(srv.root)) == 1, "the upload should be in a temporary file"
        pids = srv.pids()
        assert len(pids) == (3 if model == "process" else 1)
        # Not os.killpg: the test runner is in the server's process group.
        for pid in pids:
            os.kill(pid, signal.SIGHUP)
        wait_for(lambda: srv.proc.poll() is not None, EXIT_WITHIN, "the server to exit after SIGHUP")
        end_of_upload = w.read_to_eof()
    finally:
        w.close()
    assert srv.proc.returncode == 0, f"exit status {srv.proc.returncode}; log:\n{srv.log()[-2000:]}"
    assert temp_files(srv.root) == []
    assert folder_state(srv.root) == {}
    assert end_of_upload.startswith(b"ERR SHUTDOWN "), end_of_upload[:200]  # ended by its worker, not by a death
    wait_for(lambda: not [p for p in pids if alive(p)], 5, "every process of the server to be gone")
    log = srv.log()
    assert "SIGHUP: stopping" in log
    assert "killed by" not in log, log[-2000:]  # no worker died of the signal
