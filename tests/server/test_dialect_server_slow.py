"""labnet's servers in every dialect x both models: the long matrix (``make test-slow``).

Dialects: ``labnet``, ``course`` (the default profile), ``course`` with the
``course-reference`` profile (the course's reference client: no terminator,
LIST and GET only), ``sentinel`` (the seed's).  For each, on the thread and
the process model: round trips of 0 B, 1 B, sizes around multiples of 3 and
a few MB; requests fed one byte at a time; the bad inputs of
``test_bad_input.py`` translated to the dialect (labnet's own are that
file's, on both models); nothing partial ever visible; graceful shutdown
with a transfer in flight; BUSY in the dialect's form; the connection log.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time

import pytest
from dialect_wire import (
    CASE_IDS,
    CASES,
    IO_TIMEOUT,
    REPLY_END,
    connect,
    counters,
    course_reply,
    download,
    listing,
    read_to_close,
    read_until,
    reference_get,
    seed_upload,
    sentinel_call,
    sha,
    upload,
    wait_folder,
    wait_for,
)

from labnet.measure.launcher import BackgroundServer
from labnet.procutil import alive
from labnet.protocol.messages import GREETING
from labnet.server.connlog import read_connection_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SIZES = [0, 1, 2, 3, 4, 5, 6, 2999, 3000, 3001, 3 * 2**20 - 1, 3 * 2**20, 3 * 2**20 + 1]


@pytest.fixture(scope="module", params=[(m, c) for m in ("thread", "process") for c in CASES],
                ids=[f"{m}-{i}" for m in ("thread", "process") for i in CASE_IDS])  # fmt: skip
def module_server(request, tmp_path_factory):
    model, (dialect, profile) = request.param
    base = tmp_path_factory.mktemp(f"{model}-{dialect}-{profile}")
    (base / "root").mkdir()
    server = BackgroundServer(model, workers=2, root=base / "root", dialect=dialect, profile=profile,
                              connection_log=base / "connections.jsonl").start()  # fmt: skip
    server.case = (dialect, profile)
    pids = server.pids()
    yield server
    server.stop()
    assert not [p for p in pids if alive(p)], "server processes left behind"


@pytest.fixture
def srv(module_server):
    """The module's server of this dialect and model; its folder is emptied after each test."""
    yield module_server
    for name in os.listdir(module_server.root):
        os.unlink(module_server.root / name)


def test_round_trips_of_every_size_are_whole(srv, tmp_path):
    dialect, profile = srv.case
    for size in SIZES:
        data = os.urandom(size)
        src = tmp_path / f"s{size}.bin"
        src.write_bytes(data)
        upload(srv, dialect, profile, src, src.name)
        wait_folder(srv.root, {src.name: data})
        assert download(srv, dialect, profile, src.name, tmp_path / "dl") == sha(data)
        if dialect == "course":  # the reply is one clean base64 string: plain code decodes all of it
            assert sha(reference_get(srv.address, src.name) if profile else _plain_get(srv, src.name)) == sha(data)
        os.unlink(srv.root / src.name)
    assert counters(srv)["verbs"]["DOWNLOAD"]["ok"] >= len(SIZES)


def _plain_get(srv, name: str) -> bytes:
    with connect(srv.address) as s:
        s.sendall(f"GET {name}\r\n\r\n".encode())
        reply, _ = course_reply(s)
    return base64.b64decode(reply["data_file"])


def _bytewise(sock: socket.socket, data: bytes) -> None:
    for byte in data:
        sock.sendall(bytes([byte]))


