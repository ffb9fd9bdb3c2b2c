"""``course`` requests (labnet.protocol.dialects.course_request): built by a client, streamed by a server."""

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

from labnet.errors import Code, PeerError, UsageError
from labnet.protocol.codec import Encoder
from labnet.protocol.dialects import PROFILES
from labnet.protocol.dialects.course_request import (
    RequestParser,
    delete_request,
    download_request,
    list_request,
    upload_request,
)
from labnet.protocol.dialects.events import Request, RequestEnd
from labnet.protocol.receiver import Data

COURSE, LINE, REFERENCE = PROFILES["course"], PROFILES["course-line"], PROFILES["course-reference"]
KiB = 1024


def variant(**kw):
    return dataclasses.replace(COURSE, name="variant", **kw)


LAYOUTS = {
    "inline": variant(),
    "inline_length": variant(upload_layout="inline_length"),
    "inline_length-b64": variant(upload_layout="inline_length", upload_length="base64"),
    "key_value": variant(upload_layout="key_value", request_name_key="filename", request_content_key="content"),
    "header_body": variant(upload_layout="header_body", upload_verb="POST"),
    "json-params": variant(upload_layout="json", json_requests="all"),
    "json-keys": variant(
        upload_layout="json",
        params_key="",
        request_name_key="file_name",
        request_content_key="filedata",
        upload_verb="PUT",
    ),  # fmt: skip
    "line": LINE,
    "none": variant(terminator="none"),
}


def upload_wire(profile, name: str, content: bytes, block: int | None = None) -> bytes:
    frame = upload_request(profile, name, len(content))
    if block:
        body = b"".join(base64.b64encode(content[i : i + block]) for i in range(0, len(content), block))
    else:
        enc = Encoder("b64")
        body = b"".join(enc.encode(content[i : i + 777]) for i in range(0, len(content), 777)) + enc.finish()
    return frame.head + body + frame.tail


def test_the_client_requests_on_the_wire():
    assert list_request(COURSE) == b"LIST\r\n\r\n"
    assert download_request(COURSE, "Report.PDF") == b"GET Report.PDF\r\n\r\n"
    assert delete_request(COURSE, "a.bin") == b"DELETE a.bin\r\n\r\n"
    assert list_request(LINE) == b"LIST\n" and download_request(LINE, "a") == b"GET a\n"
    assert list_request(REFERENCE) == b"LIST" and download_request(REFERENCE, "a") == b"GET a"
    with pytest.raises(UsageError, match="no upload request"):
        upload_request(REFERENCE, "a", 1)
    with pytest.raises(UsageError, match="one printable word"):
        download_request(COURSE, "two words")
    frames = {key: upload_request(p, "a.bin", 10) for key, p in LAYOUTS.items()}
    assert (frames["inline"].head, frames["inline"].tail) == (b"UPLOAD a.bin ", b"\r\n\r\n")
    assert frames["inline_length"].head == b"UPLOAD a.bin 10 "
    assert frames["inline_length-b64"].head == b"UPLOAD a.bin 16 "
    assert frames["key_value"].head == b"UPLOAD filename=a.bin content="
    assert frames["header_body"].head == b"POST a.bin\r\n" and not frames["header_body"].await_prompt
    assert frames["line"].tail == b"\n" and frames["none"].tail == b""
    params = frames["json-params"]
    assert json.loads(params.head + b"QQ==" + params.tail) == {"command": "UPLOAD", "params": ["a.bin", "QQ=="]}
    keys = frames["json-keys"]
    assert json.loads(keys.head + b"QQ==" + keys.tail) == {"command": "PUT", "file_name": "a.bin", "filedata": "QQ=="}
    assert list_request(LAYOUTS["json-params"]) == b'{"command": "LIST"}\r\n\r\n'
    assert download_request(LAYOUTS["json-params"], "a") == b'{"command": "GET", "params": ["a"]}\r\n\r\n'
    ready = variant(upload_layout="header_body", upload_ready=True)
    assert upload_request(ready, "a", 1).await_prompt


