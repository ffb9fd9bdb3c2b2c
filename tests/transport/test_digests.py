"""Known digests, sendfile and the hashing helper thread: faster, never less safe.

* ``labnet.transport.digests``: a remembered digest is used only for the unchanged file;
* a stale one (forced here) is refused by the receiver with INTEGRITY and
  nothing is stored, in both directions;
* raw bodies with a known digest go out by ``sendfile``;
* ``labnet.transport.pipeline.ThreadedSHA256`` hashes exactly like hashlib, with a
  bounded queue.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

import labnet.client
import labnet.transport.channel
from labnet.client import Client
from labnet.config import ServerConfig
from labnet.errors import Code, PeerError, RemoteError
from labnet.protocol.receiver import NEED_DATA, BodyEnd, Data, Line, Receiver
from labnet.server.session import Flags, serve_connection
from labnet.server.stats import Stats
from labnet.server.store import FileStore
from labnet.transport import pipeline
from labnet.transport.digests import XATTR_NAME, DigestCache

pytestmark = pytest.mark.timeout(90)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xattrs_work(path) -> bool:
    try:
        os.setxattr(path, "user.labnet.probe", b"1")
        os.removexattr(path, "user.labnet.probe")
        return True
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------
# DigestCache
# --------------------------------------------------------------------------


@pytest.mark.parametrize("use_xattr", [False, True])
def test_cache_misses_once_the_file_changes(tmp_path, use_xattr):
    path = tmp_path / "f.bin"
    path.write_bytes(b"version 1")
    cache = DigestCache(use_xattr=use_xattr)
    with open(path, "rb") as f:
        assert cache.lookup(f.fileno()) is None
        assert cache.record(f.fileno(), sha(b"version 1"))
        assert cache.lookup(f.fileno()) == sha(b"version 1")
    time.sleep(0.01)
    path.write_bytes(b"version 2")  # same inode, new content: mtime and ctime change
    with open(path, "rb") as f:
        assert cache.lookup(f.fileno()) is None
    with open(path, "r+b") as f:  # same size, different bytes
        f.write(b"VERSION")
    with open(path, "rb") as f:
        assert cache.lookup(f.fileno()) is None


def test_record_refuses_a_file_that_changed_while_it_was_hashed(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"before")
    cache = DigestCache()
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        time.sleep(0.01)
        path.write_bytes(b"after!")
        assert not cache.record(f.fileno(), sha(b"before"), since=before)
        assert cache.lookup(f.fileno()) is None


def test_xattr_digest_is_checked_against_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    if not xattrs_work(path):
        pytest.skip("no user xattrs on this file system")
    st = path.stat()
    fresh = DigestCache(use_xattr=True)  # another worker process: nothing in memory
    os.setxattr(path, XATTR_NAME, f"v1 {st.st_size} {st.st_mtime_ns} {sha(b'abc')}".encode())
    with open(path, "rb") as f:
        assert fresh.lookup(f.fileno()) == sha(b"abc")
    os.setxattr(path, XATTR_NAME, f"v1 {st.st_size} {st.st_mtime_ns + 1} {sha(b'abc')}".encode())
    with open(path, "rb") as f:
        assert fresh.lookup(f.fileno()) is None
    for junk in (b"", b"v1 3", b"v2 3 1 " + b"0" * 64, b"\xff" * 10):
        os.setxattr(path, XATTR_NAME, junk)
        with open(path, "rb") as f:
            assert fresh.lookup(f.fileno()) is None


def test_store_records_digest_with_the_file_and_delete_drops_it(tmp_path):
    store = FileStore(tmp_path / "root")
    with store.begin_upload("f.bin", 5) as up:
        up.write(b"hello")
        up.commit(sha(b"hello"))
    f, _ = store.open_read("f.bin")
    with f:
        assert store.known_digest(f)[0] == sha(b"hello")
        if store.digests.use_xattr and xattrs_work(store.root / "f.bin"):
            assert os.getxattr(f.fileno(), XATTR_NAME).decode().endswith(sha(b"hello"))
            assert FileStore(store.root).known_digest(f)[0] == sha(b"hello")  # another process sees it
    assert [p.name for p in store.root.iterdir()] == ["f.bin"]  # no sidecar files
    store.delete("f.bin")
    (store.root / "f.bin").write_bytes(b"other")  # placed by hand under the same name
    f, _ = store.open_read("f.bin")
    with f:
        assert store.known_digest(f)[0] is None


# --------------------------------------------------------------------------
# Stale digests are caught by the receiver
# --------------------------------------------------------------------------


def test_stale_client_digest_is_refused_and_nothing_is_stored(start_server, model, tmp_path):
    srv = start_server(model, workers=2)
    path = tmp_path / "data.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    with open(path, "rb") as f:  # poison the client's cache: as if the file changed unnoticed
        labnet.client.UPLOAD_DIGESTS.record(f.fileno(), sha(b"something else"))
    with Client(*srv.address, timeout=30) as c:
        with pytest.raises(RemoteError) as info:
            c.upload(path, name="data.bin", encoding="raw")
        assert info.value.code is Code.INTEGRITY
    root = srv.root
    assert sorted(p.name for p in root.iterdir()) == []  # nothing stored, no temporary file left
    with Client(*srv.address, timeout=30) as c:  # the stale digest was forgotten: a retry works
        assert c.upload(path, name="data.bin", encoding="raw").sha256 == sha(data)
        assert c.list() == [("data.bin", len(data))]


@pytest.mark.parametrize("encoding", ["raw", "b64"])
def test_stale_server_digest_fails_the_download_and_nothing_appears(start_server, model, tmp_path, encoding):
    srv = start_server(model, workers=2)
    stored = srv.root / "f.bin"
    stored.write_bytes(os.urandom(200_000))
    if not xattrs_work(stored):
        pytest.skip("no user xattrs on this file system")
    st = stored.stat()
    os.setxattr(stored, XATTR_NAME, f"v1 {st.st_size} {st.st_mtime_ns} {sha(b'wrong')}".encode())
    dest = tmp_path / "downloads"
    with Client(*srv.address, timeout=30) as c:
        with pytest.raises(PeerError) as info:
            c.download("f.bin", dest, encoding=encoding)
        assert info.value.code is Code.INTEGRITY
    assert list(dest.iterdir()) == []


def test_file_placed_by_hand_is_hashed_then_remembered(start_server, tmp_path):
    srv = start_server("thread", workers=2)
    data = os.urandom(500_000)
    (srv.root / "hand.bin").write_bytes(data)
    with Client(*srv.address, timeout=30) as c:
        for _ in range(2):
            result = c.download("hand.bin", tmp_path / "dl", encoding="raw")
            assert result.sha256 == sha(data) and (tmp_path / "dl" / "hand.bin").read_bytes() == data


# --------------------------------------------------------------------------
# sendfile for raw bodies with a known digest
# --------------------------------------------------------------------------


@pytest.fixture
def count_sendfile(monkeypatch):
    calls = []
    real = os.sendfile

    def counting(out_fd, in_fd, offset, count):
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(labnet.transport.channel.os, "sendfile", counting)
    return calls


def test_client_upload_of_a_known_file_uses_sendfile(start_server, tmp_path, count_sendfile):
    srv = start_server("thread", workers=2)
    path = tmp_path / "up.bin"
    data = os.urandom(1_000_001)
    path.write_bytes(data)
    with Client(*srv.address, timeout=30) as c:
        c.upload(path, name="a.bin", encoding="raw")  # first time: hashed while sent
        assert count_sendfile == []
        assert c.upload(path, name="b.bin", encoding="raw").sha256 == sha(data)
        assert sum(count_sendfile) == len(data)
        count_sendfile.clear()
        c.upload(path, name="c.bin", encoding="b64")  # base64 must be encoded: no sendfile
        assert count_sendfile == []
    assert (srv.root / "b.bin").read_bytes() == data


def test_server_download_of_a_known_file_uses_sendfile(tmp_path, count_sendfile):
    store = FileStore(tmp_path / "root")
    data = os.urandom(700_000)
    with store.begin_upload("f.bin", len(data)) as up:
        up.write(data)
        up.commit(sha(data))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    flags = Flags(lambda: False, lambda: False)
    worker = threading.Thread(target=serve_connection, args=(ours, store, Stats(), ServerConfig(), flags))
    worker.start()
    try:
        theirs.settimeout(20)
        theirs.sendall(b"DOWNLOAD f.bin raw\r\nQUIT\r\n")
        rx = Receiver(65536)
        events = []
        while not events or not isinstance(events[-1], BodyEnd):
            event = rx.next_event()
            if event is NEED_DATA:
                rx.receive_data(theirs.recv(65536))
                continue
            events.append(event)
            if isinstance(event, Line) and event.text.startswith("OK 700000 raw"):
                rx.start_body(len(data), "raw")
        body = b"".join(e.data for e in events if isinstance(e, Data))
        assert body == data and events[-1] == BodyEnd(len(data), sha(data))
    finally:
        theirs.close()
        worker.join(20)
    assert sum(count_sendfile) == len(data)


# --------------------------------------------------------------------------
# ThreadedSHA256
# --------------------------------------------------------------------------


def test_threaded_hash_matches_hashlib_and_keeps_its_queue_bounded(monkeypatch):
    slow_hash = hashlib.sha256()

    class Slow:  # a hash slow enough that the caller gets ahead and has to wait
        def update(self, data):
            time.sleep(0.002)
            slow_hash.update(data)

        def hexdigest(self):
            return slow_hash.hexdigest()

    chunks = [os.urandom(70_000) for _ in range(40)]
    h = pipeline.ThreadedSHA256(depth=2, min_threaded=65536)
    h._sha = Slow()
    for c in chunks:
        h.update(c)
    assert h.threaded and 1 <= h.max_queued <= 2
    assert h.hexdigest() == sha(b"".join(chunks))
    assert pipeline.helpers_running() == 0


def test_threaded_hash_small_chunks_stay_in_line_and_order_is_kept():
    h = pipeline.ThreadedSHA256(min_threaded=1000)
    parts = [b"a" * 10, b"b" * 5000, b"c" * 3, b"d" * 2000]
    for p in parts:
        h.update(p)
    assert h.threaded
    assert h.hexdigest() == sha(b"".join(parts)) == h.hexdigest()
    with pytest.raises(RuntimeError):
        h.update(b"more")
    small = pipeline.ThreadedSHA256()
    small.update(b"x" * 100)
    assert not small.threaded and small.hexdigest() == sha(b"x" * 100)


def test_threaded_hash_disabled_or_out_of_helpers_hashes_in_line(monkeypatch):
    off = pipeline.ThreadedSHA256(min_threaded=1, enabled=False)
    off.update(b"x" * 10)
    assert not off.threaded and off.hexdigest() == sha(b"x" * 10)
    monkeypatch.setattr(pipeline, "MAX_HELPERS", 1)
    first, second = pipeline.ThreadedSHA256(min_threaded=1), pipeline.ThreadedSHA256(min_threaded=1)
    first.update(b"1" * 10)
    second.update(b"2" * 10)
    assert first.threaded and not second.threaded
    assert first.hexdigest() == sha(b"1" * 10) and second.hexdigest() == sha(b"2" * 10)
    assert pipeline.helpers_running() == 0


@pytest.mark.parametrize("encoding", ["raw", "b64"])
def test_receiver_with_a_threaded_hasher_still_checks_the_trailer(encoding):
    import base64

    data = os.urandom(400_000)
    wire = data if encoding == "raw" else base64.b64encode(data)
    for digest, ok in ((sha(data), True), ("0" * 64, False)):
        rx = Receiver()
        hasher = pipeline.ThreadedSHA256(min_threaded=1)
        rx.start_body(len(data), encoding, hasher=hasher)
        for i in range(0, len(wire), 100_000):
            rx.receive_data(wire[i : i + 100_000])
        rx.receive_data(f"SHA256 {digest}\r\n".encode())
        got = []
        try:
            while not isinstance(event := rx.next_event(), BodyEnd):
                got.append(event.data)
        except PeerError as exc:
            assert not ok and exc.code is Code.INTEGRITY
        else:
            assert ok and event == BodyEnd(len(data), sha(data)) and b"".join(got) == data
        finally:
            hasher.close()
        assert hasher.threaded
    assert pipeline.helpers_running() == 0
