"""``course`` requests, both directions: a client builds them (uploads in chunks), a server parses them (streamed).

On the wire (dialects.md, sections 1-3), ASCII text ended by the profile's
terminator (``\\r\\n\\r\\n``, ``\\n``, or nothing: then a silence ends it)::

    LIST                      GET <name>              DELETE <name>
    UPLOAD <name> <b64>                               layout "inline"
    UPLOAD <name> <length> <b64>                      layout "inline_length"
    UPLOAD filename=<name> content=<b64>              layout "key_value" (the profile names both keys)
    UPLOAD <name>\\r\\n<b64>                            layout "header_body" (maybe {"status": "READY"} in between)
    {"command": "UPLOAD", "params": [<name>, <b64>]}  layout "json" (or separate name and content keys)

Client side: :func:`list_request`, :func:`download_request` and
:func:`delete_request` build whole requests; :func:`upload_request` gives
the upload's :class:`~labnet.protocol.dialects.events.Framing` (head, the
caller's streamed base64, tail), so a 100 MB file never sits in a request.

Server side: :class:`RequestParser` emits :class:`Request` as soon as the
verb and name are known, then an upload's content as ``Data`` (through a
``SegmentDecoder``: block-by-block base64 is recovered and reported), then
:class:`RequestEnd`.  Only the head (at most ``max_head`` bytes) is ever
held whole.  A request ends at the profile's terminator, at a JSON
request's closing brace, at the peer's close, or when the I/O layer calls
:meth:`RequestParser.end_of_request` after a silence -- which ends a request
only where a silence can mean an end: always with terminator ``none``, and
otherwise when no upload body is in progress (nor a long request under an
unknown verb) or the bytes so far end with a newline (the clients that end a
request with ``\\n`` and wait).  Verbs are
compared as the profile says (as written, or in upper case); names are
never lowercased.

Imports nothing of labnet but ``errors`` and ``protocol``; must not import
socket, threading, multiprocessing or os.
"""

from __future__ import annotations

import json
import re

from labnet.errors import Code, PeerError, UsageError
from labnet.protocol.codec import wire_length
from labnet.protocol.dialects.base64_segments import SegmentDecoder
from labnet.protocol.dialects.buffers import InputBuffer, split_at_marker
from labnet.protocol.dialects.events import CLOSED, NEED_DATA, Data, Framing, Request, RequestEnd
from labnet.protocol.dialects.json_stream import Member, ObjectEnd, ObjectScanner, StringEnd, StringPiece
from labnet.protocol.dialects.profile import Profile

MAX_HEAD = 4096  # bytes of a request before its content (or of a whole request without content)
REQUEST_SILENCE = 0.2
"""Seconds of silence after which a server ends a request that came with no terminator.

The course's reference client sends ``LIST`` or ``GET <name>`` with nothing
after it and then waits (dialects.md, section 3), so only a silence can end
such a request; ~200 ms is what the students' servers that serve it use.
It *adds* to the time of every such request (and of a ``\n``-ended one a
server cannot tell from a pause): 0.2 s per request on top of the transfer.
labnet's servers (``labnet.server.dialect_session``) and the sentinel
request line (whose clients send no terminator either) use this one value.
"""
HEAD_WORDS = {"inline": 1, "inline_length": 2, "key_value": 1, "header_body": 1, "json": 1}  # after the verb
_WORD = re.compile(rb"[^ \t\r\n]+")
_SPACES = re.compile(rb"[ \t]*")


# -- client side: building requests ---------------------------------------------------------


def _check_name(name: str) -> str:
    if not name or any(ch.isspace() for ch in name) or not name.isprintable():
        raise UsageError(f"a course request cannot carry the name {name!r}: it must be one printable word")
    return name


def _json_all(profile: Profile) -> bool:
    return profile.upload_layout == "json" and profile.json_requests == "all"


def _json_head(profile: Profile, verb: str, name: str | None) -> dict:
    members = {profile.command_key: verb} if profile.command_key else {}
    if name is not None and profile.params_key:
        members[profile.params_key] = [name]
    elif name is not None:
        members[profile.request_name_key] = name
    return members


