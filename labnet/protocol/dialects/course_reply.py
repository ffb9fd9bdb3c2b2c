"""``course`` replies, both directions: a server writes them (in chunks), a client parses them (streamed).

On the wire (dialects.md, section 1) a reply is one JSON object, as
``json.dumps`` writes it, then ``\\r\\n\\r\\n`` (JSON escapes CR and LF, so the
first blank line ends it)::

    {"status": "OK", "data": ["a.bin", "b.bin"]}                      LIST
    {"status": "OK", "data_namafile": "a.bin", "data_file": "<b64>"}   GET
    {"status": "OK", "data": "<message>"}                             UPLOAD, DELETE
    {"status": "ERROR", "data": "<message>"}                          any failure
    {"status": "READY"}                                                some servers, before an upload's body

Success is ``"status": "OK"`` exactly.  The keys come from the profile
(``[reply]``: content, list, message and name keys).

Server side: :func:`list_reply`, :func:`ok_reply`, :func:`error_reply`,
:func:`ready_reply` build small replies whole; :func:`content_reply` gives
the :class:`~labnet.protocol.dialects.events.Framing` of a download reply, so
the caller streams the base64 between its head and tail.

Client side: :class:`ReplyParser` never holds the file.  The content
member's characters go through a ``SegmentDecoder`` (block-by-block base64
survives, and is reported) and come out as ``Data`` events; the other
members are collected small; the reply ends with a :class:`Reply`.  ``Data``
is provisional until then: a reply whose status is not ``"OK"`` makes it
void (some servers put their error text under the same key as the content,
and a short text may even decode as base64).

Imports nothing of labnet but ``errors`` and ``protocol``; must not import
socket, threading, multiprocessing or os.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from labnet.errors import PeerError
from labnet.protocol.dialects.base64_segments import SegmentDecoder, SegmentFindings
from labnet.protocol.dialects.events import NEED_DATA, Data, Framing
from labnet.protocol.dialects.json_stream import MAX_SMALL, Member, ObjectEnd, ObjectScanner, StringEnd, StringPiece
from labnet.protocol.dialects.profile import Profile

REPLY_END = b"\r\n\r\n"
TEXT_KEPT = 4096  # first characters of a streamed content string, kept in case it turns out to be an error text
UNKNOWN_REQUEST = "request tidak dikenali"  # the course's words for an unknown verb


def _dumps(value) -> bytes:
    return json.dumps(value).encode("ascii")  # json.dumps escapes every non-ASCII character


# -- server side: writing replies ------------------------------------------------------------


def list_reply(profile: Profile, names) -> bytes:
    return _dumps({"status": "OK", profile.list_key: list(names)}) + REPLY_END


def ok_reply(profile: Profile, message: str) -> bytes:
    return _dumps({"status": "OK", profile.message_key: message}) + REPLY_END


def error_reply(profile: Profile, message: str) -> bytes:
    return _dumps({"status": "ERROR", profile.message_key: message}) + REPLY_END


def ready_reply(profile: Profile) -> bytes:
    """What a ``ready`` server answers after an upload's header, before its body."""
    return _dumps({"status": "READY"}) + REPLY_END


def content_reply(profile: Profile, name: str) -> Framing:
    """A download reply in pieces: ``head``, then the file's base64 streamed by the caller, then ``tail``."""
    members = {"status": "OK"}
    if profile.name_key != profile.content_key:
        members[profile.name_key] = name
    head = _dumps(members)[:-1] + b", " + _dumps(profile.content_key) + b': "'
    return Framing(head=head, tail=b'"}' + REPLY_END)