def test_requests_fed_one_byte_at_a_time(srv):
    dialect, profile = srv.case
    data = os.urandom(301)
    wire = base64.b64encode(data)
    if dialect == "labnet":
        with connect(srv.address) as s:
            read_until(s, b"\r\n")
            _bytewise(s, f"UPLOAD b.bin {len(data)} b64\r\n".encode())
            assert read_until(s, b"\r\n")[0].startswith(b"OK SEND")
            _bytewise(s, wire + f"SHA256 {sha(data)}\r\n".encode())
            assert read_until(s, b"\r\n")[0].startswith(b"OK STORED")
    elif dialect == "course" and profile is None:
        with connect(srv.address) as s:
            _bytewise(s, b"UPLOAD b.bin " + wire + b"\r\n\r\n")
            assert course_reply(s)[0]["status"] == "OK"
            _bytewise(s, b"GET b.bin\r\n\r\n")
            assert base64.b64decode(course_reply(s)[0]["data_file"]) == data
    elif dialect == "course":
        (srv.root / "b.bin").write_bytes(data)
        with connect(srv.address) as s:
            _bytewise(s, b"GET b.bin")  # no terminator: the silence after the last byte ends it
            reply, _ = course_reply(s)
            assert base64.b64decode(reply["data_file"]) == data
    else:
        with connect(srv.address) as s:
            _bytewise(s, b"UPLOAD b.bin")
            assert s.recv(64) == b"READY"
            _bytewise(s, wire + b"__END__")  # the marker arrives split in 7 reads
            assert read_to_close(s) == b"Upload successful"
        with connect(srv.address) as s:
            _bytewise(s, b"DOWNLOAD b.bin")
            assert read_to_close(s) == wire + b"__END__"
    wait_folder(srv.root, {"b.bin": data})


def test_several_requests_in_one_send(srv):
    dialect, profile = srv.case
    if dialect == "sentinel":
        pytest.skip("sentinel: one request per connection")
    (srv.root / "a.bin").write_bytes(b"abc")
    with connect(srv.address) as s:
        if dialect == "labnet":
            read_until(s, b"\r\n")
            s.sendall(b"LIST\r\nLIST\r\nQUIT\r\n")
            assert read_to_close(s).count(b"OK 1 files") == 2
        elif profile is None:
            s.sendall(b"LIST\r\n\r\nGET a.bin\r\n\r\nLIST\r\n\r\n")
            first, rest = course_reply(s)
            second, rest = course_reply(s, rest)
            third, rest = course_reply(s, rest)
            assert first == third == {"status": "OK", "data": ["a.bin"]}
            assert base64.b64decode(second["data_file"]) == b"abc"
        else:
            s.sendall(b"GET a.bin")  # one request at a time: the reference client waits for each reply
            assert base64.b64decode(course_reply(s)[0]["data_file"]) == b"abc"
            s.sendall(b"LIST")
            assert course_reply(s)[0]["data"] == ["a.bin"]


# -- bad input, translated ----------------------------------------------------------------------

BAD_NAMES = ["../x", "/etc/passwd", "a/b", "a\\b", ".", "..", "a\x00b", ".hidden", "x" * 256, "a\x1bb",
             "../../../../tmp/evil"]  # fmt: skip  (names with CR/LF/space are word breaks in these grammars)

COURSE_BAD = [  # (request, fragment of the error text or None) -- the connection stays usable after each
    (b"FETCH a.bin\r\n\r\n", "request tidak dikenali"),
    (b"GET / HTTP/1.1\r\n\r\n", "path separator"),  # a GET of the name "/"
    (b"GET\r\n\r\n", "no file name"),
    (b"DELETE\r\n\r\n", "no file name"),
    (b"UPLOAD\r\n\r\n", "no file name"),
    (b"GET missing.bin\r\n\r\n", "missing.bin"),
    (b"DELETE missing.bin\r\n\r\n", "missing.bin"),
] + [
    (f"{verb} {name}{args}\r\n\r\n".encode(), None)
    for name in BAD_NAMES
    for verb, args in (("UPLOAD", " aGVsbG8="), ("GET", ""), ("DELETE", ""))
]

SENTINEL_BAD = [  # (request, exact answer or prefix) -- the server closes after each
    (b"FETCH a.bin", b"Unknown command"),
    (b"GET / HTTP/1.1\r\n", b"Unknown command"),
    (b"DOWNLOAD", b"Filename not provided"),
    (b"UPLOAD", b"Filename not provided"),
    (b"DOWNLOAD missing.bin", b"File not found"),
    (b"A" * 5000, b"Unknown command"),
] + [(f"UPLOAD {name}".encode(), b"Error during upload: ") for name in BAD_NAMES] + [
    (f"DOWNLOAD {name}".encode(), None) for name in BAD_NAMES
]