def _simple(profile: Profile, op: str, name: str | None) -> bytes:
    verb = profile.verb_for(op)
    if name is not None:
        _check_name(name)
    if _json_all(profile):
        if not profile.command_key:
            raise UsageError(f"profile {profile.name!r}: JSON requests without a command key cannot say {op}")
        text = json.dumps(_json_head(profile, verb, name))
    else:
        text = verb if name is None else f"{verb} {name}"
    return text.encode("utf-8") + profile.terminator_bytes


def list_request(profile: Profile) -> bytes:
    return _simple(profile, "list", None)


def download_request(profile: Profile, name: str) -> bytes:
    return _simple(profile, "download", name)


def delete_request(profile: Profile, name: str) -> bytes:
    return _simple(profile, "delete", name)


def upload_request(profile: Profile, name: str, size: int) -> Framing:
    """The framing of an upload of ``size`` file bytes: send ``head``, the base64 (streamed), ``tail``.

    With ``await_prompt`` (``header_body`` with ``ready``), wait for the
    server's ``{"status": "READY"}`` reply (a ``course_reply.ReplyParser``)
    between head and body.
    """
    verb = profile.verb_for("upload")
    _check_name(name)
    layout, term = profile.upload_layout, profile.terminator_bytes
    if layout == "json":
        members = _json_head(profile, verb, None)
        if profile.params_key:
            head = json.dumps({**members, profile.params_key: [name, ""]})[: -len('""]}')] + '"'
            return Framing(head.encode("utf-8"), b'"]}' + term)
        head = json.dumps({**members, profile.request_name_key: name, profile.request_content_key: ""})[:-2]
        return Framing(head.encode("utf-8"), b'"}' + term)
    if layout == "inline_length":
        count = size if profile.upload_length == "file" else wire_length(size, "b64")
        head = f"{verb} {name} {count} "
    elif layout == "key_value":
        head = f"{verb} {profile.request_name_key}={name} {profile.request_content_key}="
    elif layout == "header_body":
        head = f"{verb} {name}\r\n"
    else:
        head = f"{verb} {name} "
    return Framing(head.encode("utf-8"), term, await_prompt=profile.upload_ready)


# -- server side: parsing requests ------------------------------------------------------------

_IDLE, _BODY, _DISCARD, _JSON = "idle", "body", "discard", "json"


