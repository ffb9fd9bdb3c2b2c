"""Base64 bodies decoded in place from one reused buffer, written by a helper thread.

* ``Decoder.decode_prefix``: decodes whole groups at the start of a buffer
  and says how many bytes it used; the rest is the caller's to offer again.
* ``Receiver.body_room`` / ``take_partial_group`` / ``feed_body``: the sans-IO
  side -- bytes that arrived with the line come out as ``Data`` first, a
  partial group the receiver kept goes back to the I/O layer, errors break
  the receiver, the trailer is still checked.
* ``ThreadedWriter``: writes in order, bounded, and hands a write error to the
  caller's thread without ever blocking it.
* End to end in this process: a server connection and the client's download
  use the in-place path (counted), with body bytes in the request or reply
  packet, and refuse corrupted bodies keeping nothing.
"""

from __future__ import annotations

import base64
import hashlib
import threading

import pytest
from faultproxy import upload_by_hand
from hypothesis import given, settings
from hypothesis import strategies as st

from labnet.client import Client
from labnet.errors import Code, LocalError, PeerError
from labnet.protocol.codec import Decoder
from labnet.protocol.receiver import NEED_DATA, BodyEnd, Data, Receiver
from labnet.transport import pipeline, transfer


def body(size: int, seed: int = 1) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# --------------------------------------------------------------------------
# Decoder.decode_prefix
# --------------------------------------------------------------------------


def test_decode_prefix_uses_whole_groups_only():
    wire = bytearray(b64(b"abcdefgh"))  # "YWJjZGVmZ2g=": 12 bytes, padded last group
    assert Decoder("b64").decode_prefix(wire, 6) == (b"abc", 4)
    assert Decoder("b64").decode_prefix(wire, 3) == (b"", 0)
    # a padded group is used only when the caller says it is the last one
    assert Decoder("b64").decode_prefix(wire, 12) == (b"abcdef", 8)
    assert Decoder("b64").decode_prefix(wire, 12, final=True) == (b"abcdefgh", 12)


def test_decode_prefix_refuses_padding_before_the_end():
    wire = bytearray(b64(b"ab") + b64(b"cdef"))
    with pytest.raises(PeerError) as exc:
        Decoder("b64").decode_prefix(wire, len(wire), final=True)
    assert exc.value.code == Code.INTEGRITY


def test_decode_prefix_after_decode_kept_bytes_is_an_error():
    dec = Decoder("b64")
    assert dec.decode(b"YWJ") == b""
    with pytest.raises(RuntimeError):
        dec.decode_prefix(bytearray(b"jZGVm"), 5)
    assert dec.take_held() == b"YWJ" and dec.take_held() == b""


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), min_size=1, max_size=40))
def test_decode_prefix_with_carry_over_equals_one_decode(data, reads):
    """Read the wire in arbitrary pieces into one buffer, carrying the unused bytes to its front."""
    wire = b64(data)
    buf, kept, pos, out = bytearray(64), 0, 0, []
    dec = Decoder("b64")
    for n in reads * (len(wire) + 1):
        if pos == len(wire):
            break
        n = min(n, len(buf) - kept, len(wire) - pos)
        buf[kept : kept + n] = wire[pos : pos + n]
        pos += n
        got, used = dec.decode_prefix(buf, kept + n, final=pos == len(wire))
        out.append(got)
        kept = kept + n - used
        assert kept <= 4
        buf[:kept] = buf[used : used + kept]
    assert pos == len(wire) and kept == 0
    assert b"".join(out) == data


# --------------------------------------------------------------------------
# Receiver: the sans-IO side
# --------------------------------------------------------------------------


