"""A ``course``-dialect connection served by labnet: requests parsed as they arrive, files streamed both ways.

What the students' clients send (dialects.md, sections 1-3) is parsed by
``course_request.RequestParser`` as it arrives, under the server's profile
(``--profile``: ``course`` by default, ``course-reference``, ``course-line``
or a TOML file).  A request ends at the profile's terminator, at a JSON
request's closing brace, or at :data:`~labnet.protocol.dialects.course_request.REQUEST_SILENCE`
(0.2 s) of silence when none comes (the course's reference client sends
``LIST`` / ``GET <name>`` with no terminator at all).

* ``UPLOAD``: the base64 is decoded segment by segment as it arrives (a
  block-by-block encoder's mid-stream padding is a new segment, so its file
  is stored whole, and the log says ``padded_midstream``) straight into the
  store's temporary file, hashed with SHA-256 on the way; published
  (``os.replace``, digest recorded like a labnet upload) only when the
  request ended cleanly: at its terminator, JSON end or silence -- never at
  the client's close when the profile has a terminator (a cut request).  A
  bad name, a full disk or ``max_upload`` exceeded: the rest of the request
  is read and dropped (the stream stays in sync) and the error is the reply.
* ``GET``: :func:`~labnet.protocol.dialects.course_reply.content_reply`'s
  head, the file's base64 in pieces (one continuous string: whole 3-byte
  groups per piece, pybase64 via ``codec.Encoder``), then its tail: a reply
  that plain ``base64.b64decode`` reads whole.  Never built in memory.
* ``LIST`` / ``DELETE``: small JSON replies with the profile's keys.
* Anything else, and every failure: ``{"status": "ERROR", "data": "..."}``
  (the profile's message key).  Bytes that break the grammar (bad base64,
  an over-long request head) leave the stream out of sync: error reply,
  then the connection is drained and closed.

The connection is kept for further requests, like the course's reference
server, until the client closes it, the idle limit passes, or the server
stops (an idle connection is then closed).  The profile's
``per_connection`` describes students' *servers* for labnet's client; a
client of labnet's server that waits for the close instead of the reply's
blank line waits for the idle limit.

Memory per connection: the parser's buffer (one received piece plus a
request head of at most ``MAX_HEAD`` bytes) and one download piece.

Must not import threading or multiprocessing; imports nothing of the
server but the store.
"""

from __future__ import annotations

import hashlib

from labnet.errors import Code, LocalError, PeerError
from labnet.protocol.dialects.course_reply import (
    UNKNOWN_REQUEST,
    content_reply,
    error_reply,
    list_reply,
    ok_reply,
    ready_reply,
)
from labnet.protocol.dialects.course_request import REQUEST_SILENCE, RequestParser
from labnet.protocol.dialects.events import CLOSED, NEED_DATA, Data, Request, RequestEnd

CLEAN_ENDS = ("terminator", "object", "silence")


def serve(conn) -> bool:
    """Serve ``course`` requests on ``conn`` (a ``DialectConnection``) until the connection ends.

    Returns True when the socket should be drained before it is closed (an error reply was sent
    while the client may still be sending).
    """
    profile = conn.profile
    parser = RequestParser(profile)
    request: Request | None = None
    upload = None
    hasher = None
    failure: str | None = None  # why the upload in progress will be refused (its bytes are dropped)
    try:
        while True:
            try:
                event = parser.next_event()
            except PeerError as exc:  # the bytes break the grammar: the stream is out of sync
                if not conn.in_request:
                    conn.begin("unknown", "", None)
                conn.finish(False, error=exc.message, ended_by="error")
                conn.send_quietly(error_reply(profile, exc.message))
                return True
            if event is NEED_DATA:
                pending = request is not None or parser.buffered > 0
                try:
                    data = conn.recv(silence=REQUEST_SILENCE if pending else None, between=not pending)
                except (PeerError, LocalError) as exc:
                    if not pending:
                        if exc.code == Code.TIMEOUT:
                            conn.stats.add("timeouts")
                        return False
                    if not conn.in_request:
                        conn.begin("unknown", "", None)
                    conn.finish(False, error=exc.message, ended_by="timeout" if exc.code == Code.TIMEOUT else "error")
                    conn.send_quietly(error_reply(profile, exc.message))
                    return False
                if data is None:
                    parser.end_of_request()
                else:
                    parser.receive_data(data)
                continue
            if event is CLOSED:
                return False
            if isinstance(event, Request):
                request = event
                conn.begin(event.op, event.verb, event.name)
                if event.op == "upload":
                    upload, failure = _begin_upload(conn, event)
                    hasher = hashlib.sha256() if upload is not None else None
                    if event.prompt_due and failure is None:
                        conn.send(ready_reply(profile))
                continue
            if isinstance(event, Data):
                if upload is not None:
                    try:
                        upload.write(event.data)
                        hasher.update(event.data)
                    except (PeerError, LocalError) as exc:
                        failure = exc.message
                        upload.abort()
                        upload = None
                continue
            if isinstance(event, RequestEnd):
                keep = _answer(conn, request, event, upload, hasher, failure)
                request, upload, hasher, failure = None, None, None, None
                if not keep:
                    return False
    finally:
        if upload is not None:
            upload.abort()  # nothing partial is ever visible


