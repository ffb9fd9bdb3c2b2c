"""Bad input on raw sockets, for every server model.

Each case speaks the protocol by hand (see docs/protocol.md), checks the
server's answer, and then checks that the server still serves (a fresh
client's LIST works) and that nothing was written: no file, no temporary
file, nothing outside the root.  One server per model serves the whole
module (2 workers): a worker that got stuck in one case would starve the
later ones, so leaks show up as failures, not as slow tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from labnet.client import Client
from labnet.measure.launcher import BackgroundServer
from labnet.procutil import alive
from labnet.protocol.messages import GREETING

pytestmark = pytest.mark.timeout(60)

WORKERS = 2
IO_TIMEOUT = 20.0


@pytest.fixture(scope="module", params=["thread", "process"])
def srv(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"bad-{request.param}")
    root = base / "root"
    root.mkdir()
    server = BackgroundServer(request.param, workers=WORKERS, root=root).start()
    pids = server.pids()
    yield server
    server.stop()
    assert not [p for p in pids if alive(p)], "server processes left behind"


@pytest.fixture
def root(srv):
    return srv.root


@pytest.fixture(autouse=True)
def nothing_written(srv):
    """Every test must leave the server serving and its folder as it found it (empty)."""
    assert sorted(os.listdir(srv.root)) == []
    yield
    assert_clean(srv)


def assert_clean(srv, expected: dict[str, bytes] | None = None) -> None:
    """Wait (bounded) until the folder holds exactly ``expected``, then check a fresh client's LIST."""
    expected = expected or {}
    deadline = time.monotonic() + 15
    while True:
        names = sorted(os.listdir(srv.root))
        if names == sorted(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert names == sorted(expected), "temporary or unexpected files left"
    for name, data in expected.items():
        assert (srv.root / name).read_bytes() == data
    assert sorted(os.listdir(srv.root.parent)) == ["root"], "something was written outside the root"
    with Client(*srv.address, timeout=IO_TIMEOUT, wait_timeout=IO_TIMEOUT) as c:
        assert c.list() == sorted((n, len(d)) for n, d in expected.items())


class Raw:
    """A hand-driven connection: send bytes, read CRLF lines, see the server close."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=IO_TIMEOUT)
        self.buf = b""
        first = self.line()
        while first.startswith(b"OK LABNET 1 QUEUED"):  # every worker busy for a moment: wait in line
            first = self.line()
        assert first == GREETING.encode()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"server closed; unread {self.buf[:80]!r}")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def closed_by_server(self) -> bool:
        """True when the server closes the connection (EOF or reset) within IO_TIMEOUT."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def expect_open(self) -> None:
        """The connection is still in sync: a LIST on it answers."""
        self.send(b"LIST\r\n")
        reply = self.line()
        assert reply.startswith(b"OK ") and reply.endswith(b" files")
        for _ in range(int(reply.split()[1])):
            self.line()

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Close abruptly: SO_LINGER 0 makes the kernel send RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_stats(srv, ready, timeout: float = 20.0) -> dict:
    """Poll STATS (bounded) until ``ready(snapshot)``; the server updates counters just after replying."""
    deadline = time.monotonic() + timeout
    while True:
        snap = srv.stats()
        if ready(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.02)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def trailer(data: bytes) -> bytes:
    return f"SHA256 {sha(data)}\r\n".encode()


# --------------------------------------------------------------------------
# bad request lines: an ERR, and the connection stays usable
# --------------------------------------------------------------------------

BAD_NAMES = ["../x", "/etc/passwd", "a/b", "a\\b", ".", "..", "a\x00b", "a\rb", ".hidden", "x" * 256, "a\x1bb",
             "../../../../tmp/evil"]  # fmt: skip

BAD_LINES = [
    (b"\r\n", "BAD_REQUEST", "empty"),
    (b"\n", "BAD_REQUEST", "empty"),
    (b"   \r\n", "BAD_REQUEST", "empty"),
    (b"\xff\xfe\xfd\r\n", "BAD_REQUEST", "UTF-8"),
    (b"LIST \xc3\x28\r\n", "BAD_REQUEST", "UTF-8"),
    (b"FETCH a.bin\r\n", "BAD_REQUEST", "unknown verb"),
    (b"GET / HTTP/1.1\r\n", "BAD_REQUEST", "unknown verb"),
    (b"LIST everything\r\n", "BAD_REQUEST", "usage"),
    (b"UPLOAD\r\n", "BAD_REQUEST", "usage"),
    (b"UPLOAD a.bin\r\n", "BAD_REQUEST", "usage"),
    (b"UPLOAD a.bin -1\r\n", "BAD_REQUEST", "whole number"),
    (b"UPLOAD a.bin abc\r\n", "BAD_REQUEST", "whole number"),
    (b"UPLOAD a.bin 1.5 raw\r\n", "BAD_REQUEST", "whole number"),
    (b"UPLOAD a.bin " + b"9" * 40 + b"\r\n", "TOO_LARGE", ""),
    (b"UPLOAD a.bin 999999999999999999 raw\r\n", "TOO_LARGE", "limit"),
    (b"UPLOAD a.bin 10 gzip\r\n", "BAD_REQUEST", "encoding"),
    (b"DOWNLOAD a.bin hex\r\n", "BAD_REQUEST", "encoding"),
    (b"DOWNLOAD missing.bin\r\n", "NOT_FOUND", "missing.bin"),
    (b"DOWNLOAD missing.bin raw\r\n", "NOT_FOUND", "missing.bin"),
    (b"DELETE missing.bin\r\n", "NOT_FOUND", "missing.bin"),
] + [
    (f"{verb} {name}{args}\r\n".encode(), "BAD_NAME", "")
    for name in BAD_NAMES
    for verb, args in (("UPLOAD", " 5 raw"), ("DOWNLOAD", ""), ("DELETE", ""))
]


@pytest.mark.parametrize("line,code,fragment", BAD_LINES, ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else None)
def test_bad_line_is_answered_and_the_connection_stays_usable(srv, line, code, fragment):
    with Raw(srv.address) as r:
        r.send(line)
        reply = r.line()
        assert reply.startswith(f"ERR {code} ".encode()), reply
        assert fragment.encode() in reply
        r.expect_open()


def test_newline_inside_a_name_splits_the_line(srv):
    with Raw(srv.address) as r:
        r.send(b"UPLOAD a\nb 1 raw\r\n")  # two lines: "UPLOAD a" and "b 1 raw"
        assert r.line().startswith(b"ERR BAD_REQUEST usage")
        assert r.line().startswith(b"ERR BAD_REQUEST unknown verb")
        r.expect_open()


def test_many_bad_lines_in_one_packet(srv):
    with Raw(srv.address) as r:
        r.send(b"\r\n" * 50 + b"NOPE\r\n" * 50)
        for _ in range(100):
            assert r.line().startswith(b"ERR BAD_REQUEST")
        r.expect_open()


# --------------------------------------------------------------------------
# over-long lines: an ERR, then the server closes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"A" * 5000, b"UPLOAD " + b"x" * 5000 + b" 1\r\n", os.urandom(200_000)],
                         ids=["no-newline", "long-name", "200KB-garbage"])  # fmt: skip