def feed(rx: Receiver, wire: bytes, piece: int = 7) -> bytes:
    """Feed ``wire`` through feed_body as an I/O layer would, ``piece`` bytes per read."""
    buf, out, pos = bytearray(32), [], 0
    kept = rx.take_partial_group()
    buf[: len(kept)] = kept
    kept = len(kept)
    while (room := rx.body_room()) > 0:
        n = min(piece, room - kept, len(buf) - kept)
        buf[kept : kept + n] = wire[pos : pos + n]
        pos += n
        data, used = rx.feed_body(buf, kept + n)
        out.append(data)
        kept = kept + n - used
        buf[:kept] = buf[used : used + kept]
    assert pos == len(wire)
    return b"".join(out)


def test_feed_body_after_data_that_came_with_the_line():
    data = body(1000)
    wire = b64(data)
    rx = Receiver()
    assert rx.body_room() == 0  # not in a body
    rx.start_body(len(data), "b64")
    rx.receive_data(wire[:301])  # arrived with the line: comes out first, one char kept back
    assert rx.body_room() == 0
    first = rx.next_event()
    assert first == Data(data[:225])
    assert rx.body_room() == len(wire) - 301
    kept = rx.take_partial_group()
    assert kept == wire[300:301] and rx.body_room() == len(wire) - 300
    rx.receive_data(kept)  # given back unused: the receiver accounts for it again
    assert rx.body_room() == 0 and rx.next_event() is NEED_DATA
    rest = feed(rx, wire[301:])  # takes the kept byte again, first in its buffer
    assert first.data + rest == data and rx.body_received == len(data)
    assert rx.body_room() == 0 and rx.next_event() is NEED_DATA
    rx.receive_data(f"SHA256 {sha(data)}\r\n".encode())
    assert rx.next_event() == BodyEnd(len(data), sha(data))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 299, 300, 301])
@pytest.mark.parametrize("piece", [1, 3, 5, 32])
def test_feed_body_round_trips_any_size_and_read_size(size, piece):
    data = body(size)
    rx = Receiver()
    h = hashlib.sha256()
    rx.start_body(size, "b64", hasher=h)
    assert feed(rx, b64(data), piece) == data
    assert h.hexdigest() == sha(data)
    rx.receive_data(f"SHA256 {sha(data)}\r\n".encode())
    assert rx.next_event() == BodyEnd(size, sha(data))


def test_feed_body_checks_the_trailer():
    data = body(600)
    rx = Receiver()
    rx.start_body(600, "b64")
    feed(rx, b64(b"X" + data[1:]))
    rx.receive_data(f"SHA256 {sha(data)}\r\n".encode())
    with pytest.raises(PeerError) as exc:
        rx.next_event()
    assert exc.value.code == Code.INTEGRITY and rx.broken


@pytest.mark.parametrize(
    "wire, declared",
    [
        (b64(b"ab") + b64(b"cd"), 4),  # padding in the middle
        (b"YW!j" * 4, 12),  # not base64
        (b64(b"abcd"), 5),  # decodes to fewer bytes than declared (wire length matches 5)
    ],
)
def test_feed_body_errors_break_the_receiver(wire, declared):
    rx = Receiver()
    rx.start_body(declared, "b64")
    assert rx.body_room() == len(wire)
    with pytest.raises(PeerError) as exc:
        feed(rx, wire, piece=32)
    assert exc.value.code == Code.INTEGRITY and rx.broken
    assert rx.body_room() == 0


def test_feed_body_beyond_the_room_is_a_programming_error():
    rx = Receiver()
    rx.start_body(3, "b64")
    with pytest.raises(RuntimeError):
        rx.feed_body(bytearray(b"YWJjYWJj"), 8)


# --------------------------------------------------------------------------
# ThreadedWriter
# --------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_threaded_writer_writes_in_order(enabled):
    got = []
    w = pipeline.ThreadedWriter(got.append, depth=2, min_threaded=1, enabled=enabled)
    chunks = [body(100, seed) for seed in range(50)]
    try:
        for c in chunks:
            w.write(c)
        w.finish()
    finally:
        w.close()
    assert got == chunks
    assert w.threaded == enabled and w.max_queued <= 2
    assert pipeline.helpers_running() == 0