class RequestParser:
    """Parse ``course`` requests fed in pieces; several per connection, one after the other.

    ``receive_data(bytes)`` (``b""``: the peer closed its side),
    :meth:`end_of_request` after a silence, ``next_event()`` until
    ``NEED_DATA``: :class:`Request`, ``Data`` (upload content, decoded),
    :class:`RequestEnd`; ``CLOSED`` when the peer closed between requests.
    :attr:`buffered`: bytes held here (input not yet parsed plus the
    decoder's partial group): a piece and a few bytes during a body.
    """

    def __init__(self, profile: Profile, max_head: int = MAX_HEAD):
        self.profile = profile
        self.max_head = max_head
        self._in = InputBuffer()
        self._state = _IDLE
        self._pending: list = []
        self._silence = False
        self._newline_last = False  # the last byte received was "\n"
        self._request: Request | None = None
        self._decoder: SegmentDecoder | None = None
        self._scan: ObjectScanner | None = None
        self._json: dict = {}
        self._skipped = 0  # bytes of an unknown request skipped so far

    # -- feeding -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if data:
            self._newline_last = data[-1:] == b"\n"
        if self._state == _JSON:
            self._scan.receive_data(data)
            if not data:
                self._in.eof = True
        else:
            self._in.append(data)

    def end_of_request(self) -> bool:
        """The I/O layer saw a silence; True if that ends the request now (see the module docstring)."""
        if self._state == _JSON or self._state == _IDLE and not self._in:
            return False
        # Inside an upload (or a long unknown request, maybe an upload under another verb) a silence is a
        # pause, unless the terminator is "none" or the client ended a line and now waits.
        long_body = self._state == _BODY or self._state == _DISCARD and self._skipped > self.max_head
        if long_body and self.profile.terminator != "none" and not self._newline_last:
            return False
        self._silence = True
        return True

    @property
    def buffered(self) -> int:
        held = len(self._in) + (self._decoder.buffered if self._decoder else 0)
        return held + (self._scan.buffered if self._state == _JSON else 0)

    # -- events ----------------------------------------------------------------

    def next_event(self):
        while not self._pending:
            if self._state == _IDLE:
                event = self._head()
            elif self._state == _JSON:
                event = self._json_event()
            else:
                event = self._body()
            if event is not None:
                return event
        return self._pending.pop(0)

    def _finish(self, ended_by: str, findings=None, members=None, verb=None, name=None) -> None:
        req = self._request
        self._pending.append(RequestEnd(req.op, req.verb if verb is None else verb, req.name if name is None else name,
                                        ended_by, findings, members or {}))  # fmt: skip
        self._state, self._silence, self._decoder, self._scan = _IDLE, False, None, None

    def _ended(self) -> bool:
        return self._silence or self._in.eof

    def _head(self):
        self._in.skip_whitespace()  # CR/LF a previous request left, blank lines
        if not self._in:
            self._silence = False
            return CLOSED if self._in.eof else NEED_DATA
        if self._in.data[self._in.start] == ord("{"):
            return self._start_json()
        data, base = self._in.data, self._in.start
        word = _WORD.match(data, base)
        if word.end() == len(data) and not self._ended():
            return self._need_head()
        verb = word.group().decode("ascii", "replace")
        op = self.profile.op_of(verb)
        if op == "unknown":
            self._in.skip(word.end() - base)
            self._skipped = 0
            return self._begin(Request("unknown", verb), _DISCARD)
        if op == "upload":
            return self._upload_head(verb, word.end())
        term = self.profile.terminator_bytes
        end = self._in.find(term, 0, self.max_head + len(term)) if term else -1
        if end == -1 and not self._ended():
            return self._need_head()
        words = self._in.peek(end if end != -1 else None).split()
        self._in.skip(end + len(term) if end != -1 else len(self._in))
        self._request = Request(op, verb, _name(words[1]) if len(words) > 1 else None,
                                tuple(_name(w) for w in words[2:]))  # fmt: skip
        self._finish("terminator" if end != -1 else "silence" if self._silence else "close")
        return self._request

    def _need_head(self):
        if len(self._in) > self.max_head:
            raise PeerError(f"request longer than {self.max_head} bytes before its end or content", Code.TOO_LARGE)
        return NEED_DATA

    def _upload_head(self, verb: str, pos: int):
        data, base, layout = self._in.data, self._in.start, self.profile.upload_layout
        tokens = []
        for _ in range(HEAD_WORDS[layout]):
            start = _SPACES.match(data, pos).end()
            if start == len(data):
                if not self._ended():
                    return self._need_head()
                break
            word = _WORD.match(data, start)
            if word is None:
                break  # a line break: fewer words than the layout has (no name)
            if word.end() == len(data) and not self._ended():
                return self._need_head()  # the word may go on in the next piece
            tokens.append(word.group())
            pos = word.end()
        if pos - base > self.max_head:
            return self._need_head()
        rest = data[pos : pos + 2]
        if layout == "header_body" and rest[:1] in (b"\r", b"\n"):
            if rest == b"\r" and not self._ended():
                return self._need_head()  # the header's "\r\n" is cut in two
            pos += 2 if rest == b"\r\n" else 1
        elif rest[:1] == b" ":
            pos += 1
        elif not rest and not self._ended():
            return self._need_head()  # the delimiter after the last word has not arrived
        name, declared, args = (_name(tokens[0]) if tokens else None), None, ()
        if layout == "inline_length" and len(tokens) > 1:
            if not tokens[1].isdigit():
                raise PeerError(f"upload length must be a number, got {tokens[1][:40]!r}")
            declared, args = int(tokens[1]), (tokens[1].decode(),)
        if layout == "key_value":
            name, pos = self._key_value(name, pos)
            if pos is None:
                return self._need_head()
        self._in.skip(pos - base)
        prompt = layout == "header_body" and self.profile.upload_ready
        self._decoder = SegmentDecoder()
        return self._begin(Request("upload", verb, name, args, declared, prompt), _BODY)

    def _key_value(self, word: str | None, pos: int):
        """``filename=<name> content=<b64>``: the name, and where the base64 starts (None: need more)."""
        p = self.profile
        if word is None or not word.startswith(p.request_name_key + "="):
            raise PeerError(f"expected '{p.request_name_key}=<name>' after the verb, got {word!r}")
        key = p.request_content_key.encode() + b"="
        got = self._in.data[pos : pos + len(key)]
        if len(got) < len(key) and not self._ended() and key.startswith(got):
            return None, None
        if got != key and (got or not self._ended()):
            raise PeerError(f"expected '{p.request_content_key}=' after the name, got {got!r}")
        return word[len(p.request_name_key) + 1 :] or None, pos + len(got)

    def _begin(self, request: Request, state: str) -> Request:
        self._request, self._state = request, state
        return request

    def _body(self):
        """Upload content (or an unknown request's rest) up to the end of the request."""
        term = self.profile.terminator_bytes
        safe, at = split_at_marker(self._in, term) if term else (len(self._in), -1)
        ended = at != -1 or self._ended()
        if ended and at == -1:
            safe = len(self._in)  # a held-back "\r\n" is the client's own line end: whitespace
        piece = self._in.take(safe)
        self._skipped += len(piece)
        data = self._decoder.feed(piece) if self._decoder and piece else b""
        if not ended:
            return Data(data) if data else NEED_DATA
        if at != -1:
            self._in.skip(len(term))
        findings = None
        if self._decoder:
            data += self._decoder.finish()
            findings = self._decoder.findings()
        self._finish("terminator" if at != -1 else "silence" if self._silence else "close", findings)
        return Data(data) if data else None

    # -- JSON requests ---------------------------------------------------------

    def _start_json(self):
        p = self.profile
        path = (p.params_key, 1) if p.params_key else (p.request_content_key,)
        self._scan = ObjectScanner({path}, what="request")
        self._scan.receive_data(self._in.take_all())
        if self._in.eof:
            self._scan.receive_data(b"")
        self._json, self._request, self._state = {}, None, _JSON
        return None

    def _json_event(self):
        event = self._scan.next_event()
        if event is NEED_DATA:
            return NEED_DATA
        if isinstance(event, Member):
            self._json[event.path if len(event.path) > 1 else event.path[0]] = event.value
            return None
        if isinstance(event, (StringPiece, StringEnd)):
            announce = self._announce(content=True)  # the content starts: the server learns of the upload now
            if self._decoder is None:
                self._decoder = SegmentDecoder()
            if isinstance(event, StringPiece):
                data = self._decoder.feed(event.text)
            else:
                data = self._decoder.finish()
            if announce is None:
                return Data(data) if data else None
            if data:
                self._pending.append(Data(data))
            return announce
        if isinstance(event, ObjectEnd):
            rest = self._scan.unused_data()
            findings = self._decoder.findings() if self._decoder else None
            announce = self._announce(content=self._decoder is not None)
            verb, name = self._json_verb_and_name()
            members = {k: v for k, v in self._json.items() if isinstance(k, str)}
            self._state = _IDLE
            if rest:
                self._in.append(rest)
            self._finish("object", findings, members, verb, name)
            return announce
        return None  # pragma: no cover

    def _json_verb_and_name(self):
        p = self.profile
        verb = self._json.get(p.command_key) if p.command_key else None
        name = self._json.get((p.params_key, 0)) if p.params_key else self._json.get(p.request_name_key)
        return (verb if isinstance(verb, str) else ""), (name if isinstance(name, str) else None)

    def _announce(self, content: bool) -> Request | None:
        """The Request event of a JSON request, once: when its content starts, or at its end."""
        if self._request is not None:
            return None
        verb, name = self._json_verb_and_name()
        op = self.profile.op_of(verb) if verb else "upload" if content else "unknown"
        self._request = Request(op, verb, name)
        return self._request


def _name(word: bytes) -> str:
    try:
        return word.decode("utf-8")
    except UnicodeDecodeError:
        raise PeerError(f"name is not valid UTF-8: {word[:40]!r}", Code.BAD_NAME) from None