@pytest.mark.parametrize("key", sorted(LAYOUTS))
@pytest.mark.parametrize("how", ["whole", "bytes", 5, rng(11)])
def test_what_the_client_builds_the_server_parses(key, how):
    profile = LAYOUTS[key]
    content = random.Random(key).randbytes(700 if how == "bytes" else 20_000)
    silence = profile.terminator == "none"  # each request then ends at a silence: one at a time
    requests = [list_request(profile), upload_wire(profile, "Up.Bin", content), download_request(profile, "x.y"),
                delete_request(profile, "x.y")]  # fmt: skip
    events = []
    if silence:
        parser = RequestParser(profile)
        for wire in requests:
            events += drive(parser, wire, how, close=False, silence=True)
    else:
        events = drive(RequestParser(profile), b"".join(requests), how)
    assert data_of(events) == content
    heads = [ev for ev in events if isinstance(ev, Request)]
    ends = [ev for ev in events if isinstance(ev, RequestEnd)]
    assert [(r.op, r.name) for r in heads] == [("list", None), ("upload", "Up.Bin"), ("download", "x.y"),
                                                ("delete", "x.y")]  # fmt: skip
    assert [(e.op, e.name) for e in ends] == [(r.op, r.name) for r in heads]
    assert ends[1].findings.decoded == len(content) and ends[1].findings.segments == 1
    text_end = "silence" if silence else "terminator"
    json_upload = "object" if key.startswith("json") else text_end
    json_others = "object" if profile.json_requests == "all" and key.startswith("json") else text_end
    assert [e.ended_by for e in ends] == [json_others, json_upload, json_others, json_others]
    if key.startswith("inline_length"):
        assert heads[1].declared_length == (len(content) if key == "inline_length" else 4 * ((len(content) + 2) // 3))


def test_byte_by_byte_and_whole_give_the_same_events():
    wire = upload_wire(COURSE, "a.bin", os.urandom(500)) + list_request(COURSE)
    assert drive(RequestParser(COURSE), wire, "bytes") == drive(RequestParser(COURSE), wire)


def test_block_padded_uploads_are_recovered_and_reported():
    content = os.urandom(30 * KiB)
    for profile in (COURSE, LAYOUTS["json-params"]):
        events = drive(RequestParser(profile), upload_wire(profile, "a", content, block=3 * KiB + 1), 4096)
        assert data_of(events) == content
        end = without_data(events)[-1]
        assert end.findings.padded_midstream and end.findings.segments == 10


def test_the_reference_client_ends_its_requests_with_a_silence():
    parser = RequestParser(COURSE)  # a crlfcrlf server still serves the reference client
    events = drive(parser, b"GET Mixed.Case", close=False)
    assert events == []
    assert parser.end_of_request()
    drain(parser, events)
    assert events == [Request("download", "GET", "Mixed.Case"), RequestEnd("download", "GET", "Mixed.Case", "silence")]
    assert not parser.end_of_request()  # nothing pending: a silence between requests is nothing


def test_a_silence_inside_an_upload_is_a_pause_unless_the_line_ended():
    parser = RequestParser(COURSE)
    events = drive(parser, b"UPLOAD a.bin QUJD", close=False)
    assert not parser.end_of_request()  # the client is still sending its base64
    events += drive(parser, b"RA==\n", close=False)
    assert parser.end_of_request()  # "\n" and then nothing: the line-ending client waits for its reply
    drain(parser, events)
    assert data_of(events) == b"ABCD" and without_data(events)[-1].ended_by == "silence"
    none = RequestParser(variant(terminator="none"))
    drive(none, b"UPLOAD a QUJD", close=False)
    assert none.end_of_request()


def test_a_close_ends_a_request_without_terminator():
    events = drive(RequestParser(COURSE), b"UPLOAD a QUJD")
    assert data_of(events) == b"ABC" and without_data(events)[-1].ended_by == "close"


def test_verbs_and_names():
    events = drive(RequestParser(COURSE), b"get x\r\n\r\nGET MiXeD.bin\r\n\r\nupload a b\r\n\r\nFETCH z\r\n\r\n")
    heads = [ev for ev in events if isinstance(ev, Request)]
    assert [(r.op, r.verb, r.name) for r in heads] == [("unknown", "get", None), ("download", "GET", "MiXeD.bin"),
                                                       ("unknown", "upload", None), ("unknown", "FETCH", None)]  # fmt: skip
    loose = drive(RequestParser(variant(case_sensitive=False)), b"get x\r\n\r\n")
    assert loose[0] == Request("download", "get", "x")


def test_an_unknown_request_with_a_big_body_is_skipped_in_bounded_memory():
    parser = RequestParser(COURSE)
    body = b"POST a.bin " + b"QUJD" * 100_000 + b"\r\n\r\nLIST\r\n\r\n"
    most = 0

    def watch(p):
        nonlocal most
        most = max(most, p.buffered)

    events = drive(parser, body, 4096, watch=watch)
    assert [type(e).__name__ for e in events] == ["Request", "RequestEnd", "Request", "RequestEnd"]
    assert events[0].op == "unknown" and events[2].op == "list" and most <= 4096


def test_header_body_with_ready_says_the_prompt_is_due():
    profile = variant(upload_layout="header_body", upload_ready=True)
    parser = RequestParser(profile)
    events = drive(parser, b"UPLOAD a.bin\r\n", close=False)
    assert events == [Request("upload", "UPLOAD", "a.bin", prompt_due=True)]
    events = drive(parser, b"QUJD\r\n\r\n")
    assert data_of(events) == b"ABC" and events[-1].ended_by == "terminator"


def test_a_json_request_may_give_its_name_after_its_content():
    profile = LAYOUTS["json-keys"]
    wire = b'{"filedata": "QUJD", "command": "PUT", "file_name": "late.bin"}\r\n\r\n'
    events = drive(RequestParser(profile), wire, "bytes")
    assert events[0] == Request("upload", "", None)
    assert data_of(events) == b"ABC"
    assert events[-1] == RequestEnd("upload", "PUT", "late.bin", "object", events[-1].findings,
                                    {"command": "PUT", "file_name": "late.bin"})  # fmt: skip


@pytest.mark.parametrize("wire, words", [
    (b"LIST" + b"x" * 5000, "longer than 4096"),
    (b"GET " + b"x" * 5000, "longer than 4096"),
    (b"UPLOAD " + b"x" * 5000, "longer than 4096"),
    (b"UPLOAD a.bin notanumber QUJD\r\n\r\n", "must be a number"),
    (b"UPLOAD a.bin 4 QU!D\r\n\r\n", "invalid byte b'!'"),
])  # fmt: skip
def test_bad_requests(wire, words):
    profile = variant(upload_layout="inline_length")
    with pytest.raises(PeerError) as err:
        drive(RequestParser(profile), wire, 1000, close=False)
    assert words in str(err.value)


def test_key_value_needs_its_keys():
    profile = LAYOUTS["key_value"]
    with pytest.raises(PeerError, match="expected 'filename=<name>'"):
        drive(RequestParser(profile), b"UPLOAD a.bin content=QUJD\r\n\r\n")
    with pytest.raises(PeerError, match="expected 'content='"):
        drive(RequestParser(profile), b"UPLOAD filename=a.bin data=QUJD\r\n\r\n")


def test_a_100_megabyte_upload_in_64_kib_pieces_stays_small():
    unit = base64.b64encode(os.urandom(48 * KiB))  # 64 KiB of base64
    parser = RequestParser(COURSE)
    parser.receive_data(b"UPLOAD big.bin ")
    assert parser.next_event().name == "big.bin"
    decoded = most = 0
    shifted = unit[5:] + unit[:5]  # pieces not aligned on base64 groups
    for piece in [unit[:5]] + [shifted] * 1599 + [unit[5:]]:
        parser.receive_data(piece)
        while isinstance(event := parser.next_event(), Data):
            decoded += len(event.data)
        most = max(most, parser.buffered)
    parser.receive_data(b"\r\n\r\n")
    events: list = []
    drain(parser, events)
    decoded += len(data_of(events))
    assert decoded == 1600 * 48 * KiB and events[-1].findings.decoded == decoded
    assert most < 4 and parser.buffered == 0


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=300), key=st.sampled_from(sorted(k for k in LAYOUTS if k != "none")),
       cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=8))  # fmt: skip
def test_any_split_of_any_upload_gives_the_same_file(content, key, cuts):
    wire = upload_wire(LAYOUTS[key], "f", content) + list_request(LAYOUTS[key])
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    parser = RequestParser(LAYOUTS[key])
    events: list = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        parser.receive_data(wire[a:b])
        drain(parser, events)
    assert data_of(events) == content
    assert [type(e).__name__ for e in without_data(events)] == ["Request", "RequestEnd", "Request", "RequestEnd"]


def test_invalid_utf8_names_are_bad_names():
    with pytest.raises(PeerError) as err:
        drive(RequestParser(COURSE), b"GET \xff\xfe\r\n\r\n")
    assert err.value.code == Code.BAD_NAME


def test_a_short_unknown_request_ends_at_a_silence_a_long_one_does_not():
    parser = RequestParser(COURSE)
    assert drive(parser, b"HELLO there", close=False) == [Request("unknown", "HELLO")]
    assert parser.end_of_request()
    events: list = []
    drain(parser, events)
    assert events == [RequestEnd("unknown", "HELLO", None, "silence")]
    parser = RequestParser(COURSE)
    drive(parser, b"POST a.bin " + b"QUJD" * 2000, close=False)
    assert not parser.end_of_request()