@pytest.mark.slow
def test_threaded_writer_hands_the_error_to_the_caller_and_never_blocks_it():
    calls = []
    gate = threading.Event()

    def failing_write(data):
        calls.append(data)
        if len(calls) == 3:
            gate.wait(5)
            raise LocalError("disk full", Code.STORAGE)

    w = pipeline.ThreadedWriter(failing_write, depth=2, min_threaded=1)
    raised = None
    try:
        for i in range(200):  # far more than the queue holds: the helper must keep draining
            if i == 10:
                gate.set()
            try:
                w.write(b"x" * 10)
            except LocalError as exc:
                raised = exc
                break
        with pytest.raises(LocalError) as exc:
            w.finish()
        assert exc.value.code == Code.STORAGE
    finally:
        w.close()
    assert raised is None or raised.code == Code.STORAGE
    assert len(calls) == 3  # nothing written after the error
    assert pipeline.helpers_running() == 0


# --------------------------------------------------------------------------
# End to end, in process
# --------------------------------------------------------------------------


@pytest.fixture
def fed(monkeypatch):
    """Count the wire bytes decoded in place (in this process)."""
    pieces = []
    real = Receiver.feed_body

    def counting(self, buf, end):
        result = real(self, buf, end)
        pieces.append(result[1])
        return result

    monkeypatch.setattr(Receiver, "feed_body", counting)
    return pieces


@pytest.mark.parametrize("first", [0, 1, 4, 5003])
def test_server_upload_decodes_in_place(inproc_server, fed, first):
    address, store = inproc_server
    data = body(3 * 1024 * 1024 + 2)
    wire = b64(data)
    reply = upload_by_hand(address, "up.bin", len(data), "b64", wire, sha(data), first)
    assert reply.startswith(f"OK STORED up.bin {len(data)} {sha(data)}".encode())
    assert (store.root / "up.bin").read_bytes() == data
    assert len(wire) - first <= sum(fed) <= len(wire)  # all but what came with the line


@pytest.mark.parametrize("corruption", ["bit", "padding"])
def test_server_refuses_a_corrupted_body_and_stores_nothing(inproc_server, fed, corruption):
    address, store = inproc_server
    data = body(2 * 1024 * 1024)
    wire = bytearray(b64(data))
    if corruption == "bit":
        wire[-1000] = ord("A") if wire[-1000] != ord("A") else ord("B")  # still base64: the digest catches it
    else:
        wire[len(wire) // 2 : len(wire) // 2 + 4] = b"QQ=="
    reply = upload_by_hand(address, "bad.bin", len(data), "b64", bytes(wire), sha(data), first=0)
    assert reply.startswith(b"ERR INTEGRITY")
    assert fed
    assert store.list() == [] and store.temp_files() == []


@pytest.mark.parametrize("helpers", [True, False])
def test_client_download_decodes_in_place(inproc_server, fed, tmp_path, monkeypatch, helpers):
    started = []
    real_start = pipeline.ThreadedWriter._start

    def start(self):
        ok = real_start(self)
        started.append(ok)
        return ok

    monkeypatch.setattr(pipeline.ThreadedWriter, "_start", start)
    # The in-process server shares this process's helper budget (its hashing helper may hold the only
    # slot on 2 cores): give the client's writer a slot of its own, or none at all.
    monkeypatch.setattr(pipeline, "MAX_HELPERS", 2 if helpers else 0)
    address, store = inproc_server
    data = body(2 * 1024 * 1024 + 1)
    (store.root / "d.bin").write_bytes(data)
    with Client(*address, timeout=10) as c:
        result = c.download("d.bin", tmp_path / "dl", encoding="b64")
    assert result.sha256 == sha(data)
    assert (tmp_path / "dl" / "d.bin").read_bytes() == data
    assert sum(fed) > 0
    assert any(started) == helpers
    assert pipeline.helpers_running() == 0


def test_buffers_are_bounded():
    assert transfer.SMALL_BUFFER <= transfer.BUFFER <= 4 << 20
