"""The incremental JSON object scanner (labnet.protocol.dialects.json_stream)."""

from __future__ import annotations

import json

import pytest
from dialect_drive import drain, pieces, rng
from hypothesis import given, settings
from hypothesis import strategies as st

from labnet.errors import Code, PeerError
from labnet.protocol.dialects.events import EndedEarly, NotUnderstood
from labnet.protocol.dialects.json_stream import Member, ObjectEnd, ObjectScanner, StringEnd, StringPiece


def scan(data: bytes, paths=(("big",),), how="whole", close=True, **kw):
    """Events with the streamed pieces of each string joined, and the scanner."""
    sc = ObjectScanner(set(paths), **kw)
    events: list = []
    for piece in pieces(data, how):
        sc.receive_data(piece)
        drain(sc, events)
    if close and not sc.done:
        sc.receive_data(b"")
        drain(sc, events)
    joined: list = []
    for ev in events:
        if isinstance(ev, StringPiece) and joined and isinstance(joined[-1], StringPiece):
            joined[-1] = StringPiece(ev.path, joined[-1].text + ev.text)
        else:
            joined.append(ev)
    return joined, sc


DOC = (b' {"status": "OK", "list": ["a", {"x": [1, 2.5e3, null]}], "n": -12, "t": true, "big": "QUJD\\/RA\\u003d\\u003d",'
       b' "esc": "q\\"uote\\\\", "params": ["name.bin", "Zm9v", false]}\r\n\r\nNEXT')  # fmt: skip


def test_members_and_a_streamed_string_in_any_split():
    expected, sc = scan(DOC, paths=[("big",), ("params", 1)])
    assert expected == [
        Member(("status",), "OK"),
        Member(("list",), ["a", {"x": [1, 2500.0, None]}]),
        Member(("n",), -12),
        Member(("t",), True),
        StringPiece(("big",), b"QUJD/RA=="),
        StringEnd(("big",), 9),
        Member(("esc",), 'q"uote\\'),
        Member(("params", 0), "name.bin"),
        StringPiece(("params", 1), b"Zm9v"),
        StringEnd(("params", 1), 4),
        Member(("params", 2), False),
        ObjectEnd(),
    ]
    assert sc.unused_data() == b"\r\n\r\nNEXT"
    for how in ["bytes", 2, 3, 5, rng(1), rng(2)]:
        assert scan(DOC, paths=[("big",), ("params", 1)], how=how)[0] == expected


def test_every_two_piece_split_of_escapes():
    doc = b'{"big": "a\\/b\\\\\\"c\\u0041\\ud83d\\ude00z", "k": "\\u00e9"}'
    expected, _ = scan(doc)
    text = expected[0].text
    assert text == json.loads(doc)["big"].encode("utf-8", "surrogatepass")
    for cut in range(1, len(doc)):
        got, _ = scan(doc, how=cut) if cut < 3 else scan_two(doc, cut)
        assert got == expected, cut


def scan_two(doc, cut):
    sc = ObjectScanner({("big",)})
    events: list = []
    for piece in (doc[:cut], doc[cut:]):
        sc.receive_data(piece)
        drain(sc, events)
    joined: list = []
    for ev in events:
        if isinstance(ev, StringPiece) and joined and isinstance(joined[-1], StringPiece):
            joined[-1] = StringPiece(ev.path, joined[-1].text + ev.text)
        else:
            joined.append(ev)
    return joined, sc


def test_a_streamed_path_holding_another_type_is_collected():
    events, _ = scan(b'{"big": [1, 2], "other": "x"}')
    assert events == [Member(("big",), [1, 2]), Member(("other",), "x"), ObjectEnd()]


def test_the_owner_may_stop_streaming_between_events():
    sc = ObjectScanner({("big",)})
    sc.receive_data(b'{"status": "ERROR", "big": "no such file"}')
    first = sc.next_event()
    assert first == Member(("status",), "ERROR")
    sc.stream_paths.clear()
    assert sc.next_event() == Member(("big",), "no such file")
    assert sc.next_event() == ObjectEnd()


@pytest.mark.parametrize("data, detail", [
    (b"File not found", "does not start with '{'"),
    (b"[1, 2]", "does not start with '{'"),
    (b'{"a" 1}', "expected ':'"),
    (b'{"a": 1,}', "expected a member name"),
    (b'{"a": 1 "b": 2}', "expected ',' or '}'"),
    (b'{"a": tru}', "bad value"),
    (b"{'a': 1}", "expected a member name"),
])  # fmt: skip
def test_not_json_is_not_understood_and_carries_the_first_bytes(data, detail):
    with pytest.raises(NotUnderstood) as err:
        scan(data)
    assert err.value.head == data and detail in str(err.value)
    assert repr(data[:20])[:-1] in str(err.value)


@pytest.mark.parametrize("data", [b"", b"  ", b"{", b'{"a"', b'{"a": 1', b'{"a": 1,', b'{"big": "QUJD', b'{"a": [1, 2'])
def test_a_stream_that_stops_inside_the_object_ended_early(data):
    with pytest.raises(EndedEarly) as err:
        scan(data)
    assert isinstance(err.value, PeerError) and not isinstance(err.value, NotUnderstood)
    assert err.value.received == len(data)
    assert err.value.code == Code.INTEGRITY


def test_small_members_are_bounded():
    doc = b'{"status": "OK", "data": ["' + b"x" * 5000 + b'"]}'
    with pytest.raises(PeerError) as err:
        scan(doc, how=100, max_small=4096)
    assert err.value.code == Code.TOO_LARGE and "data" in str(err.value)
    events, sc = scan(doc, how=100, max_small=6000)
    assert events[-1] == ObjectEnd() and sc.small_size <= 6000


@settings(max_examples=80, deadline=None)
@given(
    members=st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
            max_leaves=6,
        ),  # fmt: skip
        max_size=5,
    ),
    big=st.text(max_size=30),
    first=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=6),
)
def test_any_object_in_any_split(members, big, first, cuts):
    members.pop("big", None)
    obj = {"big": big, **members} if first else {**members, "big": big}
    doc = json.dumps(obj).encode()
    bounds = sorted({0, len(doc), *(c for c in cuts if c < len(doc))})
    sc = ObjectScanner({("big",)})
    events: list = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        sc.receive_data(doc[a:b])
        drain(sc, events)
    got = {ev.path[0]: ev.value for ev in events if isinstance(ev, Member)}
    streamed = b"".join(ev.text for ev in events if isinstance(ev, StringPiece))
    assert got == members
    assert streamed == big.encode("utf-8", "surrogatepass")
    assert events[-1] == ObjectEnd()