@pytest.mark.parametrize("index", range(max(len(COURSE_BAD), len(SENTINEL_BAD))))
def test_bad_request_gets_the_dialects_error_and_nothing_is_stored(srv, index):
    dialect, profile = srv.case
    if dialect == "labnet":
        pytest.skip("labnet's own bad input: tests/server/test_bad_input.py, both models")
    if dialect == "course":
        if index >= len(COURSE_BAD):
            pytest.skip("fewer course cases")
        request, fragment = COURSE_BAD[index]
        if profile:  # no terminator: the request ends at the silence; LIST and GET only
            request = request.replace(b"\r\n\r\n", b"")
            if request.split(b" ")[0] in (b"UPLOAD", b"DELETE"):
                fragment = "request tidak dikenali"
        with connect(srv.address) as s:
            s.sendall(request)
            reply, rest = course_reply(s)
            assert reply["status"] == "ERROR" and reply["data"], reply
            assert fragment is None or fragment in reply["data"], reply
            assert not rest
            s.sendall(b"LIST" + (b"" if profile else b"\r\n\r\n"))
            assert course_reply(s)[0] == {"status": "OK", "data": []}
    else:
        if index >= len(SENTINEL_BAD):
            pytest.skip("fewer sentinel cases")
        request, answer = SENTINEL_BAD[index]
        got = sentinel_call(srv.address, request)
        assert got and not got.endswith(b"__END__"), got
        assert answer is None or got.startswith(answer), got
    wait_folder(srv.root, {})
    assert listing(srv, dialect, profile) == []


def _course_or_sentinel_upload_head(srv, name: str) -> socket.socket:
    dialect, profile = srv.case
    s = connect(srv.address)
    if dialect == "course":
        s.sendall(f"UPLOAD {name} ".encode())
    else:
        s.sendall(f"UPLOAD {name}".encode())
        assert s.recv(64) == b"READY"
    return s


@pytest.mark.parametrize("how", ["close", "half-close", "reset"])
def test_upload_cut_short_stores_nothing(srv, how):
    dialect, profile = srv.case
    if dialect == "labnet" or profile:
        pytest.skip("labnet: test_bad_input.py; course-reference has no upload")
    s = _course_or_sentinel_upload_head(srv, "short.bin")
    with s:
        s.sendall(base64.b64encode(os.urandom(300_000)))
        if how == "half-close":
            s.shutdown(socket.SHUT_WR)
            got = read_to_close(s)
            if dialect == "course":
                assert b'"ERROR"' in got, got
        elif how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_folder(srv.root, {})
    wait_for(lambda: counters(srv)["active"] == 0, what="no connection left active")


def test_invalid_base64_over_an_existing_file_keeps_the_old_version(srv):
    dialect, profile = srv.case
    if dialect == "labnet" or profile:
        pytest.skip("labnet: test_bad_input.py; course-reference has no upload")
    (srv.root / "doc.bin").write_bytes(b"previous")
    s = _course_or_sentinel_upload_head(srv, "doc.bin")
    with s:
        s.sendall(b"QUJD" * 100_000 + b"QU*D" + b"QUJD" * 1000 + (b"\r\n\r\n" if dialect == "course" else b"__END__"))
        got = read_to_close(s)
    assert (b'"ERROR"' in got) if dialect == "course" else got.startswith(b"Error during upload: "), got
    wait_folder(srv.root, {"doc.bin": b"previous"})


def test_disconnect_in_the_middle_of_a_download(srv):
    dialect, profile = srv.case
    data = os.urandom(1 << 20) * 20
    (srv.root / "big.bin").write_bytes(data)
    for i in range(3):
        with connect(srv.address) as s:
            if dialect == "labnet":
                read_until(s, b"\r\n")
                s.sendall(b"DOWNLOAD big.bin\r\n")
            elif dialect == "course":
                s.sendall(b"GET big.bin" + (b"" if profile else b"\r\n\r\n"))
            else:
                s.sendall(b"DOWNLOAD big.bin")
            got = 0
            while got < 100_000:
                got += len(s.recv(65536))
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_for(lambda: counters(srv)["verbs"]["DOWNLOAD"]["failed"] >= 3, what="3 failed downloads counted")
    wait_for(lambda: counters(srv)["active"] == 0, what="no connection left active")
    assert listing(srv, dialect, profile) == ["big.bin"]


