"""A ``sentinel``-dialect connection served by labnet: the seed's prompt, base64 to an end marker, close.

One request per connection (dialects.md, section 4), parsed by
``sentinel.RequestParser`` under the server's profile (verbs, prompt and
marker; ``sentinel`` by default).  The seed's clients send their request
with no terminator and wait, so a request line ends at a newline, at the
client's close, or at :data:`~labnet.protocol.dialects.course_request.REQUEST_SILENCE`
(0.2 s) of silence.

* ``UPLOAD <name>``: the name and the store are checked first (a refusal
  is ``Error during upload: ...`` with no prompt); then the prompt
  (``READY``), then the base64 up to the marker -- found even when split
  across reads -- decoded segment by segment (a block-by-block encoder's
  file is stored whole) into the store's temporary file, hashed with
  SHA-256 on the way, published only once the marker came; then ``Upload
  successful`` (or ``Error during upload: <why>``, nothing stored) and close.
* ``DOWNLOAD <name>``: the file's base64 streamed in pieces (one continuous
  string), then the marker, then close; ``File not found`` /
  ``Filename not provided`` without the marker.
* ``LIST``: one name a line (``No files found.``), then close.
* Anything else: ``Unknown command``, then close.

Memory per connection: the parser's buffer (one received piece plus the
marker's length) and one download piece.

Must not import threading or multiprocessing; imports nothing of the
server but the store.
"""

from __future__ import annotations

import hashlib

from labnet.errors import Code, LocalError, PeerError
from labnet.protocol.dialects import sentinel
from labnet.protocol.dialects.course_request import REQUEST_SILENCE
from labnet.protocol.dialects.events import CLOSED, NEED_DATA, Data, EndedEarly, Request, RequestEnd


def _next(conn, parser, request_line: bool):
    """The parser's next event, reading as needed (a silence ends a request line)."""
    while True:
        event = parser.next_event()
        if event is not NEED_DATA:
            return event
        waiting = request_line and parser.buffered == 0
        data = conn.recv(silence=REQUEST_SILENCE if request_line and not waiting else None, between=waiting)
        if data is None:
            parser.end_of_request()
        else:
            parser.receive_data(data)


def serve(conn) -> bool:
    """Serve one ``sentinel`` request on ``conn`` (a ``DialectConnection``); True: drain before closing."""
    parser = sentinel.RequestParser(conn.profile)
    try:
        event = _next(conn, parser, request_line=True)
    except PeerError as exc:
        if exc.code == Code.TIMEOUT:
            conn.stats.add("timeouts")
            return False
        conn.begin("unknown", "", None)  # an over-long request line
        conn.finish(False, error=exc.message, ended_by="error")
        conn.send_quietly(sentinel.refusal(sentinel.UNKNOWN))
        return True
    except LocalError:
        return False  # stopping while the client said nothing yet: just close
    if event is CLOSED:
        return False  # connected and closed without a word (a readiness check): not an error
    request: Request = event
    conn.begin(request.op, request.verb, request.name)
    if request.op == "upload":
        return _upload(conn, parser, request)
    end = _next(conn, parser, request_line=True)  # the RequestEnd that follows at once
    ended_by = end.ended_by if isinstance(end, RequestEnd) else None
    if request.op == "list":
        conn.send(sentinel.list_reply(n for n, _ in conn.store.list()))
        conn.finish(True, ended_by=ended_by)
        return False
    if request.op == "download":
        return _download(conn, request, ended_by)
    conn.finish(False, error=sentinel.UNKNOWN, ended_by=ended_by)
    conn.send(sentinel.refusal(sentinel.UNKNOWN))
    return False


def _refuse(conn, text: str, ended_by: str | None, linger: bool = False) -> bool:
    conn.finish(False, error=text, ended_by=ended_by)
    conn.send_quietly(sentinel.refusal(text))
    return linger


def _upload(conn, parser, request: Request) -> bool:
    if not request.name:
        return _refuse(conn, sentinel.NO_NAME, "line")
    try:
        upload = conn.store.begin_upload(request.name, None)
    except (PeerError, LocalError) as exc:
        return _refuse(conn, sentinel.UPLOAD_FAILED + exc.message, "line")
    with upload:  # leaving without commit (any error, the close, a shutdown) removes the temporary file
        hasher = hashlib.sha256()
        try:
            conn.send(sentinel.prompt(conn.profile))
            while True:
                event = _next(conn, parser, request_line=False)
                if isinstance(event, Data):
                    upload.write(event.data)
                    hasher.update(event.data)
                elif isinstance(event, RequestEnd):
                    break
        except EndedEarly as exc:  # the client closed before the marker: a cut upload, nobody to answer
            conn.finish(False, size=upload.written, error=exc.message, ended_by="close")
            return False
        except (PeerError, LocalError) as exc:  # bad base64, over the limit, disk full, timeout, shutdown
            return _refuse(conn, sentinel.UPLOAD_FAILED + exc.message, "error",
                           linger=exc.code not in (Code.TIMEOUT, Code.SHUTDOWN))  # fmt: skip
        upload.commit(hasher.hexdigest())  # only now, the marker seen, does the file appear
    conn.finish(True, size=upload.written, ended_by=event.ended_by, findings=event.findings)
    conn.send(sentinel.upload_reply())
    return bool(parser.buffered)  # bytes after the marker: drain them so the reply is not reset away


def _download(conn, request: Request, ended_by: str | None) -> bool:
    if not request.name:
        return _refuse(conn, sentinel.NO_NAME, ended_by)
    try:
        f, size = conn.store.open_read(request.name)
    except (PeerError, LocalError) as exc:
        text = sentinel.NOT_FOUND if exc.code == Code.NOT_FOUND else f"Error: {exc.message}"
        return _refuse(conn, text, ended_by)
    with f:
        sent, failed = conn.send_file_base64(f, sentinel.download_tail(conn.profile))
    if failed is not None:  # no marker: the client sees the download cut short
        conn.finish(False, size=sent, error=f"download cut short: {failed}", ended_by=ended_by)
        return False
    conn.finish(sent == size, size=sent, ended_by=ended_by,
                error=None if sent == size else f"the file changed while being sent ({sent} of {size} bytes)")
    return False