def _begin_upload(conn, request: Request):
    """``(upload, None)``, or ``(None, why)`` when the upload is refused before its first byte."""
    if not request.name:
        return None, "no file name in the upload request"
    try:
        return conn.store.begin_upload(request.name, None), None
    except (PeerError, LocalError) as exc:
        return None, exc.message


def _answer(conn, request: Request, end: RequestEnd, upload, hasher, failure: str | None) -> bool:
    """Reply to a request that has ended; False when the connection must close (a download cut short)."""
    profile = conn.profile
    op, name = request.op, end.name
    try:
        if op == "upload":
            return _finish_upload(conn, request, end, upload, hasher, failure)
        if op == "unknown":
            conn.finish(False, error=UNKNOWN_REQUEST, ended_by=end.ended_by)
            conn.send(error_reply(profile, UNKNOWN_REQUEST))
            return True
        if op == "list":
            names = [n for n, _ in conn.store.list()]
            conn.send(list_reply(profile, names))
            conn.finish(True, ended_by=end.ended_by)
            return True
        if not name:
            raise PeerError(f"no file name in the {end.verb} request", Code.BAD_REQUEST)
        if op == "delete":
            conn.store.delete(name)
            conn.send(ok_reply(profile, f"{name} deleted"))
            conn.finish(True, ended_by=end.ended_by)
            return True
        return _download(conn, name, end)
    except (PeerError, LocalError) as exc:
        if conn.in_request:
            conn.finish(False, error=exc.message, ended_by=end.ended_by)
        conn.send_quietly(error_reply(profile, exc.message))
        return exc.code not in (Code.TIMEOUT, Code.SHUTDOWN)


def _finish_upload(conn, request: Request, end: RequestEnd, upload, hasher, failure: str | None) -> bool:
    profile = conn.profile
    findings = end.findings
    if failure is None and end.ended_by not in CLEAN_ENDS and profile.terminator != "none":
        failure = "the connection closed before the end of the upload request: nothing stored"
    if failure is None and request.declared_length is not None and findings is not None:
        got = findings.decoded if profile.upload_length == "file" else findings.characters
        if got != request.declared_length:
            failure = (f"the upload announced {request.declared_length} {profile.upload_length} bytes "
                       f"but carried {got}: nothing stored")  # fmt: skip
    if failure is not None:
        if upload is not None:
            upload.abort()
        conn.finish(False, error=failure, ended_by=end.ended_by, findings=findings)
        conn.send(error_reply(profile, failure))
        return end.ended_by != "close"
    upload.commit(hasher.hexdigest())  # only now, the request complete, does the file appear
    conn.finish(True, size=upload.written, ended_by=end.ended_by, findings=findings)
    conn.send(ok_reply(profile, f"{upload.name} stored ({upload.written} bytes)"))
    return True


def _download(conn, name: str, end: RequestEnd) -> bool:
    f, size = conn.store.open_read(name)
    with f:
        framing = content_reply(conn.profile, name)
        conn.send(framing.head)
        sent, failed = conn.send_file_base64(f, framing.tail)
    if failed is not None:
        # The reply's head is out: an error text now would land inside the base64. Close instead.
        conn.finish(False, size=sent, error=f"download cut short: {failed}", ended_by=end.ended_by)
        return False
    ok = sent == size
    conn.finish(ok, size=sent, ended_by=end.ended_by,
                error=None if ok else f"the file changed while being sent ({sent} of {size} bytes)")  # fmt: skip
    return True
