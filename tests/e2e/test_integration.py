"""End to end on real sockets, for every server model: round trips, several requests per connection, STATS.

Each test gets its own server (port 0, its own folder) from the ``server`` /
``start_server`` fixtures in conftest.py; the fixtures stop every server and
fail the test if any of its processes is left behind.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time

import pytest

from labnet.client import Client
from labnet.errors import Code, PeerError, RemoteError
from labnet.protocol.messages import GREETING

pytestmark = pytest.mark.timeout(90)

CHUNK = 3 * 64 * 1024  # the server's and client's read size: test around it
SIZES = [0, 1, 2, 3, 4, 5, 6, 7, 299, 300, 301, CHUNK - 1, CHUNK, CHUNK + 1, 3_000_000 - 1, 3_000_000, 3_000_001]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make(path, size: int, seed: int = 0) -> bytes:
    data = random.Random(size * 31 + seed).randbytes(size)
    path.write_bytes(data)
    return data


def visible_and_temp(root) -> tuple[list[str], list[str]]:
    names = sorted(p.name for p in root.iterdir())
    return [n for n in names if not n.startswith(".")], [n for n in names if n.startswith(".")]


def recv_lines(sock: socket.socket, count: int, timeout: float = 20.0) -> list[bytes]:
    """Read ``count`` CRLF-terminated lines (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    buf = b""
    while buf.count(b"\r\n") < count:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return buf.split(b"\r\n")[:count]


@pytest.mark.parametrize("encoding", ["b64", "raw"])
def test_round_trips_on_one_connection(server, server_root, client_dirs, encoding):
    files, downloads = client_dirs
    originals = {}
    with Client(*server.address, timeout=30) as c:
        assert c.list() == []
        for size in SIZES:
            name = f"f{size}.bin"
            data = make(files / name, size)
            originals[name] = data
            moved = []
            up = c.upload(files / name, encoding=encoding, progress=moved.append)
            assert (up.op, up.name, up.bytes, up.encoding) == ("upload", name, size, encoding)
            assert up.sha256 == sha(data)
            assert sum(moved) == size
            assert up.wire_bytes == (size if encoding == "raw" else 4 * ((size + 2) // 3))
        assert c.list() == sorted((n, len(d)) for n, d in originals.items())
        for name, data in originals.items():
            moved = []
            down = c.download(name, downloads, encoding=encoding, progress=moved.append)
            got = (downloads / name).read_bytes()
            assert got == data, name
            assert down.sha256 == sha(data) and down.bytes == len(data) and sum(moved) == len(data)
            assert (server_root / name).read_bytes() == data
        for name in originals:
            c.delete(name)
        assert c.list() == []
    assert visible_and_temp(server_root) == ([], [])
    assert visible_and_temp(downloads) == (sorted(originals), [])


def test_upload_in_one_encoding_download_in_the_other(server, client_dirs):
    files, downloads = client_dirs
    data = make(files / "x.bin", 100_001)
    with Client(*server.address, timeout=30) as c:
        c.upload(files / "x.bin", name="as-raw.bin", encoding="raw")
        c.upload(files / "x.bin", name="as-b64.bin", encoding="b64")
        c.download("as-raw.bin", downloads, encoding="b64")
        c.download("as-b64.bin", downloads, encoding="raw", save_as="copy.bin")
    assert (downloads / "as-raw.bin").read_bytes() == data
    assert (downloads / "copy.bin").read_bytes() == data


def test_replace_and_delete(server, server_root, client_dirs):
    files, downloads = client_dirs
    make(files / "v1", 1000, seed=1)
    v2 = make(files / "v2", 10, seed=2)
    with Client(*server.address, timeout=30) as c:
        c.upload(files / "v1", name="doc.txt")
        c.upload(files / "v2", name="doc.txt")
        assert c.list() == [("doc.txt", 10)]
        c.download("doc.txt", downloads)
        assert (downloads / "doc.txt").read_bytes() == v2
        c.delete("doc.txt")
        with pytest.raises(RemoteError) as info:
            c.delete("doc.txt")
        assert info.value.code is Code.NOT_FOUND
        with pytest.raises(RemoteError) as info:
            c.download("doc.txt", downloads / "again")
        assert info.value.code is Code.NOT_FOUND
        assert c.list() == []  # the connection is still in sync after the errors
    assert not (downloads / "again").exists() or list((downloads / "again").iterdir()) == []
    assert visible_and_temp(server_root) == ([], [])


def test_client_refuses_bad_names_before_sending(server, client_dirs):
    files, _ = client_dirs
    make(files / "ok.bin", 3)
    with Client(*server.address, timeout=30) as c:
        for bad in ("../x", "a/b", ".hidden", "a b"):
            with pytest.raises(PeerError) as info:
                c.upload(files / "ok.bin", name=bad)
            assert info.value.code is Code.BAD_NAME
        assert c.list() == []


def test_several_requests_in_one_packet(server, server_root):
    (server_root / "a.txt").write_bytes(b"abc")
    with socket.create_connection(server.address, timeout=20) as s:
        assert recv_lines(s, 1) == [GREETING.encode()]
        s.sendall(b"LIST\r\nDOWNLOAD a.txt raw\r\nDELETE nope\r\nBOGUS\r\nLIST\r\nQUIT\r\n")
        lines = recv_lines(s, 11)
        s.settimeout(20)
        assert s.recv(100) == b""  # closed after QUIT
    assert lines[0:2] == [b"OK 1 files", b"3 a.txt"]
    assert lines[2] == b"OK 3 raw 3"
    assert lines[3] == b"abcSHA256 " + sha(b"abc").encode()
    assert lines[4].startswith(b"ERR NOT_FOUND ")
    assert lines[5].startswith(b"ERR BAD_REQUEST unknown verb")
    assert lines[6:8] == [b"OK 1 files", b"3 a.txt"]
    assert lines[8] == b"OK BYE"


def test_upload_by_hand(server, server_root):
    """The exact exchange of docs/protocol.md, byte for byte."""
    data = b"hello labnet\n"
    with socket.create_connection(server.address, timeout=20) as s:
        assert recv_lines(s, 1) == [GREETING.encode()]
        s.sendall(b"UPLOAD hello.txt 13 b64\r\n")
        assert recv_lines(s, 1) == [b"OK SEND 20"]
        s.sendall(b"aGVsbG8gbGFibmV0Cg==" + f"SHA256 {sha(data)}\r\n".encode())
        assert recv_lines(s, 1) == [f"OK STORED hello.txt 13 {sha(data)}".encode()]
        s.sendall(b"DOWNLOAD hello.txt\r\n")
        assert recv_lines(s, 2) == [b"OK 13 b64 20", b"aGVsbG8gbGFibmV0Cg==SHA256 " + sha(data).encode()]
    assert (server_root / "hello.txt").read_bytes() == data


def test_stats_counts_are_exact(server, client_dirs):
    files, downloads = client_dirs
    data = make(files / "s.bin", 123_457)
    with Client(*server.address, timeout=30) as c:
        before = c.stats()
        assert before["model"] == server.model and before["workers"] == 3
        assert before["ok"] == before["failed"] == 0  # the STATS being answered is not counted yet
        c.list()
        c.list()
        c.upload(files / "s.bin", encoding="raw")
        c.upload(files / "s.bin", name="t.bin", encoding="b64")
        c.download("s.bin", downloads, encoding="b64")
        for missing in ("nope", "nada"):
            with pytest.raises(RemoteError):
                c.download(missing, downloads)
        c.delete("t.bin")
        with pytest.raises(RemoteError):
            c.delete("t.bin")
        snap = c.stats()
    v = snap["verbs"]
    assert v["LIST"] == {"ok": 2, "failed": 0}
    assert v["UPLOAD"] == {"ok": 2, "failed": 0}
    assert v["DOWNLOAD"] == {"ok": 1, "failed": 2}
    assert v["DELETE"] == {"ok": 1, "failed": 1}
    assert v["STATS"] == {"ok": 1, "failed": 0}
    assert v["INVALID"] == {"ok": 0, "failed": 0}
    assert (snap["ok"], snap["failed"]) == (7, 3)
    assert snap["bytes_in"] == 2 * len(data)  # file bytes, not wire bytes
    assert snap["bytes_out"] == len(data)
    assert snap["active"] >= 1  # this connection (the launcher's probe may still be closing)
    assert snap["busy"] == 0 and snap["timeouts"] == 0
    assert snap["connections"] >= 2  # the launcher's readiness probe and this client


def test_stats_are_shared_by_all_workers(server):
    """Requests served by different workers (separate processes for the process model) add up exactly."""
    clients = [Client(*server.address, timeout=30).connect() for _ in range(3)]  # 3 workers: one each
    try:
        for i, c in enumerate(clients):
            for _ in range(i + 1):
                c.list()
        for c in clients:
            c.quit()
        deadline = time.monotonic() + 20
        polls = 0  # each server.stats() ends with its own QUIT, counted after its snapshot
        while True:  # the QUITs are counted after the replies: poll, bounded
            snap = server.stats()
            polls += 1
            if snap["verbs"]["QUIT"]["ok"] >= 3 + polls - 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        for c in clients:
            c.close()
    assert snap["verbs"]["LIST"]["ok"] == 1 + 2 + 3
    assert snap["verbs"]["STATS"]["ok"] == polls - 1
    assert snap["verbs"]["QUIT"]["ok"] == 3 + polls - 1


def test_concurrent_clients(server, server_root, client_dirs):
    files, downloads = client_dirs
    datas = {f"c{i}.bin": make(files / f"c{i}.bin", 200_000 + i, seed=i) for i in range(6)}
    errors = []

    def work(name: str) -> None:
        try:
            with Client(*server.address, timeout=30) as c:
                enc = "raw" if name[1] in "024" else "b64"
                c.upload(files / name, encoding=enc)
                c.download(name, downloads / name.replace(".bin", ""), encoding=enc)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in datas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for name, data in datas.items():
        assert (downloads / name.replace(".bin", "") / name).read_bytes() == data
        assert (server_root / name).read_bytes() == data
    assert visible_and_temp(server_root)[1] == []


def test_concurrent_uploads_of_one_name_last_complete_wins(server, server_root, client_dirs):
    files, downloads = client_dirs
    versions = [make(files / f"v{i}", 500_000, seed=i) for i in range(3)]
    errors = []

    def work(i: int) -> None:
        try:
            with Client(*server.address, timeout=30) as c:
                for _ in range(3):
                    c.upload(files / f"v{i}", name="same.bin", encoding="raw" if i % 2 else "b64")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert (server_root / "same.bin").read_bytes() in versions  # one whole version, never a mix
    assert visible_and_temp(server_root) == (["same.bin"], [])
    with Client(*server.address, timeout=30) as c:
        c.download("same.bin", downloads)
    assert (downloads / "same.bin").read_bytes() in versions


def test_download_sends_exactly_the_announced_size_even_if_the_file_grows(server, server_root):
    """The size in ``OK <size> ...`` is fixed when the file is opened; bytes appended later are not sent."""
    data = random.Random(7).randbytes(20_000_000)  # far more than the socket buffers hold
    (server_root / "grow.bin").write_bytes(data)
    with socket.create_connection(server.address, timeout=20) as s:
        assert recv_lines(s, 1) == [GREETING.encode()]
        s.sendall(b"DOWNLOAD grow.bin raw\r\n")
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        header, _, buf = buf.partition(b"\r\n")
        assert header == f"OK {len(data)} raw {len(data)}".encode()
        with open(server_root / "grow.bin", "ab") as f:  # a local process appends meanwhile
            f.write(b"appended later " * 100_000)
        need = len(data) + len("SHA256 ") + 64 + 2
        while len(buf) < need:
            chunk = s.recv(1 << 20)
            assert chunk, "server closed early"
            buf += chunk
        assert buf[: len(data)] == data
        assert buf[len(data) :] == f"SHA256 {sha(data)}\r\n".encode()
        s.sendall(b"LIST\r\n")  # still in step
        assert recv_lines(s, 1) == [b"OK 1 files"]


def test_upload_of_a_local_file_that_changes_size(server, server_root, client_dirs):
    """The size announced is the size at open: growth is not sent, shrinking fails cleanly."""
    files, _ = client_dirs
    data = make(files / "grow.bin", 2_000_000)
    with Client(*server.address, timeout=30) as c:
        appended = []

        def grow(n):
            if not appended:
                appended.append(n)
                with open(files / "grow.bin", "ab") as f:
                    f.write(b"more" * 100_000)

        up = c.upload(files / "grow.bin", progress=grow)
        assert up.bytes == len(data) and up.sha256 == sha(data)
        assert (server_root / "grow.bin").read_bytes() == data

        make(files / "shrink.bin", 2_000_000)

        def shrink(n):
            os.truncate(files / "shrink.bin", 1000)

        with pytest.raises(PeerError, match="changed while being sent"):
            c.upload(files / "shrink.bin", progress=shrink, encoding="raw")
        assert c.list() == [("grow.bin", len(data))]  # the client reconnected; nothing half-stored
    deadline = time.monotonic() + 15
    while visible_and_temp(server_root)[1] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert visible_and_temp(server_root) == (["grow.bin"], [])
