"""labnet's servers in the students' dialects (``course``, ``sentinel``): the fast, representative cases.

Pure parts without sockets (the store's upload of unknown size, the
connection log reader), one in-process check that a ``course`` session holds
a bounded buffer whatever the file size, then real servers (both models for
``course``, the thread model for the others; one server per module and
case) driven by labnet's StudentClient and by the students' clients written
out by hand (``dialect_wire``).  The long matrix -- every dialect x model x
size x bad input, shutdown, admission -- is ``test_dialect_server_slow.py``.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import tracemalloc

import pytest
from dialect_wire import (
    IO_TIMEOUT,
    connect,
    counters,
    course_call,
    course_reply,
    read_to_close,
    reference_get,
    seed_upload,
    sentinel_call,
    sha,
    wait_folder,
    wait_for,
)

from labnet.client import StudentClient
from labnet.config import ServerConfig
from labnet.errors import Code, PeerError
from labnet.measure.launcher import BackgroundServer
from labnet.protocol.dialects.course_request import REQUEST_SILENCE
from labnet.server.connlog import append_line, read_connection_log
from labnet.server.dialect_session import serve_dialect_connection
from labnet.server.session import Flags
from labnet.server.stats import Stats
from labnet.server.store import FileStore

# -- no sockets ------------------------------------------------------------------------------


def test_the_request_silence_is_one_documented_constant():
    assert REQUEST_SILENCE == 0.2


def test_upload_of_unknown_size_enforces_max_upload_while_streaming(tmp_path):
    store = FileStore(tmp_path, max_upload=10)
    with store.begin_upload("a.bin", None) as up:
        up.write(b"x" * 6)
        with pytest.raises(PeerError) as caught:
            up.write(b"y" * 5)
        assert caught.value.code == Code.TOO_LARGE
    assert os.listdir(tmp_path) == []  # the temporary file went with the error
    with store.begin_upload("b.bin", None) as up:
        up.write(b"z" * 10)
        up.commit()
    assert (tmp_path / "b.bin").read_bytes() == b"z" * 10


def test_connection_log_reader_skips_a_partial_last_line(tmp_path):
    path = tmp_path / "conn.jsonl"
    append_line(str(path), {"kind": "connection", "n": 1})
    append_line(str(path), {"kind": "connection", "n": 2})
    with open(path, "ab") as fh:
        fh.write(b'{"kind": "connection", "n": 3, "req')  # a writer killed mid-line
    assert [line["n"] for line in read_connection_log(path)] == [1, 2]
    assert read_connection_log(tmp_path / "missing.jsonl") == []


def _serve_in_thread(tmp_path, dialect="course"):
    """A dialect session on one end of a TCP connection, in a thread of this process."""
    store = FileStore(tmp_path / "srv")
    config = ServerConfig(dialect=dialect, idle_timeout=10.0)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # TCP, as a server's worker gets it
        client_end = socket.create_connection(listener.getsockname(), timeout=IO_TIMEOUT)
        server_end, _ = listener.accept()
    flags = Flags(lambda: False, lambda: False)
    worker = threading.Thread(target=serve_dialect_connection, args=(server_end, store, Stats(), config, flags))
    worker.start()
    return store, client_end, worker


@pytest.mark.timeout(60)
def test_a_course_session_holds_a_bounded_buffer_whatever_the_file_size(tmp_path):
    """18 MB up and down through one course connection: Python's peak allocation stays a few MiB
    (reading pieces of 256 KiB, download pieces of 768 KiB), far below the file (a session that held
    the request, its base64 or the file would need 18-42 MB)."""
    size = 18_000_000
    block = os.urandom(3 * 100_000)
    wire_block = base64.b64encode(block)  # whole 3-byte groups: blocks concatenate into one base64 string
    data_sha = sha(block * (size // len(block)))
    tracemalloc.start()
    try:
        store, sock, worker = _serve_in_thread(tmp_path)
        with sock:
            sock.settimeout(IO_TIMEOUT)
            sock.sendall(b"UPLOAD big.bin ")
            for _ in range(size // len(block)):
                sock.sendall(wire_block)
            sock.sendall(b"\r\n\r\n")
            reply, rest = course_reply(sock)
            assert reply["status"] == "OK", reply
            sock.sendall(b"GET big.bin\r\n\r\n")
            head, rest = b"", rest
            while b'"data_file": "' not in head:
                head += sock.recv(65536)
            while not head.endswith(b"\r\n\r\n"):  # drop the body as it comes, keep only the tail
                piece = sock.recv(1 << 20)
                assert piece, "the server closed in the middle of the reply"
                head = head[-8:] + piece
        worker.join(IO_TIMEOUT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sha((store.root / "big.bin").read_bytes()) == data_sha
    assert peak < 8 * 1024 * 1024, f"peak Python allocation {peak} bytes for a {size}-byte file"


# -- course, both models ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["thread", "process"])
def course_srv(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"course-{request.param}")
    (base / "root").mkdir()
    server = BackgroundServer(request.param, workers=2, root=base / "root", dialect="course",
                              connection_log=base / "connections.jsonl").start()  # fmt: skip
    yield server
    server.stop()


def _client(srv, profile=None) -> StudentClient:
    return StudentClient(srv.dialect, profile, *srv.address, timeout=IO_TIMEOUT)


@pytest.mark.timeout(60)
def test_course_round_trips_are_whole(course_srv, tmp_path):
    client = _client(course_srv)
    for size in (0, 1, 2, 3, 4, 300_001):
        data = os.urandom(size)
        src = tmp_path / f"f{size}.bin"
        src.write_bytes(data)
        client.upload(src)
        assert sha((course_srv.root / src.name).read_bytes()) == sha(data)
        assert client.download(src.name, tmp_path / "dl").sha256 == sha(data)
    # the reply is one clean base64 string: plain base64.b64decode gets the whole file
    reply = course_call(course_srv.address, b"GET f300001.bin\r\n\r\n")
    assert sha(base64.b64decode(reply["data_file"])) == sha((course_srv.root / "f300001.bin").read_bytes())
    assert reply["data_namafile"] == "f300001.bin"
    for name in sorted(os.listdir(course_srv.root)):
        client.delete(name)
    wait_folder(course_srv.root, {})


@pytest.mark.timeout(60)
def test_course_requests_one_byte_at_a_time_and_several_in_one_send(course_srv):
    (course_srv.root / "x.bin").write_bytes(b"hello")
    with connect(course_srv.address) as s:
        for byte in b"LIST\r\n\r\n":
            s.sendall(bytes([byte]))
        reply, rest = course_reply(s)
        assert reply == {"status": "OK", "data": ["x.bin"]}
        s.sendall(b"GET x.bin\r\n\r\nUPLOAD y.bin d29ybGQ=\r\n\r\nLIST\r\n\r\nDELETE x.bin\r\n\r\nLIST\r\n\r\n")
        replies = []
        for _ in range(5):
            reply, rest = course_reply(s, rest)
            replies.append(reply)
    assert base64.b64decode(replies[0]["data_file"]) == b"hello"
    assert replies[1]["status"] == "OK"
    assert replies[2]["data"] == ["x.bin", "y.bin"]
    assert replies[3]["status"] == "OK"
    assert replies[4]["data"] == ["y.bin"]
    wait_folder(course_srv.root, {"y.bin": b"world"})
    (course_srv.root / "y.bin").unlink()


@pytest.mark.timeout(60)
def test_course_block_by_block_base64_is_stored_whole(course_srv):
    blocks = [os.urandom(1000), os.urandom(1000), os.urandom(998)]  # 1000 % 3 == 1: each block padded
    wire = b"".join(base64.b64encode(b) for b in blocks)
    assert base64.b64decode(wire) == blocks[0]  # what a plain decoder would have kept
    reply = course_call(course_srv.address, b"UPLOAD seed.bin " + wire + b"\r\n\r\n")
    assert reply["status"] == "OK", reply
    wait_folder(course_srv.root, {"seed.bin": b"".join(blocks)})
    (course_srv.root / "seed.bin").unlink()


@pytest.mark.timeout(60)
def test_course_bad_input_gets_an_error_reply_and_nothing_is_stored(course_srv):
    (course_srv.root / "doc.bin").write_bytes(b"previous version")
    with connect(course_srv.address) as s:  # errors that keep the stream in sync: the connection stays usable
        for request in (b"FETCH a.bin\r\n\r\n", b"GET missing.bin\r\n\r\n", b"UPLOAD ../x aGVsbG8=\r\n\r\n",
                        b"DELETE .hidden\r\n\r\n", b"GET\r\n\r\n"):  # fmt: skip
            s.sendall(request)
            reply, rest = course_reply(s)
            assert reply["status"] == "ERROR" and reply["data"], (request, reply)
            assert not rest
        s.sendall(b"LIST\r\n\r\n")
        assert course_reply(s)[0]["data"] == ["doc.bin"]
    with connect(course_srv.address) as s:  # bad base64 over an existing name: error, closed, old version stays
        s.sendall(b"UPLOAD doc.bin aGVsbG8*d29y" + b"QUJD" * 50_000 + b"\r\n\r\n")
        reply, rest = course_reply(s)
        assert reply["status"] == "ERROR" and "base64" in reply["data"], reply
        assert read_to_close(s) == rest == b""
    with connect(course_srv.address) as s:  # cut short: the client closes before the terminator
        s.sendall(b"UPLOAD cut.bin " + b"QUJD" * 10_000)
        s.shutdown(socket.SHUT_WR)
        assert course_reply(s)[0]["status"] == "ERROR"
    wait_folder(course_srv.root, {"doc.bin": b"previous version"})
    (course_srv.root / "doc.bin").unlink()
    snap = counters(course_srv)
    assert snap["verbs"]["UPLOAD"]["failed"] >= 3 and snap["verbs"]["INVALID"]["failed"] >= 1


@pytest.mark.timeout(60)
def test_the_connection_log_has_one_line_per_connection(course_srv, tmp_path):
    log_path = course_srv.connection_log
    before = len(read_connection_log(log_path))
    blocks = [os.urandom(1000), os.urandom(2000)]
    reply = course_call(course_srv.address, b"UPLOAD log.bin " + b"".join(map(base64.b64encode, blocks)) + b"\r\n\r\n")
    assert reply["status"] == "OK"
    course_call(course_srv.address, b"NOPE\r\n\r\n")
    lines = wait_for(lambda: read_connection_log(log_path)[before:] if len(read_connection_log(log_path)) >= before + 2
                     else None, what="two log lines")  # fmt: skip
    # two workers: the lines come in the order the connections closed, not the order they were opened
    up = next(ln for ln in lines if ln["requests"] and ln["requests"][0]["op"] == "upload")
    nope = next(ln for ln in lines if ln["requests"] and ln["requests"][0]["verb"] == "NOPE")
    assert set(up) == {"kind", "dialect", "peer", "pid", "accepted", "started", "closed", "bytes_in", "bytes_out",
                       "requests"}  # fmt: skip
    assert up["kind"] == "connection" and up["dialect"] == "course"
    assert up["peer"].startswith("127.0.0.1:") and isinstance(up["pid"], int)
    assert up["accepted"] <= up["started"] <= up["closed"]
    assert up["bytes_in"] > 4000 and up["bytes_out"] > 0
    assert up["requests"] == [{"op": "upload", "verb": "UPLOAD", "name": "log.bin", "ok": True, "size": 3000,
                               "error": None, "ended_by": "terminator", "padded_midstream": True}]  # fmt: skip
    assert nope["requests"][0]["op"] is None and nope["requests"][0]["ok"] is False
    assert nope["requests"][0]["error"] == "request tidak dikenali"
    (course_srv.root / "log.bin").unlink()


# -- sentinel, the course's reference client, admission -----------------------------------------


@pytest.mark.timeout(60)
def test_sentinel_the_seeds_client_gets_whole_files(tmp_path, start_server):
    srv = start_server("thread", workers=2, dialect="sentinel")
    data = os.urandom(3000)
    assert seed_upload(srv.address, "seed.bin", data, block=1000) == b"Upload successful"
    wait_folder(srv.root, {"seed.bin": data})
    client = StudentClient("sentinel", None, *srv.address, timeout=IO_TIMEOUT)
    assert client.download("seed.bin", tmp_path).sha256 == sha(data)
    assert client.list() == ["seed.bin"]
    assert sentinel_call(srv.address, b"FETCH seed.bin") == b"Unknown command"
    assert sentinel_call(srv.address, b"DOWNLOAD missing.bin") == b"File not found"
    assert sentinel_call(srv.address, b"UPLOAD") == b"Filename not provided"
    assert sentinel_call(srv.address, b"UPLOAD ../evil.bin").startswith(b"Error during upload: ")
    with connect(srv.address) as s:  # invalid base64: an error, nothing stored
        s.sendall(b"UPLOAD bad.bin")
        assert s.recv(64) == b"READY"
        s.sendall(b"QUJD*QUJD__END__")
        assert read_to_close(s).startswith(b"Error during upload: ")
    wait_folder(srv.root, {"seed.bin": data})


@pytest.mark.timeout(60)
def test_course_reference_client_no_terminator_reads_16_bytes(start_server):
    srv = start_server("thread", workers=2, dialect="course", profile="course-reference")
    data = os.urandom(100_001)
    (srv.root / "ref.bin").write_bytes(data)
    assert reference_get(srv.address, "ref.bin") == data
    with connect(srv.address) as s:  # the reference client keeps its connection: a second request on it
        s.sendall(b"LIST")
        assert course_reply(s)[0] == {"status": "OK", "data": ["ref.bin"]}
        s.sendall(b"LIST")
        assert course_reply(s)[0] == {"status": "OK", "data": ["ref.bin"]}


@pytest.mark.timeout(60)
def test_busy_refusal_in_the_course_form(start_server):
    srv = start_server("thread", workers=1, dialect="course", max_waiting=1)
    with connect(srv.address) as held:  # takes the only worker
        wait_for(lambda: counters(srv)["active"] == 1, what="the worker busy")
        with connect(srv.address) as queued:
            wait_for(lambda: counters(srv)["waiting"] == 1, what="one waiting")
            with connect(srv.address) as third:
                reply, _ = course_reply(third)
                assert reply["status"] == "ERROR" and reply["data"].startswith("BUSY"), reply
            queued.sendall(b"LIST\r\n\r\n")
            held.close()
            assert course_reply(queued)[0] == {"status": "OK", "data": []}  # no QUEUED line before it
    assert counters(srv)["busy"] == 1
