"""The ``sentinel`` dialect (labnet.protocol.dialects.sentinel): prompt, base64, end marker split anywhere, close."""

from __future__ import annotations

import base64
import dataclasses
import os
import random

import pytest
from dialect_drive import data_of, drain, drive, rng, without_data
from hypothesis import given, settings
from hypothesis import strategies as st

from labnet.errors import Code, PeerError, UsageError
from labnet.protocol.dialects import PROFILES, load_profile
from labnet.protocol.dialects.events import EndedEarly, NotUnderstood, Request, RequestEnd
from labnet.protocol.dialects.sentinel import (
    NOT_FOUND,
    DownloadEnd,
    DownloadParser,
    Listing,
    Prompt,
    PromptWaiter,
    Refused,
    RequestParser,
    TextReplyParser,
    UploadResult,
    download_request,
    download_tail,
    list_reply,
    list_request,
    prompt,
    refusal,
    upload_reply,
    upload_request,
)

SEED = PROFILES["sentinel"]
STORE = load_profile('dialect = "sentinel"\n[verbs]\nlist = "DIRECTORY"\nupload = "STORE"\ndownload = "FETCH"\n'
                     '[sentinel]\nprompt = "PROCEED"\nmarker = "__COMPLETE__"\n')  # fmt: skip
EOF_MARKER = dataclasses.replace(SEED, name="eof", prompt="READY_FOR_DATA", marker="__EOF__")
PROFILE_IDS = ["seed", "store", "eof"]
KiB = 1024


def test_the_client_requests_on_the_wire():
    assert list_request(SEED) == b"LIST"
    assert download_request(SEED, "Big.bin") == b"DOWNLOAD Big.bin"
    frame = upload_request(SEED, "a.bin")
    assert (frame.head, frame.tail, frame.await_prompt) == (b"UPLOAD a.bin", b"__END__", True)
    assert list_request(STORE) == b"DIRECTORY" and download_request(STORE, "x") == b"FETCH x"
    assert upload_request(STORE, "x").tail == b"__COMPLETE__"
    with pytest.raises(UsageError):
        download_request(SEED, "a b")
    assert prompt(SEED) == b"READY" and prompt(STORE) == b"PROCEED" and download_tail(EOF_MARKER) == b"__EOF__"


def download_wire(profile, content: bytes, block: int | None = None) -> bytes:
    if block:
        body = b"".join(base64.b64encode(content[i : i + block]) for i in range(0, len(content), block))
    else:
        body = base64.b64encode(content)
    return body + download_tail(profile)


@pytest.mark.parametrize("profile", [SEED, STORE, EOF_MARKER], ids=PROFILE_IDS)
def test_the_marker_split_at_every_position_is_found_and_never_taken_for_data(profile):
    content = os.urandom(400)  # longer than the refusal window, so data flows before the marker
    wire = download_wire(profile, content)
    marker_at = len(wire) - len(profile.marker)
    for cut in range(marker_at - 3, len(wire) + 1):
        parser = DownloadParser(profile)
        events: list = []
        for piece in filter(None, (wire[:cut], wire[cut:])):
            parser.receive_data(piece)
            drain(parser, events)
            assert content.startswith(data_of(events))  # no byte of the marker ever comes out as data
        parser.receive_data(b"")
        assert drain(parser, events)  # then CLOSED
        assert data_of(events) == content, cut
        assert without_data(events)[-1] == DownloadEnd(len(content), without_data(events)[-1].findings)


@pytest.mark.parametrize("profile", [SEED, STORE], ids=PROFILE_IDS[:2])
def test_a_download_byte_by_byte_equals_one_chunk(profile):
    wire = download_wire(profile, os.urandom(1000))
    parser = DownloadParser(profile)
    held = []
    events = drive(parser, wire, "bytes", watch=lambda p: held.append(p.buffered))
    assert events == drive(DownloadParser(profile), wire)
    most = 0
    parser = DownloadParser(profile)
    for i in range(len(wire)):  # after the window, at most a marker's beginning and a partial group wait
        parser.receive_data(wire[i : i + 1])
        drain(parser, [])
        if i > 300:
            most = max(most, parser.buffered)
    assert most <= len(profile.marker) - 1 + 3


def test_a_file_that_contains_a_marker_like_text_is_still_base64():
    content = b"__END__" * 100  # base64 never contains "_", so the marker cannot appear inside it
    assert data_of(drive(DownloadParser(SEED), download_wire(SEED, content), 7)) == content