def test_50_clients_connect_and_close_at_once(srv):
    before = counters(srv)["connections"]
    barrier = threading.Barrier(50)
    errors = []

    def hit(i: int) -> None:
        try:
            s = socket.create_connection(srv.address, timeout=IO_TIMEOUT)
            barrier.wait(IO_TIMEOUT)
            if i % 3 == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif i % 3 == 1:
                s.sendall(b"LI")
            s.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(IO_TIMEOUT * 2)
    assert not errors
    wait_for(lambda: (lambda s: s["connections"] >= before + 50 and s["active"] == 0 and s["waiting"] == 0)(
        counters(srv)), timeout=60, what="every connection served and let go")  # fmt: skip
    dialect, profile = srv.case
    assert listing(srv, dialect, profile) == []


# -- nothing partial, shutdown, admission, the connection log ---------------------------------------


def _slow_upload(srv, name: str, data: bytes, pieces: int, sent_half: threading.Event,
                 ending: threading.Event | None = None) -> dict:  # fmt: skip
    """Upload ``data`` in ``pieces`` sends 20 ms apart; returns {"reply": ...} when the server answered.
    ``ending`` is set just before the request's end (terminator, marker, trailer) is sent."""
    dialect, _ = srv.case
    wire = base64.b64encode(data)
    step = -(-len(wire) // pieces)
    result: dict = {}
    with connect(srv.address) as s:
        if dialect == "labnet":
            read_until(s, b"\r\n")
            s.sendall(f"UPLOAD {name} {len(data)} b64\r\n".encode())
            read_until(s, b"\r\n")
        elif dialect == "course":
            s.sendall(f"UPLOAD {name} ".encode())
        else:
            s.sendall(f"UPLOAD {name}".encode())
            assert s.recv(64) == b"READY"
        for i in range(0, len(wire), step):
            s.sendall(wire[i : i + step])
            if i >= len(wire) // 2:
                sent_half.set()
            time.sleep(0.02)
        if ending is not None:
            ending.set()
        ends = {"labnet": f"SHA256 {sha(data)}\r\n".encode(), "course": b"\r\n\r\n", "sentinel": b"__END__"}
        s.sendall(ends[dialect])
        if dialect == "course":
            result["reply"] = course_reply(s)[0]["status"]
        elif dialect == "labnet":
            result["reply"] = read_until(s, b"\r\n")[0].split()[1].decode()
        else:
            result["reply"] = read_to_close(s).decode()
    return result


def test_nothing_partial_is_ever_visible(srv):
    dialect, profile = srv.case
    if profile:
        pytest.skip("course-reference has no upload")
    data = os.urandom(2_000_000)
    half, ending = threading.Event(), threading.Event()
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(_slow_upload(srv, "p.bin", data, 40, half, ending)))
    t.start()
    looks = 0
    while not ending.is_set() and t.is_alive():
        visible = "p.bin" in os.listdir(srv.root) or "p.bin" in listing(srv, dialect, profile)
        # looked before the request's end was even sent: the server cannot have had a whole file
        assert not (visible and not ending.is_set()), "a partial upload was visible"
        looks += 1
        time.sleep(0.03)
    t.join(IO_TIMEOUT)
    assert looks >= 5
    assert out["reply"] in ("OK", "STORED", "Upload successful"), out
    wait_folder(srv.root, {"p.bin": data})


