"""The connection log: one JSON line per closed connection, in every dialect, from every worker.

``labnet server --connection-log FILE`` (``ServerConfig.connection_log``)
makes every connection append one line when it closes::

    {"kind": "connection", "dialect": "course", "peer": "127.0.0.1:40000", "pid": 123,
     "accepted": 1764670000.12, "started": 1764670000.13, "closed": 1764670000.50,
     "bytes_in": 1400, "bytes_out": 1100,
     "requests": [{"op": "upload", "verb": "UPLOAD", "name": "x.bin", "ok": true, "size": 1000,
                   "error": null, "ended_by": "terminator", "padded_midstream": false}]}

* ``accepted``: ``time.time()`` when the accept loop accepted the connection;
  ``started``: when a worker began serving it (their difference is the time
  spent waiting for a worker); ``closed``: when it closed.  ``null`` when not
  known (a connection served outside a server's accept loop).
* ``bytes_in`` / ``bytes_out``: bytes on the wire, both ways, everything included.
* ``requests``, in order: ``op`` (``upload``, ``download``, ``list``,
  ``delete``; ``null`` for a request the server did not understand; labnet's
  own ``STATS`` and ``QUIT`` too), ``verb`` as the client wrote it, ``name``
  (or ``null``), ``ok``, ``size`` (file bytes stored or sent, ``null`` when
  none), ``error`` (the text the client was told, or ``null``), ``ended_by``
  (what ended the request: ``terminator``, ``silence``, ``close``,
  ``marker``, ``object``, ``line`` for labnet, ``timeout``, ``error``...),
  ``padded_midstream`` (the client's base64 had ``=`` padding in the middle:
  a block-by-block encoder, whose file labnet still stores whole).
  At most :data:`MAX_REQUESTS` are logged per connection; beyond them only
  the count ``requests_omitted`` is added (memory per connection stays bounded).

Writing: each line is written by a single ``os.write`` on a descriptor
opened with ``O_APPEND`` -- the kernel appends each such write whole, so the
lines of worker processes and threads never interleave (a line is a few
hundred bytes to a few KiB, far below what a regular file's append could
split).  :func:`read_connection_log` skips a partial last line (a server
killed in the middle of a write).

Must not import sockets, threads or processes.
"""

from __future__ import annotations

import json
import os
import time

from labnet.protocol.console import parse_connection_log

MAX_REQUESTS = 1000  # requests logged per connection (a kept connection may serve many more)
MAX_ERROR = 500  # characters of an error text kept in the log


def request_entry(op: str | None, verb: str, name: str | None = None) -> dict:
    """A new request's log entry (its outcome is filled in by :meth:`ConnectionRecord.finish`)."""
    return {"op": op, "verb": verb, "name": name, "ok": False, "size": None, "error": None, "ended_by": None,
            "padded_midstream": False}  # fmt: skip


class ConnectionRecord:
    """What one connection did, gathered while it is served and written as one line when it closes."""

    def __init__(self, dialect: str, peer: str, accepted: float | None, path: str | None):
        self.path = path
        self.line = {"kind": "connection", "dialect": dialect, "peer": peer, "pid": os.getpid(),
                     "accepted": accepted, "started": time.time(), "closed": None, "bytes_in": 0, "bytes_out": 0,
                     "requests": []}  # fmt: skip
        self.omitted = 0
        self.current: dict | None = None

    def begin(self, op: str | None, verb: str, name: str | None = None) -> dict:
        """A request starts; returns its entry (also :attr:`current` until :meth:`finish`)."""
        entry = request_entry(op, verb, name)
        if len(self.line["requests"]) < MAX_REQUESTS:
            self.line["requests"].append(entry)
        else:
            self.omitted += 1
        self.current = entry
        return entry

    def finish(self, ok: bool, size: int | None = None, error: str | None = None, ended_by: str | None = None,
               padded_midstream: bool | None = None) -> None:  # fmt: skip
        """The current request's outcome (a no-op when none is open)."""
        entry, self.current = self.current, None
        if entry is None:
            return
        entry["ok"] = bool(ok)
        if size is not None:
            entry["size"] = int(size)
        if error is not None:
            entry["error"] = str(error)[:MAX_ERROR]
        if ended_by is not None:
            entry["ended_by"] = ended_by
        if padded_midstream is not None:
            entry["padded_midstream"] = bool(padded_midstream)

    def close(self, bytes_in: int, bytes_out: int) -> None:
        """The connection closed: fill in the totals and append the line (if a log file was given)."""
        if self.current is not None:
            self.finish(False, error=self.current.get("error") or "connection ended during the request",
                        ended_by=self.current.get("ended_by") or "close")  # fmt: skip
        self.line["closed"] = time.time()
        self.line["bytes_in"], self.line["bytes_out"] = int(bytes_in), int(bytes_out)
        if self.omitted:
            self.line["requests_omitted"] = self.omitted
        if self.path:
            append_line(self.path, self.line)


