"""Graceful shutdown with transfers in flight (issue 5), for both server models.

SIGTERM arrives while five connections are open: an idle client (told ``ERR SHUTDOWN``
at once), an upload and a slow download that can finish within the grace period (they
do), and an upload and a slow download that cannot (they are aborted when the grace
period ends).  Then: the server exits within the grace period (plus a generous margin),
no process of it is left, no partial file and no temporary file exists, and a server
restarted on the folder lists exactly what it should.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time

import pytest
from faultproxy import FaultProxy, Wire, folder_state, temp_files, wait_for

from labnet.client import Client
from labnet.procutil import alive

pytestmark = pytest.mark.timeout(90)

GRACE = 3.0
MARGIN = 3.0  # exit allowed this long after the grace period (abort, join, a loaded machine)


def _download_in_thread(address, name, dest, result: dict) -> threading.Thread:
    def run():
        try:
            with Client(*address, timeout=30) as c:
                result["ok"] = c.download(name, dest, encoding="raw")
        except Exception as exc:
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_graceful_shutdown_with_transfers_in_flight(start_server, model, client_dirs, tmp_path):
    files, downloads = client_dirs
    quick_dest, slow_dest = downloads / "quick", downloads / "slow"
    quick_dest.mkdir()
    slow_dest.mkdir()
    root = tmp_path / "srv"
    root.mkdir()
    old, big, huge, fresh, doc_v2 = (os.urandom(n) for n in (50_000, 3_000_000, 8_000_000, 400_000, 400_000))
    (files / "doc.bin").write_bytes(old)
    (files / "big.bin").write_bytes(big)
    (files / "huge.bin").write_bytes(huge)  # more than socket buffers hold: the server is still sending it
    srv = start_server(model, workers=8, root=root, grace=GRACE, idle_timeout=60)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "doc.bin")
        c.upload(files / "big.bin", encoding="raw")
        c.upload(files / "huge.bin", encoding="raw")
    pids = srv.pids()
    assert len(pids) == (9 if model == "process" else 1)

    idle = Wire(srv.address)
    finishing = Wire(srv.address)  # an upload that will complete during the grace period
    finishing.send(f"UPLOAD fresh.bin {len(fresh)} raw\r\n".encode())
    assert finishing.line() == f"OK SEND {len(fresh)}"
    finishing.send(fresh[:200_000])
    stalled = Wire(srv.address)  # an upload (a new version of doc.bin) that never completes
    stalled.send(f"UPLOAD doc.bin {len(doc_v2)} raw\r\n".encode())
    assert stalled.line() == f"OK SEND {len(doc_v2)}"
    stalled.send(doc_v2[:200_000])
    quick_proxy = FaultProxy(srv.address, down_rate=4_000_000, bufsize=16384)  # 3 MB in ~0.75 s
    slow_proxy = FaultProxy(srv.address, down_rate=200_000, bufsize=16384)  # 8 MB in ~40 s: too slow
    quick, slow = {}, {}
    try:
        with Client(*srv.address, timeout=10) as c:
            wait_for(lambda: c.stats()["bytes_in"] >= len(old) + len(big) + len(huge) + 400_000, 10,
                     "the partial uploads")  # fmt: skip
        t_quick = _download_in_thread(quick_proxy.address, "big.bin", quick_dest, quick)
        t_slow = _download_in_thread(slow_proxy.address, "huge.bin", slow_dest, slow)
        wait_for(lambda: quick_proxy.forwarded["down"] > 100_000 and slow_proxy.forwarded["down"] > 100_000,
                 10, "both downloads to be under way")  # fmt: skip

        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        line = idle.line()
        told_after = time.monotonic() - t0
        assert line.startswith("ERR SHUTDOWN "), line
        assert told_after < GRACE, f"idle client told only after {told_after:.2f} s"
        with pytest.raises(ConnectionRefusedError):  # no new connections once stopping
            Client(*srv.address, timeout=5).connect()

        finishing.send(fresh[200_000:] + f"SHA256 {hashlib.sha256(fresh).hexdigest()}\r\n".encode())
        assert finishing.line().startswith("OK STORED fresh.bin ")
        t_quick.join(GRACE + MARGIN + 10)
        assert "error" not in quick, quick.get("error")
        assert (quick_dest / "big.bin").read_bytes() == big

        srv.proc.wait(GRACE + MARGIN + 10)
        exit_after = time.monotonic() - t0
        end_of_stalled = stalled.read_to_eof()
    finally:
        quick_proxy.close()
        slow_proxy.close()
        for w in (idle, finishing, stalled):
            w.close()
    t_slow.join(10)  # the proxy is closed: whatever the server had queued for it is gone too

    print(f"\n[{model}] grace {GRACE} s: idle client told after {told_after:.2f} s, exit after {exit_after:.2f} s")
    assert srv.proc.returncode == 0, srv.log()[-2000:]
    assert GRACE * 0.9 <= exit_after <= GRACE + MARGIN, f"exit after {exit_after:.2f} s, grace {GRACE} s"
    assert not [p for p in pids if alive(p)], "orphaned server processes"
    assert end_of_stalled.startswith(b"ERR SHUTDOWN") or end_of_stalled == b"", end_of_stalled[:200]
    assert "error" in slow and not list(slow_dest.iterdir()), "the aborted download must leave no file"
    final = re.findall(r"upload (\d+)/(\d+), download (\d+)/(\d+)", srv.log())[-1]  # the server's last status line
    assert final == ("4", "1", "1", "1"), f"server counted (upload ok/failed, download ok/failed) = {final}"
    assert temp_files(root) == []
    expected = {"big.bin": big, "doc.bin": old, "fresh.bin": fresh, "huge.bin": huge}
    assert folder_state(root) == expected

    again = start_server(model, workers=2, root=root)
    with Client(*again.address, timeout=10) as c:
        assert c.list() == sorted((n, len(b)) for n, b in expected.items())
    assert folder_state(root) == expected


def test_killed_server_leaves_no_workers_and_a_restart_cleans_up(start_server, model, client_dirs, tmp_path):
    """SIGKILL (no chance to clean up) during an upload: the workers still go (parent-death signal),
    and a server restarted on the folder removes any orphaned temporary file."""
    files, _ = client_dirs
    root = tmp_path / "srv"
    root.mkdir()
    old = os.urandom(50_000)
    (files / "doc.bin").write_bytes(old)
    srv = start_server(model, workers=2, root=root)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "doc.bin")
    pids = srv.pids()
    with Wire(srv.address) as w:
        w.send(b"UPLOAD doc.bin 400000 raw\r\n")
        assert w.line() == "OK SEND 400000"
        w.send(os.urandom(100_000))
        wait_for(lambda: temp_files(root), 10, "the upload's temporary file")
        srv.proc.kill()
        srv.proc.wait(10)
        wait_for(lambda: not [p for p in pids if alive(p)], 10, "every worker to exit after its parent was killed")
    # Thread model: the whole server died at once, nobody was left to remove the temporary file.
    # Process model: the workers got SIGTERM from the kernel (parent-death signal) and aborted cleanly.
    assert len(temp_files(root)) == (1 if model == "thread" else 0)
    again = start_server(model, workers=2, root=root)
    assert temp_files(root) == []
    with Client(*again.address, timeout=10) as c:
        assert c.list() == [("doc.bin", len(old))]
    assert folder_state(root) == {"doc.bin": old}