@pytest.mark.parametrize("model", ["thread", "process"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_graceful_shutdown_lets_a_transfer_in_flight_finish(start_server, model, case):
    dialect, profile = case
    srv = start_server(model, workers=2, dialect=dialect, profile=profile, grace=10.0)
    srv.case = case
    idle = connect(srv.address)  # a kept connection with nothing in flight: closed at once by the stop
    data = os.urandom(1_500_000)
    half = threading.Event()
    out: dict = {}
    if profile:  # course-reference: a GET in flight instead (no upload), read 16 bytes at a time
        (srv.root / "g.bin").write_bytes(data)

        def slow_get() -> None:
            with connect(srv.address) as s:
                s.sendall(b"GET g.bin")
                first = s.recv(16)  # the reply has begun: the request is in flight
                half.set()
                raw, _ = read_until(s, REPLY_END, step=16, buf=first)
            out["got"] = base64.b64decode(json.loads(raw)["data_file"])

        t = threading.Thread(target=slow_get)
    else:
        t = threading.Thread(target=lambda: out.update(_slow_upload(srv, "g.bin", data, 60, half)))
    t.start()
    assert half.wait(IO_TIMEOUT)
    srv.proc.send_signal(15)  # SIGTERM: a graceful stop
    t.join(IO_TIMEOUT)
    if profile:
        assert out["got"] == data
    else:
        assert out["reply"] in ("OK", "STORED", "Upload successful"), out
    assert (srv.root / "g.bin").read_bytes() == data
    idle.settimeout(IO_TIMEOUT)
    said = read_to_close(idle)
    idle.close()
    if dialect == "labnet":  # greeted, then told
        assert said.startswith(GREETING.encode()) and b"ERR SHUTDOWN" in said, said
    else:  # nothing asked, nothing said: closed
        assert said == b"", said
    assert srv.proc.wait(IO_TIMEOUT) == 0
    assert not [n for n in os.listdir(srv.root) if n.startswith(".")], "temporary files left"


@pytest.mark.parametrize("model", ["thread", "process"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_busy_refusal_in_the_dialects_form(start_server, model, case):
    dialect, profile = case
    srv = start_server(model, workers=1, dialect=dialect, profile=profile, max_waiting=1)
    with connect(srv.address) as held:
        wait_for(lambda: counters(srv)["active"] == 1, what="the worker busy")
        with connect(srv.address) as queued:
            wait_for(lambda: counters(srv)["waiting"] == 1, what="one waiting")
            with connect(srv.address) as third:
                refused = read_to_close(third)
            if dialect == "labnet":
                assert refused.startswith(b"ERR BUSY "), refused
            elif dialect == "course":
                assert refused.startswith(b'{"status": "ERROR", "data": "BUSY: ') and refused.endswith(REPLY_END)
            else:
                assert refused.startswith(b"Error: all 1 workers busy"), refused
            held.close()
            if dialect == "course":
                queued.sendall(b"LIST" + (b"" if profile else b"\r\n\r\n"))
                assert course_reply(queued)[0] == {"status": "OK", "data": []}  # no QUEUED line first
            elif dialect == "sentinel":
                queued.sendall(b"LIST")
                assert read_to_close(queued) == b"No files found."
            else:
                line, rest = read_until(queued, b"\r\n")
                assert line.startswith(b"OK LABNET 1 QUEUED")
                assert read_until(queued, b"\r\n", buf=rest)[0] == GREETING.encode() + b"\r\n"


def test_the_connection_log_records_every_connection(srv, tmp_path):
    dialect, profile = srv.case
    before = len(read_connection_log(srv.connection_log))
    data = os.urandom(3001)
    src = tmp_path / "c.bin"
    src.write_bytes(data)
    upload(srv, dialect, profile, src, "c.bin")
    download(srv, dialect, profile, "c.bin", tmp_path / "dl")
    if dialect == "sentinel":
        seed_upload(srv.address, "d.bin", data, block=1000)
    expected = {("download", "c.bin")} | ({("upload", "c.bin")} if not profile else set())
    expected |= {("upload", "d.bin")} if dialect == "sentinel" else set()

    def logged():  # the lines come as connections close, maybe after the clients returned
        got = [ln for ln in read_connection_log(srv.connection_log)[before:] if ln["requests"]]
        return got if expected <= {(r["op"], r["name"]) for ln in got for r in ln["requests"]} else None

    lines = wait_for(logged, what=f"log lines for {sorted(expected)}")
    requests = [r for ln in lines for r in ln["requests"]]
    for ln in lines:
        assert ln["kind"] == "connection" and ln["dialect"] == dialect
        assert ln["accepted"] <= ln["started"] <= ln["closed"] and ln["bytes_in"] > 0
    ops = [(r["op"], r["name"], r["ok"], r["size"]) for r in requests if r["op"] in ("upload", "download")]
    if not profile:
        assert ("upload", "c.bin", True, 3001) in ops
    assert ("download", "c.bin", True, 3001) in ops
    if dialect == "sentinel":
        seed = [r for r in requests if r["name"] == "d.bin"]
        assert seed and seed[0]["padded_midstream"] is True and seed[0]["ended_by"] == "marker"
