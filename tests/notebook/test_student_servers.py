"""The students' servers (``labnet.notebook.students``) do what their docstrings say -- their bugs included.

Each server runs as ``python -m labnet.notebook.students.<name> --port 0`` in its own session and
process group, with a unique ``LABNET_STUDENTS_TAG`` in its environment; the test reads its
``listening on HOST:PORT`` line, talks to it over raw sockets through labnet's sans-IO dialect
code (``labnet.protocol.dialects``: the built-in ``course`` and ``sentinel`` profiles), stops it
with SIGTERM, and checks that it exited with status 0 and left no process behind (its pool's
workers included).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from procfind import processes_with_env

from labnet.protocol.dialects import course_reply, course_request, get_profile, sentinel
from labnet.protocol.dialects.events import EndedEarly, NotUnderstood
from labnet.protocol.receiver import NEED_DATA, Data

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = ROOT / "labnet" / "notebook" / "students"
TAG = "LABNET_STUDENTS_TAG"
LISTENING = re.compile(rb"^listening on (\S+):(\d+)$", re.M)
COURSE = get_profile("course")
SENTINEL = get_profile("sentinel")
SIZES = (0, 1, 5000, 3_000_000)
MIB = 1 << 20
STOP_WITHIN = 5.0  # seconds from SIGTERM to exit (the servers poll for it twice a second)
LISTENERS = ["course_thread_server", "course_process_server", "sentinel_server", "course_truncating_server",
             "sentinel_blockpad_server", "course_lowercase_server", "course_noreply_server",
             "course_notjson_server", "course_endless_server", "course_recv32_server", "course_memhog_server"]  # fmt: skip


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 7919 + size).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- starting and stopping a student's server -------------------------------------------------


class Student:
    """One server process: started at once, ``wait_listening()`` for its address, ``stop()`` for its status."""

    def __init__(self, name: str, tmp: Path, root: Path, port: int = 0, workers: int = 2, backlog: int = 5):
        self.name, self.tag, self.root = name, uuid.uuid4().hex, root
        self.out, self.err = tmp / f"{name}-{self.tag}.out", tmp / f"{name}-{self.tag}.err"
        args = [sys.executable, "-m", f"labnet.notebook.students.{name}", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers), "--root", str(root), "--backlog", str(backlog)]  # fmt: skip
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT,
                                         env={**os.environ, TAG: self.tag}, start_new_session=True)  # fmt: skip

    def output(self) -> tuple[bytes, bytes]:
        return self.out.read_bytes(), self.err.read_bytes()

    def wait_line(self, pattern: re.Pattern, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.out.read_bytes())
            if found:
                return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out, err = self.output()
                pytest.fail(f"{self.name}: no {pattern.pattern!r} (exit {self.proc.poll()}); out={out!r} err={err!r}")
            time.sleep(0.02)

    def wait_listening(self) -> tuple[str, int]:
        found = self.wait_line(LISTENING)
        return found.group(1).decode(), int(found.group(2))

    def stop(self) -> tuple[int, float]:
        """SIGTERM; ``(exit status, seconds it took)``."""
        began = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(STOP_WITHIN * 2)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not stop within {STOP_WITHIN * 2} s of SIGTERM")
        return status, time.monotonic() - began

    def leftovers(self, wait: float = 5.0) -> list:
        deadline = time.monotonic() + wait
        while (left := processes_with_env(TAG, self.tag)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def kill(self) -> None:
        for pid, _ in processes_with_env(TAG, self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def launch(tmp_path):
    """``launch(name, **kw)`` -> a started :class:`Student`; every one is stopped at teardown (status 0 unless the
    test stopped it already) and must leave no process behind."""
    started: list[Student] = []

    def start(name: str, root: Path | None = None, **kw) -> Student:
        root = root or tmp_path / f"root-{len(started)}"
        root.mkdir(exist_ok=True)
        student = Student(name, tmp_path, root, **kw)
        started.append(student)
        return student

    yield start
    problems = []
    for student in started:
        running = student.proc.poll() is None
        status, _ = student.stop()
        if running and status != 0:
            problems.append(f"{student.name} exited with {status} on SIGTERM: {student.output()[1][-400:]!r}")
        left = student.leftovers()
        if left:
            student.kill()
            problems.append(f"{student.name} left processes behind: {left}")
    assert not problems, "\n".join(problems)


def stop_cleanly(student: Student) -> None:
    status, took = student.stop()
    assert status == 0, student.output()
    assert took < STOP_WITHIN, f"{student.name} took {took:.1f} s to stop"
    assert not student.leftovers(), f"{student.name} left processes behind"


# -- talking to them with labnet's sans-IO dialect code ------------------------------------------


def pump(sock: socket.socket, parser, raw: bytearray | None = None):
    """Feed ``parser`` from ``sock`` until it gives an event other than ``Data``: ``(that event, the Data joined)``."""
    got, closed = bytearray(), False
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            assert not closed, "the parser wants more after the peer closed"
            chunk = sock.recv(1 << 16)
            closed = not chunk
            if raw is not None:
                raw += chunk
            parser.receive_data(chunk)
        elif isinstance(event, Data):
            got += event.data
        else:
            return event, bytes(got)


def connect(address) -> socket.socket:
    return socket.create_connection(address, timeout=30)


def course_call(address, request: bytes, content: bool = False):
    """One ``course`` request, its reply parsed: ``(Reply, file bytes)``."""
    with connect(address) as sock:
        sock.sendall(request)
        return pump(sock, course_reply.ReplyParser(COURSE, content=content))


def course_upload(address, name: str, data: bytes) -> course_reply.Reply:
    framing = course_request.upload_request(COURSE, name, len(data))
    reply, _ = course_call(address, framing.head + base64.b64encode(data) + framing.tail)
    return reply


def course_download(address, name: str):
    return course_call(address, course_request.download_request(COURSE, name), content=True)


def course_list(address) -> tuple[str, ...]:
    reply, _ = course_call(address, course_request.list_request(COURSE))
    assert reply.ok, reply
    return reply.names


def paced_upload(address, name: str, data: bytes, piece: int = 4000, first_pause: float = 0.3, pause: float = 0.02):
    """An upload sent in pieces of ``piece`` base64 characters with pauses, as a slow client sends it.

    Stops sending as soon as the server has answered (a server that answers early closes, and
    sending on would only reset the connection).  ``(Reply, base64 characters sent)``.
    """
    framing = course_request.upload_request(COURSE, name, len(data))
    b64 = base64.b64encode(data)
    with connect(address) as sock:
        sent = 0
        sock.sendall(framing.head + b64[:piece])
        sent = min(piece, len(b64))
        time.sleep(first_pause)
        while not select.select([sock], [], [], 0)[0]:
            if sent >= len(b64):
                sock.sendall(framing.tail)
                break
            sock.sendall(b64[sent : sent + piece])
            sent = min(sent + piece, len(b64))
            time.sleep(pause)
        reply, _ = pump(sock, course_reply.ReplyParser(COURSE))
    return reply, sent


def sentinel_text(address, request: bytes, kind: str):
    with connect(address) as sock:
        sock.sendall(request)
        event, _ = pump(sock, sentinel.TextReplyParser(kind))
    return event


def sentinel_upload(address, name: str, data: bytes):
    framing = sentinel.upload_request(SENTINEL, name)
    with connect(address) as sock:
        sock.sendall(framing.head)
        prompt, _ = pump(sock, sentinel.PromptWaiter(SENTINEL))
        assert isinstance(prompt, sentinel.Prompt) and prompt.exact, prompt
        sock.sendall(base64.b64encode(data) + framing.tail)
        result, _ = pump(sock, sentinel.TextReplyParser("upload"))
    return result


def sentinel_download(address, name: str):
    """``(DownloadEnd or Refused, file bytes, the raw bytes received)``."""
    raw = bytearray()
    with connect(address) as sock:
        sock.sendall(sentinel.download_request(SENTINEL, name))
        event, data = pump(sock, sentinel.DownloadParser(SENTINEL), raw)
    return event, data, bytes(raw)


# -- the modules themselves ----------------------------------------------------------------------


def test_every_module_is_standalone_student_code():
    # the student-style clients (*_client.py) are checked in tests/measure/test_client_matrix.py
    names = sorted(p.stem for p in STUDENTS.glob("*.py") if p.stem != "__init__" and not p.stem.endswith("_client"))
    assert names == sorted(LISTENERS + ["exits_on_start", "never_listens"])
    for name in names:
        text = (STUDENTS / f"{name}.py").read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree)
        assert doc and ("``course``" in doc or "``sentinel``" in doc), f"{name}: its docstring names no dialect"
        bugs = text.count("# BUG (deliberate)")
        baseline = name in ("course_thread_server", "course_process_server", "sentinel_server")
        assert bugs == (0 if baseline else 1), f"{name}: {bugs} deliberate bug markers"
        assert ("no deliberate bug" in doc) == baseline, name
        assert f"python -m labnet.notebook.students.{name} " in doc, f"{name}: no command line in its docstring"
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            for mod in mods:
                assert mod.split(".")[0] in sys.stdlib_module_names, f"{name} imports {mod}"
        assert text.count("\n") < 160, f"{name} is {text.count(chr(10))} lines long"


# -- the baseline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["course_thread_server", "course_process_server"])
def test_correct_course_servers_round_trip_every_size(launch, name):
    student = launch(name)
    address = student.wait_listening()
    for size in SIZES:
        data = payload(size)
        reply = course_upload(address, f"f{size}.bin", data)
        assert reply.ok, reply
        assert sha((student.root / f"f{size}.bin").read_bytes()) == sha(data)
        reply, got = course_download(address, f"f{size}.bin")
        assert reply.ok and reply.file_name == f"f{size}.bin", reply
        assert sha(got) == sha(data)
        # (an empty "data_file" streams nothing: the parser then reports no content at all, not 0 bytes)
        assert reply.content_size == (size or None)
        assert not (reply.findings and reply.findings.padded_midstream)
    assert course_list(address) == tuple(sorted(f"f{size}.bin" for size in SIZES))
    reply, _ = course_call(address, course_request.delete_request(COURSE, "f1.bin"))
    assert reply.ok and "f1.bin" not in course_list(address)
    for request in (course_request.download_request(COURSE, "missing.bin"), b"GET ../etc/passwd\r\n\r\n",
                    course_request.delete_request(COURSE, "missing.bin")):  # fmt: skip
        reply, got = course_call(address, request, content=True)
        assert reply.status == "ERROR" and reply.message and got == b"", reply
    reply, _ = course_call(address, b"HELLO there\r\n\r\n")
    assert reply.status == "ERROR" and reply.message == course_reply.UNKNOWN_REQUEST
    reply, _ = course_call(address, b"UPLOAD bad.bin not*base64\r\n\r\n")
    assert reply.status == "ERROR" and "bad.bin" not in course_list(address)
    stop_cleanly(student)


@pytest.mark.parametrize("name", ["course_thread_server", "course_process_server"])
def test_correct_course_servers_serve_many_clients_at_once(launch, name):
    student = launch(name, workers=2)
    address = student.wait_listening()

    def one(i):
        data = payload(100_000, seed=i)
        assert course_upload(address, f"c{i}.bin", data).ok
        reply, got = course_download(address, f"c{i}.bin")
        return reply.ok and sha(got) == sha(data)

    with ThreadPoolExecutor(12) as pool:
        assert all(pool.map(one, range(12)))
    assert len(course_list(address)) == 12
    stop_cleanly(student)


def test_the_correct_server_takes_a_slow_upload_whole(launch):
    student = launch("course_thread_server")
    address = student.wait_listening()
    data = payload(30_000)
    reply, sent = paced_upload(address, "slow.bin", data)
    assert reply.ok and sent == len(base64.b64encode(data))
    assert (student.root / "slow.bin").read_bytes() == data


def test_sentinel_server_round_trips_every_size(launch):
    student = launch("sentinel_server")
    address = student.wait_listening()
    listing = sentinel_text(address, sentinel.list_request(SENTINEL), "list")
    assert listing.names == () and listing.text == sentinel.NO_FILES
    for size in SIZES:
        data = payload(size)
        result = sentinel_upload(address, f"s{size}.bin", data)
        assert result.ok and result.text == sentinel.UPLOAD_OK, result
        end, got, _ = sentinel_download(address, f"s{size}.bin")
        assert isinstance(end, sentinel.DownloadEnd) and end.size == size and sha(got) == sha(data)
        assert end.findings.segments == (1 if size else 0)  # several blocks, one continuous base64 string
    listing = sentinel_text(address, sentinel.list_request(SENTINEL), "list")
    assert listing.names == tuple(sorted(f"s{size}.bin" for size in SIZES))
    refused, got, _ = sentinel_download(address, "missing.bin")
    assert isinstance(refused, sentinel.Refused) and refused.text == sentinel.NOT_FOUND and got == b""
    refused = sentinel_text(address, b"HELLO", "list")
    assert isinstance(refused, sentinel.Refused) and refused.text == sentinel.UNKNOWN
    stop_cleanly(student)


# -- one deliberate bug each ------------------------------------------------------------------------


def test_truncating_server_stores_a_slow_upload_cut_short_and_says_ok(launch):
    student = launch("course_truncating_server")
    address = student.wait_listening()
    small = payload(2000)
    assert course_upload(address, "small.bin", small).ok  # one piece: the student's own test passes
    assert (student.root / "small.bin").read_bytes() == small
    data = payload(30_000)
    reply, sent = paced_upload(address, "slow.bin", data)
    assert reply.ok, reply  # "OK"...
    stored = (student.root / "slow.bin").read_bytes()
    assert len(stored) == 3000 and data.startswith(stored)  # ...for the first piece only: 4000 characters
    assert sent < len(base64.b64encode(data))
    reply, got = course_download(address, "slow.bin")
    assert reply.ok and got == stored and sha(got) != sha(data)


def test_blockpad_server_pads_mid_stream_and_only_a_segment_decoder_gets_the_whole_file(launch):
    student = launch("sentinel_blockpad_server")
    address = student.wait_listening()
    data = payload(2 * MIB + 12345)
    assert sentinel_upload(address, "big.bin", data).ok
    assert (student.root / "big.bin").read_bytes() == data
    end, got, raw = sentinel_download(address, "big.bin")
    assert isinstance(end, sentinel.DownloadEnd) and sha(got) == sha(data)  # labnet's SegmentDecoder: all of it
    assert end.findings.padded_midstream and end.findings.segments == 3
    assert raw.endswith(SENTINEL.marker.encode())
    naive = base64.b64decode(raw[: -len(SENTINEL.marker)])
    assert naive == data[:MIB]  # the student's client: the first block, silently
    small = payload(MIB)  # up to 1 MiB there is one block: the student's own test passes
    assert sentinel_upload(address, "small.bin", small).ok
    end, got, raw = sentinel_download(address, "small.bin")
    assert got == small and not end.findings.padded_midstream and base64.b64decode(raw[:-7]) == small


def test_lowercase_server_corrupts_uploads_and_lowercases_names(launch):
    student = launch("course_lowercase_server")
    address = student.wait_listening()
    data = payload(3000)
    b64 = base64.b64encode(data)
    assert b64 != b64.lower()
    reply = course_upload(address, "Mixed_Case.bin", data)
    assert reply.ok, reply  # "OK"...
    assert course_list(address) == ("mixed_case.bin",)
    stored = (student.root / "mixed_case.bin").read_bytes()
    assert stored == base64.b64decode(b64.lower()) and len(stored) == len(data) and stored != data
    reply, got = course_download(address, "mixed_case.bin")
    assert reply.ok and got == stored


def test_noreply_server_closes_a_get_without_a_byte(launch):
    student = launch("course_noreply_server")
    address = student.wait_listening()
    (student.root / "a.bin").write_bytes(payload(5000))
    assert course_list(address) == ("a.bin",)
    with connect(address) as sock:
        sock.sendall(course_request.download_request(COURSE, "a.bin"))
        assert sock.recv(1 << 16) == b""
    with pytest.raises(EndedEarly):
        course_download(address, "a.bin")


def test_notjson_server_answers_a_get_in_plain_text(launch):
    student = launch("course_notjson_server")
    address = student.wait_listening()
    data = payload(5000)
    (student.root / "a.bin").write_bytes(data)
    assert course_list(address) == ("a.bin",)
    with pytest.raises(NotUnderstood) as caught:
        course_download(address, "a.bin")
    assert caught.value.head.startswith(b"OK ")
    with connect(address) as sock:
        sock.sendall(course_request.download_request(COURSE, "a.bin"))
        raw = b"".join(iter(lambda: sock.recv(1 << 16), b""))
    assert raw == b"OK " + base64.b64encode(data) + course_reply.REPLY_END


def test_endless_server_never_ends_a_get_reply_and_still_stops(launch):
    student = launch("course_endless_server")
    address = student.wait_listening()
    (student.root / "a.bin").write_bytes(payload(5000))
    assert course_list(address) == ("a.bin",)
    parser = course_reply.ReplyParser(COURSE, content=True)
    received, deadline = 0, time.monotonic() + 2.0
    with connect(address) as sock:
        sock.sendall(course_request.download_request(COURSE, "a.bin"))
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                continue
            assert chunk, "the endless server closed the connection"
            received += len(chunk)
            parser.receive_data(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                assert isinstance(event, Data), event
        assert not parser.done  # two seconds and still no end: only a deadline catches it
        assert received > len(b'{"status": "OK", "data_namafile": "a.bin", "data_file": "') + 8  # it trickles
        stop_cleanly(student)


def test_exits_on_start_exits_1_with_a_traceback(launch):
    student = launch("exits_on_start")
    assert student.proc.wait(20) == 1
    out, err = student.output()
    assert b"listening on" not in out
    assert b"Traceback" in err and b"NameError" in err
    assert not student.leftovers()


def test_never_listens_runs_but_refuses_every_connection(launch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    student = launch("never_listens", port=port)
    student.wait_line(re.compile(rb"^server starting on ", re.M))
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert student.proc.poll() is None and b"listening on" not in student.output()[0]
    stop_cleanly(student)


# -- every server stops promptly, even with clients connected ----------------------------------------


@pytest.mark.parametrize("name", LISTENERS)
def test_every_server_stops_on_sigterm_with_clients_connected(launch, name):
    student = launch(name, workers=1, backlog=1)
    address = student.wait_listening()
    idle = connect(address)  # takes the only worker, says nothing
    waiting = connect(address)  # waits in the queue behind it
    try:
        time.sleep(0.3)
        stop_cleanly(student)
    finally:
        idle.close()
        waiting.close()
