"""Raw bodies received by ``splice`` (socket -> pipe -> file), hashed back from the file.

* ``Receiver.direct_room`` / ``body_moved_directly``: the sans-IO side of it --
  bytes already buffered come out as ``Data`` first, the trailer is still
  checked against the hasher the I/O layer fed.
* ``ThreadedSHA256.update_from_file`` hashes exactly what is in the file, and
  a file that ends early can never produce a digest.
* End to end, in this process (so the splice path can be watched): a server
  connection (``session.serve_connection`` on a real TCP socket) and the
  client's download use splice for raw bodies, handle body bytes that arrived
  together with the request or reply line, refuse a corrupted body with
  ``INTEGRITY`` keeping nothing, and fall back to ``recv`` where splice is not
  available or fails with ``EINVAL``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading

import pytest
from faultproxy import upload_by_hand

from labnet.client import Client
from labnet.errors import Code, PeerError
from labnet.protocol.receiver import NEED_DATA, BodyEnd, Data, Receiver
from labnet.transport import channel, pipeline

pytestmark = pytest.mark.skipif(not channel.SPLICE, reason="os.splice needs Linux")

SIZE = 3 * 1024 * 1024 + 7  # several pipe-fulls, not a round number


def body(size: int = SIZE, seed: int = 1) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# Receiver: the sans-IO side
# --------------------------------------------------------------------------


def test_direct_room_only_for_raw_bodies_with_nothing_buffered():
    data = body(1000)
    rx = Receiver()
    assert rx.direct_room() == 0  # not in a body
    rx.start_body(1000, "b64")
    assert rx.direct_room() == 0  # b64 goes through the decoder

    rx = Receiver()
    h = hashlib.sha256()
    rx.start_body(1000, "raw", hasher=h)
    rx.receive_data(data[:300])  # arrived with the line: must come out as Data first
    assert rx.direct_room() == 0
    assert rx.next_event() == Data(data[:300])
    assert rx.direct_room() == 700
    with pytest.raises(RuntimeError):
        rx.body_moved_directly(701)
    h.update(data[300:])  # what the I/O layer hashes back from the file
    rx.body_moved_directly(700)
    assert rx.direct_room() == 0 and rx.body_received == 1000
    assert rx.next_event() is NEED_DATA
    rx.receive_data(f"SHA256 {sha(data)}\r\n".encode())
    assert rx.next_event() == BodyEnd(1000, sha(data))


def test_body_moved_directly_still_checks_the_trailer():
    data = body(1000)
    rx = Receiver()
    h = hashlib.sha256()
    rx.start_body(1000, "raw", hasher=h)
    h.update(b"X" + data[1:])  # the file got a corrupted byte
    rx.body_moved_directly(1000)
    rx.receive_data(f"SHA256 {sha(data)}\r\n".encode())
    with pytest.raises(PeerError) as exc:
        rx.next_event()
    assert exc.value.code == Code.INTEGRITY and rx.broken


# --------------------------------------------------------------------------
# ThreadedSHA256.update_from_file
# --------------------------------------------------------------------------


@pytest.mark.parametrize("threaded", [True, False])
def test_update_from_file_hashes_the_file_in_order(tmp_path, threaded):
    data = body()
    path = tmp_path / "f"
    path.write_bytes(data)
    h = pipeline.ThreadedSHA256(min_threaded=1, enabled=threaded)
    with open(path, "rb") as f:
        try:
            h.update(data[:10])  # bytes and file ranges mix, in order
            h.update_from_file(f.fileno(), 10, 1 << 20)
            h.update(data[10 + (1 << 20) : 20 + (1 << 20)])
            h.update_from_file(f.fileno(), 20 + (1 << 20), len(data) - 20 - (1 << 20))
            assert h.threaded == threaded
            assert h.hexdigest() == sha(data)
        finally:
            h.close()


@pytest.mark.parametrize("threaded", [True, False])
def test_update_from_file_past_the_end_never_gives_a_digest(tmp_path, threaded):
    path = tmp_path / "f"
    path.write_bytes(body(1000))
    h = pipeline.ThreadedSHA256(min_threaded=1, enabled=threaded)
    with open(path, "rb") as f:
        h.update_from_file(f.fileno(), 0, 2000)
        with pytest.raises(OSError):
            h.hexdigest()
    h.close()


# --------------------------------------------------------------------------
# End to end, in process
# --------------------------------------------------------------------------


@pytest.fixture
def spliced(monkeypatch):
    """Count the pieces moved by splice (in this process)."""
    pieces = []
    real = channel.Channel._drain_pipe

    def drain(self, r, fd, n):
        pieces.append(n)
        return real(self, r, fd, n)

    monkeypatch.setattr(channel.Channel, "_drain_pipe", drain)
    return pieces


def test_server_upload_uses_splice_and_handles_bytes_sent_with_the_request(inproc_server, spliced):
    address, store = inproc_server
    data = body()
    reply = upload_by_hand(address, "up.bin", len(data), "raw", data, sha(data), first=5000)
    assert reply.startswith(f"OK STORED up.bin {len(data)} {sha(data)}".encode())
    assert (store.root / "up.bin").read_bytes() == data
    assert 0 < sum(spliced) <= len(data) - 5000  # the early bytes came through the receiver


def test_server_refuses_a_corrupted_spliced_body_and_stores_nothing(inproc_server, spliced):
    address, store = inproc_server
    data = body()
    bad = data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]
    reply = upload_by_hand(address, "bad.bin", len(bad), "raw", bad, sha(data), first=0)
    assert reply.startswith(b"ERR INTEGRITY")
    assert spliced
    assert store.list() == [] and store.temp_files() == []


@pytest.mark.parametrize("how", ["no-splice", "einval"])
def test_server_falls_back_without_splice(inproc_server, spliced, monkeypatch, how):
    if how == "no-splice":
        monkeypatch.setattr(channel, "SPLICE", False)
    else:

        def einval(*a, **kw):
            raise OSError(errno.EINVAL, "Invalid argument")

        monkeypatch.setattr(os, "splice", einval)
    address, store = inproc_server
    data = body()
    reply = upload_by_hand(address, "fb.bin", len(data), "raw", data, sha(data), first=100)
    assert reply.startswith(b"OK STORED fb.bin")
    assert (store.root / "fb.bin").read_bytes() == data
    assert not spliced


def test_client_download_uses_splice(inproc_server, spliced, tmp_path):
    address, store = inproc_server
    data = body()
    (store.root / "d.bin").write_bytes(data)
    with Client(*address, timeout=10) as c:
        c.upload(store.root / "d.bin", name="d2.bin", encoding="b64")  # b64: nothing spliced
        assert not spliced
        result = c.download("d.bin", tmp_path / "dl", encoding="raw")
    assert result.sha256 == sha(data)
    assert (tmp_path / "dl" / "d.bin").read_bytes() == data
    assert 0 < sum(spliced) <= len(data)


def _fake_server(payload_after_line: bytes):
    """A one-shot 'server' that answers any DOWNLOAD with ``payload_after_line``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"OK LABNET 1 READY\r\n")
            f = conn.makefile("rb")
            f.readline()
            conn.sendall(payload_after_line)
            f.readline()  # QUIT or EOF

    threading.Thread(target=run, daemon=True).start()
    return listener


@pytest.mark.parametrize("corrupt", [False, True])
def test_client_download_with_body_bytes_in_the_reply_packet(tmp_path, spliced, corrupt):
    data = body()
    sent = bytearray(data)
    if corrupt:
        sent[-5] ^= 0xFF  # in the spliced part
    payload = f"OK {len(data)} raw {len(data)}\r\n".encode() + bytes(sent) + f"SHA256 {sha(data)}\r\n".encode()
    listener = _fake_server(payload)
    dest = tmp_path / "dl"
    try:
        c = Client(*listener.getsockname(), timeout=10)
        with c:
            if corrupt:
                with pytest.raises(PeerError) as exc:
                    c.download("x.bin", dest, encoding="raw")
                assert exc.value.code == Code.INTEGRITY
            else:
                assert c.download("x.bin", dest, encoding="raw").sha256 == sha(data)
    finally:
        listener.close()
    if corrupt:
        assert list(dest.iterdir()) == []  # not even the temporary file
    else:
        assert (dest / "x.bin").read_bytes() == data