def append_line(path: str, obj: dict) -> None:
    """Append ``obj`` as one JSON line with one ``os.write`` on an ``O_APPEND`` descriptor (never raises)."""
    data = (json.dumps(obj, separators=(", ", ": ")) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError:
        return
    try:
        os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_connection_log(path) -> list[dict]:
    """Every complete line of a connection log, in order (``[]`` when there is no file yet)."""
    try:
        with open(path, "rb") as fh:
            return parse_connection_log(fh.read())
    except FileNotFoundError:
        return []


# -- when the accept loop accepted a connection ---------------------------------------------
# The accept loop notes the time under the socket's descriptor number (``note_accepted``); the
# worker that serves it takes it back (``take_accepted``): a thread worker in the same process
# by the same number; a process worker gets it in the hand-off message instead
# (``accepted_message`` / ``accepted_from_message``).  The number cannot be reused before the
# connection is closed, which happens after the worker took it.

_accepted: dict[int, float] = {}


def note_accepted(fd: int) -> float:
    when = time.time()
    _accepted[fd] = when
    return when


def take_accepted(fd: int) -> float | None:
    return _accepted.pop(fd, None)


def accepted_message(fd: int) -> bytes:
    """What the process model's hand-off sends with a descriptor: the accept time, as text."""
    when = take_accepted(fd)
    return b"c" if when is None else repr(when).encode("ascii")


def accepted_from_message(message: bytes) -> float | None:
    try:
        return float(message)
    except ValueError:
        return None


# -- the labnet dialect: its session reports through the counters, watched here ---------------


class RecordingStats:
    """The counters as a labnet-dialect session sees them, noting each request in a :class:`ConnectionRecord`.

    labnet's own session (``labnet.server.session``) counts every request it
    serves (``request_started``, then ``count(verb, ok)``); this view passes
    every call on and turns those two into log entries.  The session tells it
    the request line (:meth:`line`, for the name and size) and the error line
    it sent (:meth:`error_line`).
    """

    def __init__(self, stats, record: ConnectionRecord, store):
        self._stats = stats
        self._record = record
        self._store = store
        self._size: int | None = None
        self._last: dict | None = None  # the entry counted last (its ERR line is sent after the count)

    def line(self, text: str) -> None:
        self._last = None
        words = text.split()
        verb = words[0] if words else ""
        op = {"LIST": "list", "UPLOAD": "upload", "DOWNLOAD": "download", "DELETE": "delete"}.get(verb.upper())
        name = words[1] if len(words) > 1 and verb.upper() in ("UPLOAD", "DOWNLOAD", "DELETE") else None
        self._size = int(words[2]) if op == "upload" and len(words) > 2 and words[2].isdigit() else None
        self._record.begin(op, verb, name)

    def error_line(self, data: bytes) -> None:
        """The session sent an ``ERR`` line: it is the error of the request it just counted (or is serving)."""
        entry = self._record.current or self._last
        if entry is not None and not entry["ok"]:
            entry["error"] = data.decode("utf-8", "replace").strip()[:MAX_ERROR]

    def add(self, field: str, amount: int = 1) -> None:
        self._stats.add(field, amount)

    def request_started(self, verb: str) -> None:
        self._stats.request_started(verb)

    def count(self, verb: str, ok: bool) -> None:
        self._stats.count(verb, ok)
        record = self._record
        if record.current is None:  # a line refused before it was a request (bad or over-long)
            record.begin(None, verb if verb != "INVALID" else "", None)
        entry = record.current
        size = None
        if ok and entry["op"] == "upload":
            size = self._size
        elif ok and entry["op"] == "download" and entry["name"]:
            try:
                size = os.stat(self._store.path_for(entry["name"])).st_size
            except Exception:  # only a figure for the log
                size = None
        record.finish(ok, size=size, error=None if ok else entry["error"] or f"{verb} failed", ended_by="line")
        self._last = entry

    def get(self, field: str) -> int:
        return self._stats.get(field)

    def snapshot(self) -> dict:
        return self._stats.snapshot()