def test_block_padded_downloads_are_recovered_and_reported():
    content = os.urandom(40 * KiB)
    events = drive(DownloadParser(SEED), download_wire(SEED, content, block=3 * KiB + 1), 1000)
    assert data_of(events) == content
    found = without_data(events)[-1].findings
    assert found.padded_midstream and found.segments == 14  # 13 padded blocks, then a last one of 1011 bytes


@pytest.mark.parametrize("text", ["File not found", "Filename not provided", "Unknown command", "Error: disk full\n"])
@pytest.mark.parametrize("how", ["whole", "bytes"])
def test_an_error_text_instead_of_data_is_refused_not_decoded(text, how):
    events = drive(DownloadParser(SEED), text.encode(), how)
    assert events == [Refused(text)]
    assert events[0].known == (text in ("File not found", "Filename not provided", "Unknown command"))
    events = drive(DownloadParser(SEED), text.encode() + b"__END__", how)  # some send the marker anyway
    assert events == [Refused(text)]


def test_a_download_cut_short_ended_early():
    wire = download_wire(SEED, os.urandom(3000))
    for cut in (10, 500, len(wire) - 3):
        with pytest.raises(EndedEarly):
            drive(DownloadParser(SEED), wire[:cut], 100)
    with pytest.raises(EndedEarly, match="before the end marker, after 0 bytes"):
        drive(DownloadParser(SEED), b"")


def test_data_after_the_marker_is_refused():
    with pytest.raises(PeerError, match="after the end marker"):
        drive(DownloadParser(SEED), download_wire(SEED, os.urandom(300)) + b"more")
    events = drive(DownloadParser(SEED), download_wire(SEED, b"") + b"\n")  # an empty file, a newline: fine
    assert events == [DownloadEnd(0, events[0].findings)]


def test_bad_base64_in_a_download():
    with pytest.raises(PeerError) as err:
        drive(DownloadParser(SEED), b"QUJD" * 100 + b"!QUJD__END__")
    assert err.value.code == Code.INTEGRITY and "offset 400" in str(err.value)


@pytest.mark.parametrize("pieces, expected", [
    ([b"READY"], Prompt()),
    ([b"RE", b"AD", b"Y"], Prompt()),
    ([b"READY\n"], Prompt(b"\n")),
])  # fmt: skip
def test_the_prompt(pieces, expected):
    waiter = PromptWaiter(SEED)
    events: list = []
    for piece in pieces:
        waiter.receive_data(piece)
        drain(waiter, events)
    assert events == [expected] and events[0].exact == (expected.extra == b"")


def test_the_prompt_refused_or_not_understood():
    assert drive(PromptWaiter(SEED), b"Filename not provided") == [Refused("Filename not provided")]
    assert drive(PromptWaiter(STORE), b"READY") == [Refused("READY")]  # the wrong word for this server
    with pytest.raises(NotUnderstood, match="prompt not understood: b'READYX'"):
        drive(PromptWaiter(SEED), b"READYX")
    with pytest.raises(EndedEarly):
        drive(PromptWaiter(SEED), b"")


def test_text_replies_round_trip():
    assert list_reply(["a.bin", "b.bin"]) == b"a.bin\nb.bin\n"
    assert drive(TextReplyParser("list"), list_reply(["a.bin", "b.bin"]), "bytes") == \
        [Listing(("a.bin", "b.bin"), "a.bin\nb.bin\n")]  # fmt: skip
    assert drive(TextReplyParser("list"), list_reply([])) == [Listing((), "No files found.")]
    assert drive(TextReplyParser("list"), b"Unknown command") == [Refused("Unknown command")]
    assert drive(TextReplyParser("upload"), upload_reply()) == [UploadResult(True, "Upload successful")]
    failed = drive(TextReplyParser("upload"), upload_reply("disk full"))
    assert failed == [UploadResult(False, "Error during upload: disk full")]
    assert drive(TextReplyParser("list"), refusal(NOT_FOUND))[0].known
    with pytest.raises(EndedEarly):
        drive(TextReplyParser("upload"), b"")


