"""Helpers for the dialect-server tests: the students' clients written out by hand, on raw sockets.

Not a test module.  ``test_dialect_server.py`` (fast) and ``test_dialect_server_slow.py``
use these to speak ``course`` and ``sentinel`` exactly as the students' clients do (the course's
reference client: no terminator, ``recv(16)`` until a blank line; the seed's client: ``UPLOAD``,
wait for ``READY``, base64 block by block, ``__END__``), and labnet's own protocol by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from pathlib import Path

from labnet.client import Client, StudentClient
from labnet.measure.launcher import read_counters

IO_TIMEOUT = 20.0
REPLY_END = b"\r\n\r\n"

# (dialect, profile) of the servers under test; "labnet" is labnet's own protocol
CASES = [("labnet", None), ("course", None), ("course", "course-reference"), ("sentinel", None)]
CASE_IDS = ["labnet", "course", "course-reference", "sentinel"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def connect(address) -> socket.socket:
    return socket.create_connection(address, timeout=IO_TIMEOUT)


def read_until(sock: socket.socket, end: bytes, step: int = 65536, buf: bytes = b"") -> tuple[bytes, bytes]:
    """``(bytes up to and with end, what came after)``; EOFError if the server closes first.
    Only the new bytes (and the few before them) are searched: reading a 4 MB reply 16 bytes at a
    time, like the course's reference client, stays linear."""
    got = bytearray(buf)
    start = 0
    while (at := got.find(end, start)) == -1:
        start = max(0, len(got) - len(end) + 1)
        data = sock.recv(step)
        if not data:
            raise EOFError(f"server closed; got {bytes(got[:120])!r}")
        got += data
    at += len(end)
    return bytes(got[:at]), bytes(got[at:])


def read_to_close(sock: socket.socket) -> bytes:
    out = []
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            out.append(data)
    except ConnectionResetError:
        pass
    return b"".join(out)


def course_reply(sock: socket.socket, buf: bytes = b"") -> tuple[dict, bytes]:
    """One ``course`` JSON reply (and the bytes after it)."""
    raw, rest = read_until(sock, REPLY_END, buf=buf)
    return json.loads(raw[: -len(REPLY_END)]), rest


def course_call(address, request: bytes) -> dict:
    """One request on a fresh connection, as most students' clients do; the JSON reply."""
    with connect(address) as s:
        s.sendall(request)
        return course_reply(s)[0]


def reference_get(address, name: str) -> bytes:
    """The course's reference client: ``GET name`` with NO terminator, ``recv(16)`` until ``\\r\\n\\r\\n``,
    then ``json.loads`` and ``base64.b64decode`` of the whole reply -- what students run."""
    with connect(address) as s:
        s.sendall(f"GET {name}".encode())
        raw, _ = read_until(s, REPLY_END, step=16)
    reply = json.loads(raw)
    assert reply["status"] == "OK", reply
    return base64.b64decode(reply["data_file"])


def sentinel_call(address, request: bytes) -> bytes:
    """A one-shot sentinel request (no terminator): everything the server sends until it closes."""
    with connect(address) as s:
        s.sendall(request)
        return read_to_close(s)


def seed_upload(address, name: str, data: bytes, block: int, marker: bytes = b"__END__") -> bytes:
    """The seed's client: ``UPLOAD name``, wait for ``READY``, every ``block`` bytes base64-encoded on its
    own (padding mid-stream), then the marker; returns the server's answer."""
    with connect(address) as s:
        s.sendall(f"UPLOAD {name}".encode())
        assert s.recv(1024) == b"READY"
        for i in range(0, len(data), block):
            s.sendall(base64.b64encode(data[i : i + block]))
        s.sendall(marker)
        return read_to_close(s)


def wait_for(check, timeout: float = 15.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > end:
            assert got, f"{what} not reached within {timeout:g} s"
            return got
        time.sleep(0.02)


def folder(root: Path) -> dict[str, int]:
    return {n: (root / n).stat().st_size for n in sorted(os.listdir(root))}


def wait_folder(root: Path, expected: dict[str, bytes]) -> None:
    """Bounded wait until ``root`` holds exactly ``expected`` (no temporary file), then compare bytes."""
    wait_for(lambda: sorted(os.listdir(root)) == sorted(expected), what=f"folder == {sorted(expected)}")
    for name, data in expected.items():
        assert sha((root / name).read_bytes()) == sha(data)


def counters(srv) -> dict:
    return read_counters(srv.counters_address)


def upload(srv, dialect: str, profile, path: Path, name: str) -> None:
    """Upload with labnet's own clients (StudentClient for the dialects); course-reference has no
    upload, so the file is placed in the folder, as the course's students do by hand."""
    if dialect == "labnet":
        with Client(*srv.address, timeout=IO_TIMEOUT) as c:
            c.upload(path, name=name)
    elif profile == "course-reference":
        tmp = srv.root / f".{name}.tmp"
        tmp.write_bytes(path.read_bytes())
        tmp.rename(srv.root / name)
    else:
        StudentClient(dialect, profile, *srv.address, timeout=IO_TIMEOUT).upload(path, name=name)


def download(srv, dialect: str, profile, name: str, dest: Path) -> str:
    """Download with labnet's clients; the SHA-256 of what arrived."""
    if dialect == "labnet":
        with Client(*srv.address, timeout=IO_TIMEOUT) as c:
            c.download(name, dest)
        return sha((dest / name).read_bytes())
    return StudentClient(dialect, profile, *srv.address, timeout=IO_TIMEOUT).download(name, dest).sha256


def listing(srv, dialect: str, profile) -> list[str]:
    if dialect == "labnet":
        with Client(*srv.address, timeout=IO_TIMEOUT) as c:
            return [n for n, _ in c.list()]
    return StudentClient(dialect, profile, *srv.address, timeout=IO_TIMEOUT).list()
