"""Disconnects in the middle of transfers (issue 5): nothing half-written ever appears.

Uploads are cut at 0 %, 50 % and 99 % of the body, by a clean close (FIN) and by a
TCP reset (SO_LINGER 0): the final name keeps its older version byte for byte and no
temporary file is left.  Downloads cut in the middle free their worker (a 1-worker
server serves the next client) and, through the real client, leave no partial file.

The server's own counters tell when it has dealt with a fault, so the tests wait
for them (bounded polls) instead of sleeping; the folder is then checked at once.
"""

from __future__ import annotations

import os
import time

import pytest
from faultproxy import FaultProxy, Wire, folder_state, temp_files, wait_for

from labnet.client import Client
from labnet.errors import LabnetError

pytestmark = pytest.mark.timeout(60)

OLD = os.urandom(50_000)
NEW = os.urandom(600_000)


def _stats(srv) -> dict:
    with Client(*srv.address, timeout=10, wait_timeout=10) as c:
        return c.stats()


def _failed(srv, verb: str) -> int:
    return _stats(srv)["verbs"][verb]["failed"]


def _fresh_list(srv) -> list:
    with Client(*srv.address, timeout=10, wait_timeout=10) as c:
        return c.list()


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_upload_cut_keeps_older_version(start_server, model, client_dirs, how, fraction):
    files, _ = client_dirs
    (files / "doc.bin").write_bytes(OLD)
    srv = start_server(model, workers=2, idle_timeout=30)  # long idle: the server must notice the cut itself
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "doc.bin", encoding="raw")
    bytes_in_before = _stats(srv)["bytes_in"]
    cut = int(len(NEW) * fraction)

    w = Wire(srv.address)
    w.send(f"UPLOAD doc.bin {len(NEW)} raw\r\n".encode())
    assert w.line() == f"OK SEND {len(NEW)}"
    assert len(temp_files(srv.root)) == 1, "the server should be receiving into a temporary file"
    w.send(NEW[:cut])
    wait_for(lambda: _stats(srv)["bytes_in"] >= bytes_in_before + cut, 10, "the server to receive the partial body")
    w.reset() if how == "reset" else w.close()

    wait_for(lambda: _failed(srv, "UPLOAD") == 1, 10, "the server to count the cut upload as failed")
    assert temp_files(srv.root) == []
    assert folder_state(srv.root) == {"doc.bin": OLD}  # older version intact, byte for byte
    assert _fresh_list(srv) == [("doc.bin", len(OLD))]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_upload_of_new_name_cut_leaves_nothing(start_server, model, client_dirs, how):
    srv = start_server(model, workers=2, idle_timeout=30)
    w = Wire(srv.address)
    w.send(f"UPLOAD fresh.bin {len(NEW)} b64\r\n".encode())
    assert w.line().startswith("OK SEND ")
    w.send(b"QUJD" * 1000)  # the start of a valid base64 body
    wait_for(lambda: _stats(srv)["bytes_in"] >= 3000, 10, "the server to receive the partial body")
    w.reset() if how == "reset" else w.close()
    wait_for(lambda: _failed(srv, "UPLOAD") == 1, 10, "the server to count the cut upload as failed")
    assert folder_state(srv.root) == {}
    assert _fresh_list(srv) == []


@pytest.mark.parametrize("how", ["close", "reset"])
def test_download_cut_frees_the_worker(start_server, model, client_dirs, how):
    files, _ = client_dirs
    data = os.urandom(12_000_000)  # the server sends at most ~4 MB ahead of what we read
    (files / "big.bin").write_bytes(data)
    srv = start_server(model, workers=1, idle_timeout=30)  # one worker; the idle limit is not what frees it
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "big.bin", encoding="raw")

    w = Wire(srv.address, rcvbuf=65536)
    w.send(b"DOWNLOAD big.bin raw\r\n")
    assert w.line() == f"OK {len(data)} raw {len(data)}"
    part = len(data) // 4
    assert w.read_exact(part) == data[:part]
    w.reset() if how == "reset" else w.close()

    t0 = time.monotonic()
    assert _fresh_list(srv) == [("big.bin", len(data))]  # only possible once the one worker is free
    freed_after = time.monotonic() - t0
    assert freed_after < 10, f"worker freed only after {freed_after:.2f} s"
    assert _failed(srv, "DOWNLOAD") == 1
    assert folder_state(srv.root) == {"big.bin": data}


def test_client_download_reset_leaves_no_partial_file(start_server, model, client_dirs):
    """The real client, reset by a proxy half-way through a download: it raises, and writes nothing."""
    files, downloads = client_dirs
    data = os.urandom(8_000_000)
    (files / "big.bin").write_bytes(data)
    srv = start_server(model, workers=1, idle_timeout=30)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "big.bin", encoding="raw")
    with FaultProxy(srv.address, cut_down_after=2_000_000, cut_mode="reset", bufsize=65536) as proxy:
        with pytest.raises((OSError, LabnetError)):
            with Client(*proxy.address, timeout=10) as c:
                c.download("big.bin", downloads, encoding="b64")
        assert proxy.cut_count == 1
    assert list(downloads.iterdir()) == []  # no partial file, no temporary file
    assert _fresh_list(srv) == [("big.bin", len(data))]
    assert _failed(srv, "DOWNLOAD") == 1
    assert folder_state(srv.root) == {"big.bin": data}


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_upload_cut_keeps_older_version(start_server, model, client_dirs, how):
    """The real client, cut by a proxy half-way through an upload: it raises; the server keeps the old file."""
    files, _ = client_dirs
    (files / "doc.bin").write_bytes(OLD)
    srv = start_server(model, workers=2, idle_timeout=30)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "doc.bin")
    (files / "doc.bin").write_bytes(NEW)
    with FaultProxy(srv.address, cut_up_after=len(NEW) // 2, cut_mode=how) as proxy:
        with pytest.raises((OSError, LabnetError)):
            with Client(*proxy.address, timeout=10) as c:
                c.upload(files / "doc.bin", encoding="raw")
    wait_for(lambda: _failed(srv, "UPLOAD") == 1, 10, "the server to count the cut upload as failed")
    assert temp_files(srv.root) == []
    assert folder_state(srv.root) == {"doc.bin": OLD}
    assert _fresh_list(srv) == [("doc.bin", len(OLD))]
