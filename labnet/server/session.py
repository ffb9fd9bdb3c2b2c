"""One client connection, served start to finish: the part every server model shares.

:func:`serve_connection` is what a pool worker runs, whether the worker is a
thread (``labnet.server.thread_pool``) or a process (``labnet.server.process_pool``): the
concurrency model is the only thing that differs between servers.

Resource and error rules
------------------------
* Memory is bounded per connection: bodies move in chunks of ``labnet.transport.transfer.CHUNK`` bytes
  (a few hundred KiB), whatever the file size.
* A request the peer got wrong is answered ``ERR <CODE> ...`` and counted as a
  failure of its verb; the connection stays open when the stream is still in
  sync (bad line, bad name, missing file), and is closed when it is not (bad
  body, over-long line, timeout).
* An upload is published only after its body and digest check out; every
  other ending -- error, disconnect, shutdown -- removes its temporary file.
* The socket is always closed on return; nothing here raises.

Hashing and sending
-------------------
* Uploads (:func:`labnet.transport.transfer.receive_body`): a raw body moves socket ->
  file by ``splice`` (:meth:`labnet.transport.channel.Channel.splice_body`, zero-copy)
  and a helper thread hashes it back from the file; a base64 body is decoded
  and hashed by this thread and written by a helper.  Helpers only while
  cores are idle (bounded queues of a few chunks, :mod:`labnet.transport.pipeline`).
  The digest is checked against the trailer before anything is published.
* Downloads: a file whose digest the store knows (recorded at upload commit,
  see :mod:`labnet.transport.digests`) is not hashed again, and a raw one goes out by
  ``sendfile``; otherwise it is hashed in a helper thread while being sent,
  and the digest is remembered for next time.

Must not import threading or multiprocessing: callers bring the concurrency
(the hashing helper lives in :mod:`labnet.transport.pipeline`).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time

try:  # SIOCOUTQ (== TIOCOUTQ on Linux): see _unacknowledged
    import fcntl
    import termios

    _SIOCOUTQ = termios.TIOCOUTQ if hasattr(termios, "TIOCOUTQ") else None
except ImportError:  # pragma: no cover - not on Windows
    _SIOCOUTQ = None

from labnet import __version__
from labnet.config import ServerConfig
from labnet.errors import Code, LabnetError, LocalError, PeerError
from labnet.protocol import codec
from labnet.protocol.codec import wire_length
from labnet.protocol.dialects import course_reply, get_profile, sentinel
from labnet.protocol.messages import (
    BYE,
    GREETING_LINE,
    DeletedReply,
    DownloadHeader,
    SendReply,
    StoredReply,
    err,
    list_reply,
    parse_request,
    stats_reply,
)
from labnet.protocol.receiver import CLOSED, MAX_LINE, BodySender
from labnet.server.connlog import ConnectionRecord, RecordingStats, take_accepted
from labnet.server.dialect_session import serve_dialect_connection
from labnet.server.stats import Stats
from labnet.server.store import FileStore
from labnet.transport.channel import Channel
from labnet.transport.pipeline import ThreadedSHA256
from labnet.transport.transfer import CHUNK, SMALL_CHUNK, receive_body, send_body

log = logging.getLogger("labnet.server")


class Flags:
    """Shutdown flags as seen by a connection: two callables, so any Event type fits."""

    def __init__(self, stopping, aborting):
        self.stopping = stopping
        self.aborting = aborting


def server_info(config: ServerConfig) -> dict:
    return {"model": config.model, "workers": config.workers, "pid": os.getpid(), "version": __version__,
            "base64": codec.BACKEND}  # the backend of the worker that answers, not only the one asked for


_refusal_form = {"dialect": "labnet", "profile": None}  # this process's server: set by configure_refusals


def configure_refusals(config: ServerConfig) -> None:
    """Say which dialect :func:`refuse` answers in (a server and each of its worker processes call it)."""
    get_profile(config.dialect, config.profile)  # a bad profile fails here, at start, not per connection
    _refusal_form.update(dialect=config.dialect, profile=config.profile)


def refusal(code: Code, message: str) -> bytes:
    """A BUSY / SHUTDOWN refusal in the dialect of this process's server: labnet's ``ERR`` line, the
    ``course`` error reply (the profile's keys), or the ``sentinel`` plain text."""
    dialect = _refusal_form["dialect"]
    if dialect == "labnet":
        return err(code, message)
    profile = get_profile(dialect, _refusal_form["profile"])
    if dialect == "course":
        return course_reply.error_reply(profile, f"{code.value}: {message}")
    return sentinel.refusal(f"Error: {message}")


def refuse(sock: socket.socket, code: Code, message: str) -> None:
    """Tell a connection we will not serve it (BUSY, SHUTDOWN) and close it; never blocks long."""
    try:
        sock.settimeout(1.0)
        sock.sendall(refusal(code, message))
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()


def serve_connection(sock: socket.socket, store: FileStore, stats: Stats, config: ServerConfig, flags: Flags,
                     accepted: float | None = None) -> None:  # fmt: skip
    """Serve every request on ``sock`` until QUIT, EOF, an unrecoverable error or shutdown.

    ``accepted``: when the accept loop accepted it (``time.time()``), for the connection log; a
    thread worker finds it noted under the socket's descriptor (``connlog.note_accepted``).
    """
    if accepted is None:
        accepted = take_accepted(sock.fileno())
    if config.dialect != "labnet":  # a student dialect: labnet.server.dialect_session
        serve_dialect_connection(sock, store, stats, config, flags, accepted)
        return
    record = None
    if config.connection_log:
        record = ConnectionRecord("labnet", _peer_text(sock), accepted, config.connection_log)
        stats = RecordingStats(stats, record, store)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    chan = Channel(sock, MAX_LINE, idle=config.idle_timeout, should_abort=flags.aborting)
    chan.note_error = stats.error_line if record is not None else None  # see _send_quietly
    stats.add("active", 1)
    linger = False
    try:
        chan.send(GREETING_LINE)
        while not flags.stopping():
            deadline = time.monotonic() + config.idle_timeout
            try:
                # Our last send() returning only means the reply is in kernel buffers: a slow client
                # may read a download for seconds more, and only then send its next request.  Idle is
                # the client's inactivity, so its reading (as TCP shows it) restarts the deadline.
                event = chan.next_event(deadline=deadline, stop=flags.stopping, watch_output=True)
            except LocalError as exc:  # shutting down while the client was idle
                _send_quietly(chan, err(exc.code, exc.message))
                return
            except PeerError as exc:
                if exc.code == Code.TIMEOUT:
                    stats.add("timeouts")
                    if _unacknowledged(sock) == 0:  # a client that stopped reading would never see it; the send could block
                        _send_quietly(chan, err(Code.TIMEOUT, f"closing idle connection after {config.idle_timeout:g} s"))
                    return
                stats.count("INVALID", ok=False)
                _send_quietly(chan, err(exc.code, exc.message))
                if chan.rx.broken:
                    linger = True
                    return
                continue
            if event is CLOSED:
                return
            if record is not None:
                stats.line(event.text)
            outcome = _serve_request(event.text, chan, store, stats, config, flags)
            if outcome != KEEP:
                linger = outcome == LINGER
                return
    except (OSError, LabnetError) as exc:
        log.info("connection ended: %s", exc)
    except Exception:  # a bug: log it, keep the worker alive
        log.exception("unexpected error while serving a connection")
    finally:
        stats.add("active", -1)
        if linger:  # aborting at the end of the grace period: the shutdown must not wait for a slow peer
            chan.linger_close(max_seconds=0.25 if flags.aborting() else 2.0)
        else:
            sock.close()
        if record is not None:
            record.close(chan.bytes_read, chan.bytes_sent)


def _peer_text(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` that the peer has not acknowledged (Linux ``SIOCOUTQ``; 0 elsewhere)."""
    if _SIOCOUTQ is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


def _send_quietly(chan: Channel, data: bytes) -> None:
    """Best-effort error reply: bypasses the abort check, bounded by a short timeout."""
    if getattr(chan, "note_error", None) is not None:  # the connection log wants the error's text
        chan.note_error(data)
    try:
        chan.sock.settimeout(2.0)
        chan.sock.sendall(data)
    except OSError:
        pass


KEEP, CLOSE, LINGER = "keep", "close", "linger"


class _BodyInterrupted(Exception):
    """A failure after a body started: the byte stream is out of sync, so the connection ends.

    ``sending``: we were sending the body (a download), so an ``ERR`` line now would
    only reach the client as bytes of that body; the connection is just closed.
    """

    def __init__(self, cause: LabnetError, sending: bool = False):
        super().__init__(str(cause))
        self.cause = cause
        self.sending = sending


def _serve_request(text: str, chan, store, stats, config, flags) -> str:
    """Serve one request line; return KEEP, CLOSE or LINGER (close after draining input)."""
    verb = text.split(" ", 1)[0].upper()
    stats.request_started(verb)  # if this process dies now, its parent counts the request failed
    try:
        request = parse_request(text)
        verb = request.verb
        if verb == "LIST":
            chan.send(list_reply(*store.listing()))
        elif verb == "STATS":
            snap = stats.snapshot()
            snap.update(server_info(config))
            chan.send(stats_reply(snap))
        elif verb == "DELETE":
            store.delete(request.name)
            chan.send(DeletedReply(request.name).to_line())
        elif verb == "QUIT":
            chan.send(BYE)
            stats.count(verb, ok=True)
            # Not CLOSE: whatever the client sent after QUIT would be unread at close, the kernel would
            # answer with a reset, and that can destroy replies not yet delivered, OK BYE included.
            return LINGER
        elif verb == "DOWNLOAD":
            _download(request, chan, store, stats)
        elif verb == "UPLOAD":
            _upload(request, chan, store, stats)
        stats.count(verb, ok=True)
        return KEEP
    except (PeerError, LocalError, _BodyInterrupted) as exc:
        cause = exc.cause if isinstance(exc, _BodyInterrupted) else exc
        stats.count(verb, ok=False)
        if cause.code == Code.TIMEOUT:
            stats.add("timeouts")
        if isinstance(cause, LocalError) and cause.code != Code.SHUTDOWN:
            log.warning("%s failed: %s", verb, cause)
        if isinstance(exc, _BodyInterrupted) and exc.sending:
            return CLOSE  # the client sees the body end early: nothing is committed on its side
        _send_quietly(chan, err(cause.code, cause.message))
        if cause.code == Code.TIMEOUT:
            return CLOSE  # the client went quiet: there is nothing to drain, free the worker now
        if isinstance(exc, _BodyInterrupted) or chan.rx.broken:
            return LINGER
        return KEEP  # nothing of a body was exchanged: the stream is still in sync
    except OSError:
        stats.count(verb, ok=False)
        return CLOSE


def _cores_to_spare(stats: Stats) -> bool:
    """Hash in a helper thread only while fewer connections are active than there are CPUs:
    on a busy machine the helper costs more than it gives (see labnet.transport.pipeline)."""
    return stats.get("active") < (os.cpu_count() or 1)


def _download(request, chan: Channel, store: FileStore, stats: Stats) -> None:
    f, size = store.open_read(request.name)
    with f:
        known, st = store.known_digest(f)
        spare = _cores_to_spare(stats)
        hasher = None if known is not None else ThreadedSHA256(enabled=spare)
        sender = BodySender(size, request.encoding, sha256=known, hasher=hasher)
        chan.send(DownloadHeader.for_file(size, request.encoding).to_line())
        try:  # a busy server sends in smaller steps: peak RSS stays flat with 50 threads (transfer.SMALL_CHUNK)
            send_body(chan, f, size, sender, progress=lambda n: stats.add("bytes_out", n),
                      chunk=CHUNK if spare else SMALL_CHUNK)  # fmt: skip
        except LabnetError as exc:
            raise _BodyInterrupted(exc, sending=True) from exc
        finally:
            if hasher is not None:
                hasher.close()
        if hasher is not None:  # a file placed by hand, or an xattr-less file system: remember it
            store.remember_digest(f, sender.hexdigest(), since=st)


def _closed_mid_upload() -> PeerError:
    return PeerError("connection closed during the upload body")


def _upload(request, chan: Channel, store: FileStore, stats: Stats) -> None:
    with store.begin_upload(request.name, request.size) as upload:
        chan.send(SendReply(wire_length(request.size, request.encoding)).to_line())
        try:
            event = receive_body(chan, upload, request.size, request.encoding, helpers=_cores_to_spare(stats),
                                 progress=lambda n: stats.add("bytes_in", n), on_closed=_closed_mid_upload)  # fmt: skip
        except LabnetError as exc:
            raise _BodyInterrupted(exc) from exc
        upload.commit(event.sha256)  # only now, verified, does the file appear
        chan.send(StoredReply(request.name, request.size, event.sha256).to_line())