# -- client side: parsing a reply ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """The end of a ``course`` reply.

    ``status``: as sent (``None`` if missing); :attr:`ok` only for ``"OK"``
    exactly.  ``members``: every collected member (the streamed content is
    not among them).  ``message``: the error or success text, if any.
    ``names``: the LIST array, if any.  ``file_name``: the download reply's
    name member.  ``stored_name``: the name a server says it stored an upload
    under (``file_path``, at the top or inside ``data``), which a verifier
    must download instead.  ``content_size``: file bytes given as ``Data``
    (``None`` when the reply had no streamed content).  ``findings``: what
    the base64 decoder saw (``None`` without content).
    """

    status: str | None
    members: dict = field(default_factory=dict)
    message: str | None = None
    names: tuple[str, ...] | None = None
    file_name: str | None = None
    stored_name: str | None = None
    content_size: int | None = None
    findings: SegmentFindings | None = None

    @property
    def ok(self) -> bool:
        return self.status == "OK"


class ReplyParser:
    """Parse one ``course`` reply fed in pieces: ``receive_data(bytes)`` (``b""`` = closed), ``next_event()``.

    ``content=True`` for a download: the profile's content member is streamed
    as ``Data`` events (decoded file bytes).  Otherwise every member is
    collected small.  Events: ``Data``, then one :class:`Reply`; ``NEED_DATA``
    meanwhile.  After the reply, :meth:`unused_data` gives the bytes that
    followed it (its ``\\r\\n\\r\\n``, or a next reply on a kept connection).

    Errors (``PeerError``): ``NotUnderstood`` (not JSON; ``.head`` has its
    first bytes), ``EndedEarly`` (closed in the middle of the object), bad
    base64 in an ``OK`` reply (``INTEGRITY``), small members over
    ``max_small`` bytes (``TOO_LARGE``).

    :attr:`buffered`: bytes held here besides the small members -- the
    scanner's unscanned input plus the decoder's partial group: at most one
    fed piece plus a few bytes when the caller drains events after each
    ``receive_data`` (the bounded-memory promise the tests check).
    """

    def __init__(self, profile: Profile, content: bool = False, max_small: int = MAX_SMALL):
        self.profile = profile
        self._content_path = (profile.content_key,)
        self._scan = ObjectScanner({self._content_path} if content else (), max_small, what="reply")
        self._decoder = SegmentDecoder() if content else None
        self._members: dict = {}
        self._text = bytearray()  # the first TEXT_KEPT bytes of the streamed content string
        self._text_length = 0
        self._streamed = False
        self._decode_error: PeerError | None = None
        self._done = False

    def receive_data(self, data: bytes) -> None:
        self._scan.receive_data(data)

    @property
    def buffered(self) -> int:
        return self._scan.buffered + (self._decoder.buffered if self._decoder else 0)

    @property
    def done(self) -> bool:
        return self._done

    def unused_data(self) -> bytes:
        return self._scan.unused_data()

    def next_event(self):
        if self._done:
            return NEED_DATA
        while True:
            event = self._scan.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if isinstance(event, Member):
                self._member(event)
            elif isinstance(event, StringPiece):
                data = self._piece(event.text)
                if data:
                    return Data(data)
            elif isinstance(event, StringEnd):
                data = self._finish_content()
                if data:
                    return Data(data)
            elif isinstance(event, ObjectEnd):
                self._done = True
                return self._reply()

    def _member(self, event: Member) -> None:
        key = event.path[0]
        self._members[key] = event.value
        if key == "status" and event.value != "OK":
            # Not a success: a content-key string still to come is an error text, not a file.
            self._scan.stream_paths.discard(self._content_path)

    def _piece(self, text: bytes) -> bytes:
        self._streamed = True
        if len(self._text) < TEXT_KEPT:
            self._text += text[: TEXT_KEPT - len(self._text)]
        self._text_length += len(text)
        if self._decode_error is not None:
            return b""
        try:
            return self._decoder.feed(text)
        except PeerError as exc:
            return self._undecodable(exc)

    def _finish_content(self) -> bytes:
        if self._decode_error is not None:
            return b""
        try:
            return self._decoder.finish()
        except PeerError as exc:
            return self._undecodable(exc)

    def _undecodable(self, exc: PeerError) -> bytes:
        if self._members.get("status") == "OK":
            raise exc
        # The status may still come and say ERROR: then this was an error text, not bad base64.
        self._decode_error = exc
        return b""

    def _reply(self) -> Reply:
        p, members = self.profile, self._members
        status = members.get("status")
        status = status if isinstance(status, str) else None
        if self._decode_error is not None and status == "OK":
            raise self._decode_error
        message = members.get(p.message_key)
        if not isinstance(message, str):
            message = None
            if self._streamed and status != "OK" and p.content_key == p.message_key:
                message = self._text.decode("utf-8", "replace") + ("..." if self._text_length > TEXT_KEPT else "")
        names = members.get(p.list_key)
        names = tuple(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None
        file_name = members.get(p.name_key)
        stored = members.get("file_path")
        if stored is None and isinstance(members.get("data"), dict):
            stored = members["data"].get("file_path")
        return Reply(
            status=status,
            members=dict(members),
            message=message,
            names=names,
            file_name=file_name if isinstance(file_name, str) else None,
            stored_name=stored if isinstance(stored, str) else None,
            content_size=self._decoder.decoded if self._streamed else None,
            findings=self._decoder.findings() if self._streamed else None,
        )