# -- server side ---------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [SEED, STORE, EOF_MARKER], ids=PROFILE_IDS)
@pytest.mark.parametrize("how", ["whole", "bytes", 3, rng(4)])
def test_an_upload_round_trip(profile, how):
    content = random.Random(3).randbytes(500 if how == "bytes" else 30_000)
    frame = upload_request(profile, "Up.Bin")
    parser = RequestParser(profile)
    events = drive(parser, frame.head, how, close=False, silence=True)  # no terminator: a silence ends it
    verb = profile.upload_verb
    assert events == [Request("upload", verb, "Up.Bin", prompt_due=True)]
    events = drive(parser, base64.b64encode(content) + frame.tail, how)
    assert data_of(events) == content
    end = without_data(events)[-1]
    assert end == RequestEnd("upload", verb, "Up.Bin", "marker", end.findings) and end.findings.segments == 1


def test_the_upload_marker_split_at_every_position():
    content = os.urandom(60)
    wire = base64.b64encode(content) + b"__END__"
    for cut in range(len(wire) + 1):
        parser = RequestParser(SEED)
        parser.receive_data(b"UPLOAD a.bin\n")
        events: list = []
        for piece in filter(None, (wire[:cut], wire[cut:])):
            parser.receive_data(piece)
            drain(parser, events)
        assert data_of(events) == content and isinstance(events[-1], RequestEnd), cut


def test_request_lines():
    events = drive(RequestParser(SEED), b"LIST\nDOWNLOAD Some.File\nDELETE x\n")
    assert [(e.op, e.name) for e in events if isinstance(e, Request)] == [("list", None), ("download", "Some.File"),
                                                                          ("unknown", "x")]  # fmt: skip
    parser = RequestParser(SEED)
    assert drive(parser, b"DOWNLOAD a", close=False) == []
    assert not RequestParser(SEED).end_of_request()
    assert parser.end_of_request()
    events: list = []
    drain(parser, events)
    assert events == [Request("download", "DOWNLOAD", "a"), RequestEnd("download", "DOWNLOAD", "a", "silence")]
    assert drive(RequestParser(SEED), b"LIST") == [Request("list", "LIST"), RequestEnd("list", "LIST", None, "silence")]


def test_an_upload_closed_before_its_marker_ended_early():
    parser = RequestParser(SEED)
    drive(parser, b"UPLOAD a\n", close=False)
    assert not parser.end_of_request()  # a silence never ends a body
    with pytest.raises(EndedEarly):
        drive(parser, b"QUJD")


def test_a_100_megabyte_upload_in_64_kib_pieces_stays_small():
    unit = base64.b64encode(os.urandom(48 * KiB))
    parser = RequestParser(SEED)
    parser.receive_data(b"UPLOAD big.bin")
    parser.end_of_request()
    assert parser.next_event().prompt_due
    decoded = most = 0
    tail = unit[-3:] + b"__END__"
    shifted = unit[-3:] + unit[:-3]
    for piece in [unit[:-3]] + [shifted] * 1599 + [tail]:
        parser.receive_data(piece)
        events: list = []
        drain(parser, events)
        decoded += len(data_of(events))
        most = max(most, parser.buffered)
    assert decoded == 1600 * 48 * KiB and isinstance(events[-1], RequestEnd)
    assert most < 10


@settings(max_examples=60, deadline=None)
@given(content=st.binary(max_size=500), block=st.integers(min_value=1, max_value=80),
       cuts=st.lists(st.integers(min_value=1, max_value=900), max_size=8))  # fmt: skip
def test_any_split_of_any_download_gives_the_same_file(content, block, cuts):
    wire = download_wire(SEED, content, block=block)
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    parser = DownloadParser(SEED)
    events: list = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        parser.receive_data(wire[a:b])
        drain(parser, events)
    parser.receive_data(b"")
    assert drain(parser, events)
    assert data_of(events) == content
    assert isinstance(events[-1], DownloadEnd) and events[-1].size == len(content)


def test_a_100_megabyte_download_in_64_kib_pieces_stays_small():
    unit = base64.b64encode(os.urandom(48 * KiB))
    parser = DownloadParser(SEED)
    decoded = most = 0
    shifted = unit[-3:] + unit[:-3]
    events: list = []
    for piece in [unit[:-3]] + [shifted] * 1599 + [unit[-3:] + b"__E", b"ND__"]:
        parser.receive_data(piece)
        events = []
        drain(parser, events)
        decoded += len(data_of(events))
        most = max(most, parser.buffered)
    assert decoded == 1600 * 48 * KiB and isinstance(events[-1], DownloadEnd)
    assert most < 10
