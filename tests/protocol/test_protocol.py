"""The sans-IO protocol core (labnet.protocol), without a single socket.

Bytes go in with ``Receiver.receive_data``; events come out of ``next_event``.
The same stream must give the same events however it is cut, and any bytes
at all must give events or ``PeerError`` -- never another exception.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labnet.errors import Code, PeerError, RemoteError
from labnet.protocol.messages import (
    GREETING,
    ListHeader,
    Reply,
    Request,
    err,
    list_reply,
    ok,
    parse_listing_line,
    parse_reply,
    parse_request,
    parse_stats,
    stats_reply,
)
from labnet.protocol.receiver import CLOSED, MAX_LINE, NEED_DATA, BodyEnd, BodySender, Data, Line, Receiver

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def body_bytes(data: bytes, encoding: str, digest: str | None = None) -> bytes:
    wire = base64.b64encode(data) if encoding == "b64" else data
    return wire + f"SHA256 {digest or hashlib.sha256(data).hexdigest()}\r\n".encode()


def upload(name: str, data: bytes, encoding: str = "b64") -> bytes:
    return f"UPLOAD {name} {len(data)} {encoding}\r\n".encode() + body_bytes(data, encoding)


def drain(rx: Receiver, events: list) -> object:
    """Pull events until NEED_DATA or CLOSED, starting a body after each UPLOAD line (as a server does)."""
    for _ in range(100_000):
        ev = rx.next_event()
        if ev is NEED_DATA or ev is CLOSED:
            return ev
        events.append(ev)
        if isinstance(ev, Line):
            try:
                req = parse_request(ev.text)
            except PeerError:
                continue
            if req.verb == "UPLOAD":
                rx.start_body(req.size, req.encoding)
    raise AssertionError("the receiver never asked for more data")


def run(chunks, eof: bool = True) -> list:
    """Feed ``chunks`` one by one, pulling after each; merge adjacent Data events."""
    rx = Receiver()
    events: list = []
    for c in chunks:
        rx.receive_data(c)
        drain(rx, events)
    if eof:
        rx.receive_data(b"")
        assert drain(rx, events) is CLOSED
    return merge(events)


def merge(events: list) -> list:
    out: list = []
    for ev in events:
        if isinstance(ev, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def expected_upload_events(name: str, data: bytes, encoding: str) -> list:
    line = Line(f"UPLOAD {name} {len(data)} {encoding}")
    end = BodyEnd(len(data), hashlib.sha256(data).hexdigest())
    return [line, Data(data), end] if data else [line, end]


# --------------------------------------------------------------------------
# lines
# --------------------------------------------------------------------------


def test_several_requests_in_one_chunk():
    stream = b"LIST\r\nSTATS\r\nDELETE a.txt\r\nDOWNLOAD b.bin raw\nQUIT\r\n"
    expected = [Line("LIST"), Line("STATS"), Line("DELETE a.txt"), Line("DOWNLOAD b.bin raw"), Line("QUIT")]
    assert run([stream]) == expected
    assert run(bytewise(stream)) == expected


def test_one_byte_at_a_time_says_need_data_until_the_line_is_complete():
    rx = Receiver()
    for b in b"LIST\r":
        rx.receive_data(bytes([b]))
        assert rx.next_event() is NEED_DATA
    rx.receive_data(b"\n")
    assert rx.next_event() == Line("LIST")
    assert rx.next_event() is NEED_DATA


def test_lf_and_crlf_both_end_a_line_and_only_one_cr_is_stripped():
    assert run([b"LIST\nLIST\r\nLIST\r\r\n"]) == [Line("LIST"), Line("LIST"), Line("LIST\r")]


def test_clean_eof_between_messages_is_closed_and_in_a_line_is_an_error():
    rx = Receiver()
    rx.receive_data(b"")
    assert rx.next_event() is CLOSED
    assert rx.next_event() is CLOSED
    rx = Receiver()
    rx.receive_data(b"LIS")
    rx.receive_data(b"")
    with pytest.raises(PeerError, match="middle of a line"):
        rx.next_event()
    # Nothing can follow: the receiver is broken, so a caller that goes on reading
    # does not get the same error forever (a server worker once spun on this).
    assert rx.broken
    with pytest.raises(PeerError, match="unusable"):
        rx.next_event()


def test_line_of_exactly_max_line_bytes_is_accepted():
    line = b"X" * (MAX_LINE - 2) + b"\r\n"
    assert run([line]) == [Line("X" * (MAX_LINE - 2))]
    assert run([b"X" * (MAX_LINE - 1) + b"\n"]) == [Line("X" * (MAX_LINE - 1))]


@pytest.mark.parametrize(
    "chunks", [[b"X" * MAX_LINE], [b"X" * (MAX_LINE - 1) + b"\r\n"], bytewise(b"Y" * (MAX_LINE + 5))]
)
def test_line_too_long_breaks_the_stream(chunks):
    rx = Receiver()
    with pytest.raises(PeerError, match="longer than") as info:
        for c in chunks:
            rx.receive_data(c)
            rx.next_event()
    assert info.value.code is Code.BAD_REQUEST
    assert rx.broken
    with pytest.raises(PeerError, match="unusable"):
        rx.next_event()


def test_max_line_is_configurable():
    rx = Receiver(max_line=8)
    rx.receive_data(b"1234567\n")
    assert rx.next_event() == Line("1234567")
    rx.receive_data(b"12345678\n")
    with pytest.raises(PeerError):
        rx.next_event()


def test_non_utf8_line_is_an_error_but_the_stream_stays_usable():
    rx = Receiver()
    rx.receive_data(b"LIST \xff\xfe\r\nSTATS\r\n")
    with pytest.raises(PeerError, match="UTF-8") as info:
        rx.next_event()
    assert info.value.code is Code.BAD_REQUEST
    assert not rx.broken
    assert rx.next_event() == Line("STATS")


def test_utf8_names_survive_any_split():
    stream = "DELETE résumé-日本.txt\r\n".encode()
    assert run(bytewise(stream)) == [Line("DELETE résumé-日本.txt")]


# --------------------------------------------------------------------------
# bodies
# --------------------------------------------------------------------------

BODY_SIZES = [0, 1, 2, 3, 4, 5, 299, 300, 301, 4096, 65535]


@pytest.mark.parametrize("encoding", ["b64", "raw"])
@pytest.mark.parametrize("size", BODY_SIZES)
def test_upload_body_in_one_chunk_and_byte_by_byte(size, encoding):
    data = bytes((i * 7 + size) % 256 for i in range(size))
    stream = upload("f.bin", data, encoding) + b"LIST\r\n"
    expected = expected_upload_events("f.bin", data, encoding) + [Line("LIST")]
    assert run([stream]) == expected
    if size <= 4096:
        assert run(bytewise(stream)) == expected


def test_body_is_length_prefixed_not_sentinel_terminated():
    """A body may contain newlines, 'SHA256 ...' text and anything else: only the length counts."""
    data = b"LIST\r\nSHA256 " + b"0" * 64 + b"\r\n\x00\xff"
    stream = upload("f", data, "raw") + upload("g", data, "b64")
    assert run([stream]) == expected_upload_events("f", data, "raw") + expected_upload_events("g", data, "b64")


def test_body_received_counts_decoded_bytes():
    rx = Receiver()
    rx.start_body(6, "b64")
    assert rx.in_body
    rx.receive_data(b"QUJD")
    assert rx.next_event() == Data(b"ABC")
    assert rx.body_received == 3
    rx.receive_data(b"REVG")
    assert rx.next_event() == Data(b"DEF")
    rx.receive_data(f"SHA256 {hashlib.sha256(b'ABCDEF').hexdigest()}\r\n".encode())
    assert rx.next_event() == BodyEnd(6, hashlib.sha256(b"ABCDEF").hexdigest())
    assert not rx.in_body


def test_trailer_digest_may_be_upper_case():
    data = b"hello"
    rx = Receiver()
    rx.start_body(len(data), "raw")
    rx.receive_data(data + f"sha256 {hashlib.sha256(data).hexdigest().upper()}\r\n".encode())
    assert merge([rx.next_event(), rx.next_event()])[-1] == BodyEnd(5, hashlib.sha256(data).hexdigest())


def _body_error(stream: bytes, size: int, encoding: str) -> PeerError:
    rx = Receiver()
    rx.start_body(size, encoding)
    rx.receive_data(stream)
    rx.receive_data(b"")
    with pytest.raises(PeerError) as info:
        for _ in range(100):
            rx.next_event()
    assert rx.broken
    with pytest.raises(PeerError):
        rx.next_event()
    return info.value


@pytest.mark.parametrize("encoding", ["b64", "raw"])
def test_wrong_digest_is_an_integrity_error(encoding):
    data = b"some file content"
    exc = _body_error(body_bytes(data, encoding, digest="0" * 64), len(data), encoding)
    assert exc.code is Code.INTEGRITY and "mismatch" in exc.message


@pytest.mark.parametrize("trailer", [b"\r\n", b"SHA256\r\n", b"MD5 " + b"0" * 64 + b"\r\n", b"SHA256 abc\r\n",
                                     b"SHA256 " + b"0" * 64 + b" extra\r\n", b"SHA256 \xff\r\n"])  # fmt: skip
def test_malformed_trailer_is_an_error(trailer):
    exc = _body_error(b"abc" + trailer, 3, "raw")
    assert exc.code in (Code.BAD_REQUEST, Code.INTEGRITY)


def test_eof_before_trailer_and_in_body():
    assert "trailer" in _body_error(b"abc", 3, "raw").message
    assert "closed after 2 of 3" in _body_error(b"ab", 3, "raw").message
    assert "closed after 0 of 3" in _body_error(b"", 3, "raw").message
    assert "trailer" in _body_error(b"abcSHA2", 3, "raw").message


def test_invalid_base64_is_an_integrity_error():
    data = b"ABCDEF"
    wire = b"QUJ*REVG"
    exc = _body_error(wire + f"SHA256 {hashlib.sha256(data).hexdigest()}\r\n".encode(), 6, "b64")
    assert exc.code is Code.INTEGRITY


def test_padding_in_the_middle_is_an_integrity_error():
    data = b"AB" + b"CD"  # 4 bytes -> wire 8; the seed's way: "QUI=" + "Q0Q=" (each 2-byte chunk padded)
    wire = base64.b64encode(b"AB") + base64.b64encode(b"CD")
    assert len(wire) == 8
    exc = _body_error(wire + f"SHA256 {hashlib.sha256(data).hexdigest()}\r\n".encode(), 4, "b64")
    assert exc.code is Code.INTEGRITY


def test_body_decoding_to_a_different_size_is_an_integrity_error():
    # size 3 -> 4 wire bytes; "QQ==" is valid base64 of 1 byte
    exc = _body_error(b"QQ==" + f"SHA256 {hashlib.sha256(b'A').hexdigest()}\r\n".encode(), 3, "b64")
    assert exc.code is Code.INTEGRITY and "declared" in exc.message
    # size 1 -> 4 wire bytes; "QUJD" decodes to 3 bytes
    exc = _body_error(b"QUJD" + f"SHA256 {hashlib.sha256(b'ABC').hexdigest()}\r\n".encode(), 1, "b64")
    assert exc.code is Code.INTEGRITY


def test_start_body_only_between_messages():
    rx = Receiver()
    rx.start_body(1, "raw")
    with pytest.raises(RuntimeError):
        rx.start_body(1, "raw")


# --------------------------------------------------------------------------
# BodySender
# --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["b64", "raw"])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 1000, 1001])
def test_body_sender_makes_what_the_receiver_accepts(size, encoding):
    data = bytes(range(256)) * 4 + bytes(range(size % 256))
    data = data[:size]
    sender = BodySender(size, encoding)
    wire = b"".join(sender.encode(data[i : i + 7]) for i in range(0, size, 7)) + sender.finish()
    assert wire == body_bytes(data, encoding)
    assert sender.wire_size == len(wire) - len(b"SHA256 \r\n") - 64
    assert sender.hexdigest() == hashlib.sha256(data).hexdigest()


def test_body_sender_refuses_a_file_that_changed_size():
    sender = BodySender(10, "raw")
    sender.encode(b"12345")
    with pytest.raises(PeerError, match="changed"):
        sender.finish()


# --------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,request_",
    [
        ("LIST", Request("LIST")),
        ("list", Request("LIST")),
        ("STATS", Request("STATS")),
        ("QUIT", Request("QUIT")),
        ("DELETE a.txt", Request("DELETE", "a.txt")),
        ("DOWNLOAD a.txt", Request("DOWNLOAD", "a.txt", encoding="b64")),
        ("DOWNLOAD a.txt raw", Request("DOWNLOAD", "a.txt", encoding="raw")),
        ("DOWNLOAD a.txt B64", Request("DOWNLOAD", "a.txt", encoding="b64")),
        ("UPLOAD a.txt 0", Request("UPLOAD", "a.txt", 0, "b64")),
        ("UPLOAD a.txt 1234 raw", Request("UPLOAD", "a.txt", 1234, "raw")),
        ("upload a.txt 1234 RAW", Request("UPLOAD", "a.txt", 1234, "raw")),
        ("UPLOAD a.txt 999999999999999999 b64", Request("UPLOAD", "a.txt", 10**18 - 1, "b64")),
        ("UPLOAD 日本.txt 5", Request("UPLOAD", "日本.txt", 5, "b64")),
    ],
)
def test_parse_request_valid(line, request_):
    assert parse_request(line) == request_


@pytest.mark.parametrize("req", [Request("LIST"), Request("STATS"), Request("QUIT"), Request("DELETE", "x"),
                                 Request("DOWNLOAD", "x", encoding="raw"), Request("UPLOAD", "x", 7, "b64")])  # fmt: skip
def test_request_to_line_round_trips(req):
    line = req.to_line()
    assert line.endswith(b"\r\n") and b"\r\n" not in line[:-2]
    assert parse_request(line[:-2].decode()) == req


@pytest.mark.parametrize(
    "line,code,fragment",
    [
        ("", Code.BAD_REQUEST, "empty"),
        ("   ", Code.BAD_REQUEST, "empty"),
        ("HELLO", Code.BAD_REQUEST, "unknown verb"),
        ("GET / HTTP/1.1", Code.BAD_REQUEST, "unknown verb"),
        ("LIST extra", Code.BAD_REQUEST, "usage"),
        ("LIST ", Code.BAD_REQUEST, "usage"),
        ("STATS now", Code.BAD_REQUEST, "usage"),
        ("QUIT now", Code.BAD_REQUEST, "usage"),
        ("DELETE", Code.BAD_REQUEST, "usage"),
        ("DELETE a b", Code.BAD_REQUEST, "usage"),
        ("DELETE  a", Code.BAD_REQUEST, "usage"),  # double space: an empty word
        ("DOWNLOAD", Code.BAD_REQUEST, "usage"),
        ("DOWNLOAD a b64 x", Code.BAD_REQUEST, "usage"),
        ("DOWNLOAD a hex", Code.BAD_REQUEST, "encoding"),
        ("UPLOAD", Code.BAD_REQUEST, "usage"),
        ("UPLOAD a", Code.BAD_REQUEST, "usage"),
        ("UPLOAD a 1 b64 x", Code.BAD_REQUEST, "usage"),
        ("UPLOAD a -1", Code.BAD_REQUEST, "whole number"),
        ("UPLOAD a abc", Code.BAD_REQUEST, "whole number"),
        ("UPLOAD a 1.5", Code.BAD_REQUEST, "whole number"),
        ("UPLOAD a +1", Code.BAD_REQUEST, "whole number"),
        ("UPLOAD a 0x10", Code.BAD_REQUEST, "whole number"),
        ("UPLOAD a \u0663", Code.BAD_REQUEST, "whole number"),  # ARABIC-INDIC DIGIT THREE
        ("UPLOAD a \u00b2", Code.BAD_REQUEST, "whole number"),  # SUPERSCRIPT TWO
        ("UPLOAD a 1 gzip", Code.BAD_REQUEST, "encoding"),
        ("UPLOAD a " + "9" * 19, Code.TOO_LARGE, "large"),
        ("UPLOAD a " + "9" * 4000, Code.TOO_LARGE, "large"),
        ("UPLOAD ../x 1", Code.BAD_NAME, ""),
        ("UPLOAD /etc/passwd 1", Code.BAD_NAME, ""),
        ("DOWNLOAD a/b", Code.BAD_NAME, ""),
        ("DOWNLOAD a\\b", Code.BAD_NAME, ""),
        ("DELETE .", Code.BAD_NAME, ""),
        ("DELETE ..", Code.BAD_NAME, ""),
        ("DELETE .hidden", Code.BAD_NAME, ""),
        ("DELETE a\x00b", Code.BAD_NAME, ""),
        ("DELETE a\rb", Code.BAD_NAME, ""),
        ("DELETE a\tb", Code.BAD_NAME, ""),
        ("DELETE a\x1bb", Code.BAD_NAME, ""),
        ("DELETE " + "x" * 256, Code.BAD_NAME, ""),
    ],
)
def test_parse_request_malformed(line, code, fragment):
    with pytest.raises(PeerError) as info:
        parse_request(line)
    assert info.value.code is code
    assert fragment in info.value.message
    assert len(info.value.message) < 400  # echoes of the input are cut short


# --------------------------------------------------------------------------
# replies
# --------------------------------------------------------------------------


def test_ok_and_err_lines():
    assert ok() == b"OK\r\n"
    assert ok("SEND", 8) == b"OK SEND 8\r\n"
    assert err(Code.NOT_FOUND, "no such file: x") == b"ERR NOT_FOUND no such file: x\r\n"
    line = err(Code.BAD_REQUEST, "two\r\nlines\tand  spaces" + "x" * 1000)
    assert line.count(b"\r\n") == 1 and line.endswith(b"\r\n")
    assert line.startswith(b"ERR BAD_REQUEST two lines and spaces")
    assert len(line) <= len("ERR BAD_REQUEST ") + 300 + 2
    assert err(Code.BUSY, "") == b"ERR BUSY error\r\n"
    assert err(Code.INTEGRITY, "caf\udce9").endswith(b"\r\n")  # unencodable text never raises


def test_parse_reply():
    assert parse_reply("OK") == Reply((), "OK")
    reply = parse_reply("OK 12 b64 16")
    assert reply.words == ("12", "b64", "16") and reply.int_word(0) == 12 and reply.word(1) == "b64"
    with pytest.raises(PeerError):
        reply.word(5)
    with pytest.raises(PeerError):
        reply.int_word(1)
    assert parse_reply(GREETING).words == ("LABNET", "1", "READY")
    for code in Code:
        with pytest.raises(RemoteError) as info:
            parse_reply(err(code, "why not").decode().rstrip("\r\n"))
        assert info.value.code is code and info.value.message == "why not"
    with pytest.raises(PeerError, match="unknown error code"):
        parse_reply("ERR NOPE something")
    for garbage in ("", "OKAY", "HTTP/1.1 200 OK", "ok"):
        with pytest.raises(PeerError, match="malformed"):
            parse_reply(garbage)


def test_stats_reply_round_trip():
    snap = {"ok": 3, "failed": 1, "verbs": {"LIST": {"ok": 3, "failed": 1}}}
    line = stats_reply(snap)
    assert line.count(b"\r\n") == 1
    assert parse_stats(parse_reply(line.decode().rstrip("\r\n"))) == snap
    with pytest.raises(PeerError):
        parse_stats(parse_reply("OK not json"))
    assert json.loads(line[3:]) == snap


def test_parse_listing_line():
    assert parse_listing_line("12 a.txt") == ("a.txt", 12)
    assert parse_listing_line("0 日本.txt") == ("日本.txt", 0)
    for bad in ("", "12", "x a.txt", "-1 a", "12 "):
        with pytest.raises(PeerError):
            parse_listing_line(bad)


def test_list_header_says_how_many_entries_are_hidden_only_when_some_are():
    assert ListHeader(3).to_line() == b"OK 3 files\r\n"
    assert ListHeader(3, 0).to_line() == b"OK 3 files\r\n"
    assert ListHeader(3, 2).to_line() == b"OK 3 files 2 hidden\r\n"
    for line, header in [("OK 3 files", ListHeader(3, 0)), ("OK 3 files 2 hidden", ListHeader(3, 2)),
                         ("OK 0 files 7 hidden", ListHeader(0, 7)),
                         ("OK 1 files 2 hidden 9 later", ListHeader(1, 2))]:  # fmt: skip
        assert ListHeader.parse(parse_reply(line)) == header
    for bad in ("OK SEND 5", "OK 3", "OK x files", "OK 3 files x hidden"):
        with pytest.raises(PeerError):
            ListHeader.parse(parse_reply(bad))


def test_list_reply_is_well_formed_whatever_it_is_given():
    """An entry that could not be requested back as written is counted as hidden, never written:
    a line break would add a line, a space would make the name two words, bad bytes would not encode."""
    files = [("a.txt", 1), ("new\nline", 2), ("cr\rx", 2), ("two words", 3), ("bad\udcff", 4),
             ("cafe\u0301", 5), (".dot", 6), ("rtl\u202ex", 7), ("neg", -1), ("b.txt", 0)]  # fmt: skip
    reply = list_reply(files, hidden=1)
    assert reply == b"OK 2 files 9 hidden\r\n1 a.txt\r\n0 b.txt\r\n"
    assert list_reply([]) == b"OK 0 files\r\n"
    assert list_reply([("a.txt", 1)], hidden=2) == b"OK 1 files 2 hidden\r\n1 a.txt\r\n"
    # An older client reads only the first number: it still finds exactly that many lines.
    lines = reply.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) - 2 == int(lines[0].split()[1])


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------

names = st.text(alphabet="abcXYZ019._-é", min_size=1, max_size=12).filter(lambda n: not n.startswith("."))
encodings = st.sampled_from(["b64", "raw"])
messages = st.one_of(
    st.sampled_from([b"LIST\r\n", b"STATS\r\n", b"QUIT\n", b"\r\n", b"BOGUS x\r\n", b"LIST \xff\r\n"]),
    st.builds(lambda n: f"DELETE {n}\r\n".encode(), names),
    st.builds(lambda n, e: f"DOWNLOAD {n} {e}\r\n".encode(), names, encodings),
    st.builds(upload, names, st.binary(max_size=300), encodings),
)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]  # b"" would mean EOF


def run_collecting_errors(chunks) -> list:
    """Like run(), but PeerErrors on complete lines are recorded as events (the stream goes on)."""
    rx = Receiver()
    events: list = []
    for c in [*chunks, b""]:
        rx.receive_data(c)
        for _ in range(10_000):
            try:
                drain(rx, events)
            except PeerError as exc:
                events.append(("error", exc.code, exc.message))
                if rx.broken:
                    return merge(events)
                continue
            break
        else:
            raise AssertionError("the same error forever")
    return merge(events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=st.lists(messages, min_size=1, max_size=6), cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_property_any_split_gives_the_same_events(msgs, cuts):
    stream = b"".join(msgs)
    whole = run_collecting_errors([stream])
    assert run_collecting_errors(split(stream, cuts)) == whole
    if len(stream) <= 600:
        assert run_collecting_errors(bytewise(stream)) == whole
    assert not any(isinstance(e, tuple) and e[1] is Code.INTEGRITY for e in whole)
    uploads = sum(1 for m in msgs if m.startswith(b"UPLOAD"))
    assert sum(1 for e in whole if isinstance(e, BodyEnd)) == uploads


@settings(max_examples=300, deadline=None)
@given(
    junk=st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from([b"UPLOAD a 5 b64\r\n", b"UPLOAD a 3 raw\n", b"UPLOAD a 0\r\n", b"\r\n", b"=", b"SHA256 "]),
        ),
        max_size=12,
    ),
    max_line=st.sampled_from([16, 64, MAX_LINE]),
)
def test_property_random_bytes_raise_only_peer_error(junk, max_line):
    rx = Receiver(max_line=max_line)
    events: list = []
    for c in [*junk, b""]:
        rx.receive_data(c)
        for _ in range(10_000):
            try:
                drain(rx, events)
            except PeerError:
                if rx.broken:
                    return
                continue
            break
        else:
            raise AssertionError("the same error forever")
    assert rx.next_event() is CLOSED