def test_over_long_line_is_refused_and_closed(srv, data):
    if b"\n" in data[:4096]:
        data = data.replace(b"\n", b"_")
    with Raw(srv.address) as r:
        r.send(data)
        reply = r.line()
        assert reply.startswith(b"ERR BAD_REQUEST line longer than 4096 bytes"), reply
        assert r.closed_by_server()


def test_partial_line_then_half_close(srv):
    """The peer sends half a line and closes its side: one ERR, and the worker is free again."""
    for _ in range(WORKERS + 1):
        with Raw(srv.address) as r:
            r.send(b"LIS")
            r.sock.shutdown(socket.SHUT_WR)
            assert r.line().startswith(b"ERR BAD_REQUEST connection closed in the middle of a line")
            assert r.closed_by_server()
    snap = wait_stats(srv, lambda s: s["active"] == 1)
    assert snap["active"] == 1  # only the STATS connection: no worker left spinning


# --------------------------------------------------------------------------
# upload bodies
# --------------------------------------------------------------------------


def start_upload(r: Raw, name: str, size: int, encoding: str) -> int:
    r.send(f"UPLOAD {name} {size} {encoding}\r\n".encode())
    reply = r.line()
    assert reply.startswith(b"OK SEND "), reply
    wire = int(reply.split()[2])
    assert wire == (size if encoding == "raw" else 4 * ((size + 2) // 3))
    return wire


def wire_of(data: bytes, encoding: str) -> bytes:
    return base64.b64encode(data) if encoding == "b64" else data


@pytest.mark.parametrize("encoding", ["raw", "b64"])
@pytest.mark.parametrize("how", ["close", "half-close", "reset"])
def test_body_shorter_than_declared_then_disconnect(srv, encoding, how):
    data = os.urandom(300_000)
    with Raw(srv.address) as r:
        wire = start_upload(r, "short.bin", len(data), encoding)
        r.send(wire_of(data, encoding)[: wire // 2])
        if how == "half-close":
            r.sock.shutdown(socket.SHUT_WR)
            reply = r.line()
            assert reply.startswith(b"ERR BAD_REQUEST connection closed after "), reply
            assert r.closed_by_server()
        elif how == "reset":
            r.reset()
    # nothing_written checks: no file, no temporary file, still serving


@pytest.mark.parametrize("encoding", ["raw", "b64"])
def test_disconnect_in_the_middle_of_a_large_upload(srv, encoding):
    chunk = os.urandom(1 << 20)
    for _ in range(WORKERS + 1):  # more than the workers: a stuck worker would show
        with Raw(srv.address) as r:
            wire = start_upload(r, "big.bin", 20_000_000, encoding)
            for _ in range(5):
                r.send(wire_of(chunk, encoding))
            assert wire > 5 * len(chunk)
            r.reset()
    assert_clean(srv)


def test_invalid_base64_is_refused_and_closed(srv):
    data = os.urandom(600_000)
    wire = bytearray(base64.b64encode(data))
    wire[len(wire) // 2] = ord("*")
    with Raw(srv.address) as r:
        start_upload(r, "bad64.bin", len(data), "b64")
        r.send(bytes(wire) + trailer(data))
        reply = r.line()
        assert reply.startswith(b"ERR INTEGRITY "), reply
        assert r.closed_by_server()


def test_padding_in_the_middle_is_refused(srv):
    """The seed's bug on the wire: every chunk base64-encoded with its own padding."""
    parts = [os.urandom(1000), os.urandom(1000), os.urandom(998)]  # 1000 % 3 == 1: each chunk padded
    data = b"".join(parts)
    wire = b"".join(base64.b64encode(p) for p in parts)
    with Raw(srv.address) as r:
        expected_wire = start_upload(r, "seed.bin", len(data), "b64")
        assert len(wire) == expected_wire + 4  # the seed's wire is even longer than the real one
        r.send(wire[:expected_wire] + trailer(data))
        reply = r.line()
        assert reply.startswith(b"ERR INTEGRITY "), reply
        assert r.closed_by_server()


@pytest.mark.parametrize("encoding", ["raw", "b64"])
@pytest.mark.parametrize("size", [0, 1, 1_000_000])
def test_wrong_digest_commits_nothing(srv, encoding, size):
    old = b"the previous version stays"
    (srv.root / "doc.bin").write_bytes(old)
    data = os.urandom(size)
    with Raw(srv.address) as r:
        start_upload(r, "doc.bin", size, encoding)
        r.send(wire_of(data, encoding) + trailer(data + b"x"))
        reply = r.line()
        assert reply.startswith(b"ERR INTEGRITY SHA-256 mismatch"), reply
        assert r.closed_by_server()
    assert_clean(srv, {"doc.bin": old})
    (srv.root / "doc.bin").unlink()


@pytest.mark.parametrize(
    "tail", [b"SHA256\r\n", b"MD5 " + b"0" * 32 + b"\r\n", b"\r\n", b"SHA256 " + b"g" * 64 + b"\r\n"]
)
def test_malformed_trailer_commits_nothing(srv, tail):
    with Raw(srv.address) as r:
        start_upload(r, "t.bin", 3, "raw")
        r.send(b"abc" + tail)
        reply = r.line()
        assert reply.startswith(b"ERR "), reply
        assert r.closed_by_server()


def test_body_longer_than_declared_commits_nothing(srv):
    data = b"abcd"
    with Raw(srv.address) as r:
        start_upload(r, "long.bin", 3, "raw")
        r.send(data + trailer(data[:3]))  # the 4th byte lands where the trailer should be
        reply = r.line()
        assert reply.startswith(b"ERR BAD_REQUEST expected 'SHA256"), reply
        assert r.closed_by_server()


def test_disconnect_before_the_trailer(srv):
    with Raw(srv.address) as r:
        start_upload(r, "t.bin", 3, "raw")
        r.send(b"abcSHA256 12")
        r.sock.shutdown(socket.SHUT_WR)
        assert r.line().startswith(b"ERR BAD_REQUEST connection closed before the SHA256 trailer")


# --------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["raw", "b64"])
def test_disconnect_in_the_middle_of_a_download(srv, encoding):
    data = os.urandom(1 << 20) * 20  # 20 MiB: far more than the socket buffers
    (srv.root / "big.bin").write_bytes(data)
    for i in range(WORKERS + 1):  # more than the workers: a stuck worker would show
        with Raw(srv.address) as r:
            r.send(f"DOWNLOAD big.bin {encoding}\r\n".encode())
            size, enc, wire = r.line().split()[1:]
            assert (int(size), enc.decode()) == (len(data), encoding)
            r.read(100_000)
            r.reset() if i % 2 else r.close()
    assert_clean(srv, {"big.bin": data})
    snap = wait_stats(srv, lambda s: s["verbs"]["DOWNLOAD"]["failed"] >= WORKERS + 1)
    assert snap["verbs"]["DOWNLOAD"]["failed"] >= WORKERS + 1
    (srv.root / "big.bin").unlink()


# --------------------------------------------------------------------------
# many connections
# --------------------------------------------------------------------------


def test_100_clients_connect_and_close_at_once(srv):
    before = srv.stats()["connections"]
    barrier = threading.Barrier(100)
    errors = []

    def hit(i: int) -> None:
        try:
            s = socket.create_connection(srv.address, timeout=IO_TIMEOUT)
            barrier.wait(IO_TIMEOUT)
            if i % 3 == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif i % 3 == 1:
                s.sendall(b"LI")  # half a request, then gone
            s.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(IO_TIMEOUT * 2)
    assert not errors
    assert_clean(srv)
    # bounded wait until every closed connection has been served and let go
    snap = wait_stats(srv, lambda s: s["active"] <= 1 and s["waiting"] == 0)
    assert snap["connections"] - before >= 100 + 1
    assert snap["busy"] == 0
    assert snap["active"] <= 1 and snap["waiting"] == 0
