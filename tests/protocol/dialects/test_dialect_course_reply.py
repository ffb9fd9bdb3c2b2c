"""``course`` replies (labnet.protocol.dialects.course_reply): built in chunks by a server, streamed by a client."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random

import pytest
from dialect_drive import data_of, drain, drive, rng, without_data
from hypothesis import given, settings
from hypothesis import strategies as st

from labnet.errors import Code, PeerError
from labnet.protocol.codec import Encoder
from labnet.protocol.dialects import PROFILES
from labnet.protocol.dialects.course_reply import (
    Reply,
    ReplyParser,
    content_reply,
    error_reply,
    list_reply,
    ok_reply,
    ready_reply,
)
from labnet.protocol.dialects.events import EndedEarly, NotUnderstood
from labnet.protocol.receiver import Data

COURSE = PROFILES["course"]
OTHER = dataclasses.replace(COURSE, name="other", content_key="file_data", list_key="files", message_key="message")
SPLITS = ["whole", "bytes", 3, 64, rng(5)]
KiB = 1024


def reply_of(events) -> Reply:
    assert isinstance(events[-1], Reply)
    return events[-1]


def parse(data: bytes, profile=COURSE, content=True, how="whole", **kw):
    return drive(ReplyParser(profile, content=content, **kw), data, how)


def streamed(profile, name: str, content: bytes, blocks: int | None = None) -> bytes:
    """A download reply as a server writes it: head, base64 in chunks, tail."""
    frame = content_reply(profile, name)
    if blocks:  # a block-by-block encoder
        body = b"".join(base64.b64encode(content[i : i + blocks]) for i in range(0, len(content), blocks))
    else:
        enc = Encoder("b64")
        body = b"".join(enc.encode(content[i : i + 1000]) for i in range(0, len(content), 1000)) + enc.finish()
    return frame.head + body + frame.tail


def test_the_small_replies_are_what_json_dumps_writes():
    assert list_reply(COURSE, ["a.bin", "b.bin"]) == b'{"status": "OK", "data": ["a.bin", "b.bin"]}\r\n\r\n'
    assert ok_reply(COURSE, "stored") == b'{"status": "OK", "data": "stored"}\r\n\r\n'
    assert error_reply(COURSE, "request tidak dikenali") == \
        b'{"status": "ERROR", "data": "request tidak dikenali"}\r\n\r\n'  # fmt: skip
    assert ready_reply(COURSE) == b'{"status": "READY"}\r\n\r\n'
    assert list_reply(OTHER, []) == b'{"status": "OK", "files": []}\r\n\r\n'
    assert error_reply(OTHER, "n\u00e9") == b'{"status": "ERROR", "message": "n\\u00e9"}\r\n\r\n'
    content = b"\x00\x01hello"
    wire = streamed(COURSE, "x.bin", content)
    assert wire.endswith(b"\r\n\r\n")
    assert json.loads(wire) == {
        "status": "OK",
        "data_namafile": "x.bin",
        "data_file": base64.b64encode(content).decode(),
    }


@pytest.mark.parametrize("profile", [COURSE, OTHER], ids=["course", "other-keys"])
@pytest.mark.parametrize("how", SPLITS)
def test_a_download_round_trip_streams_the_content(profile, how):
    content = random.Random(7).randbytes(3000 if how == "bytes" else 50_000)
    events = parse(streamed(profile, "x.bin", content), profile, how=how)
    assert data_of(events) == content
    reply = reply_of(events)
    assert reply.ok and reply.file_name == "x.bin" and reply.content_size == len(content)
    assert reply.findings.segments == 1 and not reply.findings.padded_midstream
    assert profile.content_key not in reply.members


ORDERS = [
    b'{"status": "OK", "data_namafile": "x.bin", "data_file": "%s"}',
    b'{"data_file": "%s", "status": "OK", "data_namafile": "x.bin"}',
    b'{"data_namafile": "x.bin", "data_file": "%s", "status": "OK", "file_path": "srv/x_1.bin"}',
    b'{"extra": {"nested": [1, "}"]}, "data_file": "%s", "data_namafile": "x.bin", "status": "OK"}',
    b'\r\n{ "status" : "OK" ,"data_file":"%s" ,"data_namafile":"x.bin"}',
]


@pytest.mark.parametrize("template", ORDERS)
def test_the_content_key_may_come_first_or_last(template):
    content = os.urandom(600)
    wire = template % base64.b64encode(content) + b"\r\n\r\n"
    expected = parse(wire)
    assert data_of(expected) == content and reply_of(expected).ok
    for how in ["bytes", 2, 7, rng(9)]:
        assert parse(wire, how=how) == expected
    if b"file_path" in template:
        assert reply_of(expected).stored_name == "srv/x_1.bin"


def test_escaped_slashes_and_block_padding_are_recovered_and_reported():
    content = os.urandom(20 * KiB + 5)
    wire = streamed(COURSE, "x.bin", content, blocks=3 * KiB + 1)
    wire = wire.replace(b"/", b"\\/")  # a PHP-style encoder escapes every slash
    events = parse(wire, how=4096)
    assert data_of(events) == content
    found = reply_of(events).findings
    assert found.padded_midstream and found.segments == 7


@pytest.mark.parametrize("wire, message", [
    (b'{"status": "ERROR", "data": "File not found"}\r\n\r\n', "File not found"),
    (b'{"data": "File not found", "status": "ERROR"}\r\n\r\n', "File not found"),
    (b'{"data": "Zm9v", "status": "ERROR"}\r\n\r\n', "Zm9v"),
    (b'{"data": "' + b"no! " * 2000 + b'", "status": "ERROR"}\r\n\r\n', "no! no!"),
    (b'{"status": "ok", "data": "lower-case ok is not OK"}\r\n\r\n', "lower-case ok is not OK"),
])  # fmt: skip
def test_an_error_text_under_the_content_key_is_a_message_not_a_file(wire, message):
    profile = dataclasses.replace(COURSE, content_key="data")
    for how in ["whole", "bytes"]:
        reply = reply_of(parse(wire, profile, how=how))
        assert not reply.ok and reply.message.startswith(message)


def test_the_small_replies_parse():
    reply = reply_of(parse(list_reply(OTHER, ["a", "b"]), OTHER, content=False))
    assert reply.ok and reply.names == ("a", "b") and reply.content_size is None and reply.findings is None
    reply = reply_of(parse(error_reply(OTHER, "nope"), OTHER, content=False))
    assert (reply.ok, reply.status, reply.message) == (False, "ERROR", "nope")
    assert reply_of(parse(ready_reply(COURSE), content=False)).status == "READY"
    reply = reply_of(parse(b'{"status": "OK", "data": {"file_path": "up/a_1.bin"}}\r\n\r\n', content=False))
    assert reply.stored_name == "up/a_1.bin" and reply.message is None
    assert reply_of(parse(b'{"data": []}', content=False)).status is None


def test_bad_base64_in_an_ok_reply_is_an_integrity_error():
    for wire in (b'{"status": "OK", "data_file": "QUJD!!"}', b'{"data_file": "QUJD!!", "status": "OK"}'):
        with pytest.raises(PeerError) as err:
            parse(wire + b"\r\n\r\n")
        assert err.value.code == Code.INTEGRITY


@pytest.mark.parametrize("wire", [b"File not found", b"<html>", b"OK 12 files\r\n", b"\x00\x01\x02"])
def test_a_reply_that_is_not_json_carries_its_first_bytes(wire):
    with pytest.raises(NotUnderstood) as err:
        parse(wire)
    assert err.value.head == wire
    assert str(err.value).startswith(f"BAD_REQUEST: reply not understood: {wire!r}")


@pytest.mark.parametrize("cut", [0, 1, 10, 40, 100])
def test_a_reply_cut_short_is_ended_early_not_bad(cut):
    wire = streamed(COURSE, "x.bin", os.urandom(300))[:cut]
    with pytest.raises(EndedEarly) as err:
        parse(wire)
    assert err.value.received == cut
    assert ("before any reply" in str(err.value)) == (cut == 0)


def test_the_bytes_after_a_reply_are_handed_back():
    parser = ReplyParser(COURSE, content=False)
    parser.receive_data(ok_reply(COURSE, "one") + ok_reply(COURSE, "two")[:10])
    assert parser.next_event().message == "one" and parser.done
    rest = parser.unused_data()
    assert rest.startswith(b"\r\n\r\n{") and len(rest) == 14
    second = ReplyParser(COURSE, content=False)
    assert reply_of(drive(second, rest + ok_reply(COURSE, "two")[10:])).message == "two"


def test_a_100_megabyte_reply_in_64_kib_pieces_never_buffers_more_than_a_piece():
    piece = 64 * KiB
    unit_raw = os.urandom(48 * KiB)  # 48 KiB -> exactly 64 KiB of base64, no padding
    unit = base64.b64encode(unit_raw)
    frame = content_reply(COURSE, "big.bin")
    count = 1600  # 1600 x 48 KiB = 75 MiB of file, 100 MiB of base64 on the wire
    stream_size = len(frame.head) + count * len(unit) + len(frame.tail)
    doubled = unit * 2

    def wire_at(start: int) -> bytes:  # stream[start:start+piece] without building the stream
        out, pos = b"", start
        while len(out) < piece and pos < stream_size:
            if pos < len(frame.head):
                chunk = frame.head[pos:]
            elif pos < len(frame.head) + count * len(unit):
                off = (pos - len(frame.head)) % len(unit)
                left = len(frame.head) + count * len(unit) - pos
                chunk = doubled[off : off + min(len(unit), left)]
            else:
                chunk = frame.tail[pos - len(frame.head) - count * len(unit) :]
            chunk = chunk[: piece - len(out)]
            out += chunk
            pos += len(chunk)
        return out

    parser = ReplyParser(COURSE, content=True)
    decoded, most, pos = 0, 0, 0
    while pos < stream_size:
        data = wire_at(pos)
        pos += len(data)
        parser.receive_data(data)
        while not parser.done and isinstance(event := parser.next_event(), Data):
            decoded += len(event.data)
            most = max(most, parser.buffered)
        most = max(most, parser.buffered)
    assert event.ok and event.content_size == decoded == count * len(unit_raw)
    assert most <= 16  # a cut escape or group at most: each piece is decoded as it comes


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=400), first=st.booleans(), block=st.integers(min_value=1, max_value=50),
       cuts=st.lists(st.integers(min_value=1, max_value=800), max_size=8))  # fmt: skip
def test_any_split_of_any_reply_gives_the_same_file(content, first, block, cuts):
    b64 = b"".join(base64.b64encode(content[i : i + block]) for i in range(0, len(content), block))
    members = [b'"status": "OK"', b'"data_namafile": "f"', b'"data_file": "' + b64 + b'"']
    wire = b"{" + b", ".join(members[::-1] if first else members) + b"}\r\n\r\n"
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    parser = ReplyParser(COURSE, content=True)
    events: list = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        parser.receive_data(wire[a:b])
        drain(parser, events)
    assert data_of(events) == content
    assert without_data(events)[-1].ok
