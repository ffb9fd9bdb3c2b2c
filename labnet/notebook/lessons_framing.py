"""Notebook 01-framing's demonstrations: where a request or a reply ends, measured on real sockets.

What it holds:

* :func:`stream_boundaries` -- separate ``send()`` calls over real TCP arrive glued together.
* :func:`delimiter_count` / :func:`marker_safety` -- how often a delimiter occurs in real bytes, and in
  the same bytes once encoded (base64 for the seed's ``__END__``; JSON for the course's
  ``\\r\\n\\r\\n``): a delimiter is safe only where the encoding guarantees it cannot occur.
  :func:`json_escapes` shows ``json.dumps`` turning CR/LF into ``\\r``/``\\n`` escapes.
* :func:`split_marker_live` -- a marker cut across two ``recv()`` calls, over real TCP: the seed's loop
  (which checks each read on its own) never sees it; labnet's ``sentinel`` reader
  (:class:`~labnet.protocol.dialects.sentinel.DownloadParser`) finds it anyway.
* :func:`length_prefixed_receive` -- labnet's own protocol: the body's length comes first, so any
  bytes (raw too) are received exactly, however ``recv()`` splits them.

"The seed" is one student's submission (its own ``sentinel`` protocol, ``__END__`` after base64);
the course's reference code has no ``__END__`` (its framing lessons are in
:mod:`labnet.notebook.lessons_course`).

Must not import matplotlib, nor the pool demonstrations of :mod:`labnet.notebook.lessons_pools`.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass

from labnet.measure.files import data_dir, project_dir
from labnet.protocol.dialects import get_profile, sentinel
from labnet.protocol.dialects.events import CLOSED, NEED_DATA, Data
from labnet.protocol.receiver import NEED_DATA as BODY_NEED_DATA
from labnet.protocol.receiver import BodyEnd, BodySender, Receiver
from labnet.protocol.receiver import Data as BodyData

SEED_MARKER = b"__END__"
COURSE_END = b"\r\n\r\n"
SEED_READ = 16384  # the seed's recv() size


@dataclass
class Received:
    """What a receiver made of a stream of ``recv()`` results."""

    data: bytes
    finished: bool  # did it find the end of the body?
    reads: int  # recv() calls that returned data
    note: str = ""


def stream_boundaries(pieces=(b"UPLOAD a.txt 5\r\n", b"hello", b"SHA256 ..."), settle: float = 0.2) -> dict:
    """Send ``pieces`` with separate ``send()`` calls over real loopback TCP and see what ``recv()`` returns.

    The receiver waits ``settle`` seconds before reading, as a busy server
    might: the pieces arrive glued together.  Message boundaries do not
    survive TCP; only a protocol can put them back.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()[:2], timeout=5) as tx:
            rx, _ = listener.accept()
            with rx:
                rx.settimeout(5)
                for p in pieces:
                    tx.sendall(p)
                time.sleep(settle)
                tx.shutdown(socket.SHUT_WR)
                reads = []
                while chunk := rx.recv(65536):
                    reads.append(chunk)
    return {"sent": list(pieces), "received": reads}


# ---------------------------------------------------------------------------
# When is a delimiter safe?  When the encoding guarantees it cannot occur.
# ---------------------------------------------------------------------------


def delimiter_count(data: bytes, delimiter: bytes) -> int:
    """Occurrences of ``delimiter`` in ``data`` (overlapping ones too)."""
    count, start = 0, 0
    while (at := data.find(delimiter, start)) != -1:
        count += 1
        start = at + 1
    return count


def json_escapes(text: str = "first line\r\n\r\nsecond line") -> dict:
    """A course reply carrying ``text`` (CR/LF in it): what ``json.dumps`` puts on the wire.

    Returns ``{text, wire, crlf_in_text, crlf_in_wire, round_trip}``.
    """
    wire = json.dumps({"status": "ERROR", "data": text}).encode("ascii")
    return {"text": text, "wire": wire + COURSE_END, "crlf_in_text": delimiter_count(text.encode(), COURSE_END),
            "crlf_in_wire": delimiter_count(wire, COURSE_END), "round_trip": json.loads(wire)["data"] == text}  # fmt: skip


def delimiter_samples(project=None) -> dict[str, bytes]:
    """Real bytes to look for delimiters in: this lesson's notebook (it mentions ``__END__``), a text
    file written on Windows (CRLF line ends, blank lines: ``\\r\\n\\r\\n``), and the smallest test file of
    ``client_files/`` if there is one (pseudo-random bytes)."""
    root = project_dir(project)
    samples = {"notebook 01-framing.ipynb": (root / "notebooks" / "01-framing.ipynb").read_bytes(),
               "a Windows text file": b"Nomor, Operasi\r\n1, download\r\n\r\n2, upload\r\n\r\n" * 40}  # fmt: skip
    tests = sorted(data_dir("client_files", root).glob("*.bin"), key=lambda p: p.stat().st_size)
    if tests:
        samples[f"test file {tests[0].name}"] = tests[0].read_bytes()
    return samples


def marker_safety(samples: dict[str, bytes]) -> list[dict]:
    """For each sample: the seed's ``__END__`` and the course's ``\\r\\n\\r\\n`` counted in its raw bytes, and in
    what goes on the wire (its base64; a JSON string carrying it as text, where it is text)."""
    rows = []
    for name, data in samples.items():
        b64 = base64.b64encode(data)
        try:
            as_json = json.dumps(data.decode("utf-8")).encode("ascii")
        except UnicodeDecodeError:
            as_json = None
        rows.append({"sample": name, "bytes": len(data),
                     "end_marker_raw": delimiter_count(data, SEED_MARKER),
                     "end_marker_base64": delimiter_count(b64, SEED_MARKER),
                     "crlf_raw": delimiter_count(data, COURSE_END),
                     "crlf_base64": delimiter_count(b64, COURSE_END),
                     "crlf_json_text": None if as_json is None else delimiter_count(as_json, COURSE_END)})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------
# A marker split across two reads, live
# ---------------------------------------------------------------------------


def _seed_loop(rx: socket.socket, marker: bytes, first_len: int, first_read: threading.Event,
               give_up: float) -> Received:  # fmt: skip
    """The seed's download loop: ``recv()``, and if *this* read contains the marker, stop.

    The seed's loop never stops on an empty read (a closed connection); it would spin forever.  We
    count those empty reads for ``give_up`` seconds and stop instead.
    """
    data, reads, empty, spin_began = bytearray(), 0, 0, None
    while True:
        part = rx.recv(SEED_READ)
        if part:
            reads += 1
            if marker in part:
                data += part.replace(marker, b"")
                return Received(bytes(data), True, reads, "marker found")
            data += part
            if len(data) >= first_len:
                first_read.set()
            continue
        empty += 1
        spin_began = spin_began or time.perf_counter()
        if time.perf_counter() - spin_began > give_up:
            return Received(bytes(data), False, reads,
                            f"peer closed; no read held the whole marker; recv() then returned b'' {empty:,} times "
                            f"in {give_up:g} s -- the seed's loop spins like that forever")  # fmt: skip


def _labnet_loop(rx: socket.socket, first_len: int, first_read: threading.Event) -> Received:
    """labnet's ``sentinel`` download reader: keeps a possible beginning of the marker until the next read."""
    parser = sentinel.DownloadParser(get_profile("sentinel"))
    data, reads, received = bytearray(), 0, 0
    while True:
        part = rx.recv(SEED_READ)
        reads += bool(part)
        received += len(part)
        if received >= first_len:
            first_read.set()
        parser.receive_data(part)
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, Data):
                data += event.data
            elif isinstance(event, sentinel.DownloadEnd):
                return Received(bytes(data), True, reads, f"marker found; {event.size:,} file bytes decoded")
            elif event is CLOSED:
                return Received(bytes(data), False, reads, "closed")
        if not part:
            return Received(bytes(data), False, reads, "closed before the marker")


def split_marker_live(reader: str = "seed", content: bytes = b"hello, this is the whole file\n" * 100,
                      cut: int = 3, give_up: float = 0.5) -> dict:  # fmt: skip
    """Send ``content`` as the seed does (base64, then ``__END__``) over real TCP, cut ``cut`` bytes into
    the marker: the sender sends ``...__E``, waits until the receiver has read all of it, then sends
    ``ND__`` and closes.  ``reader``: ``"seed"`` or ``"labnet"``.

    Returns ``{reads: [bytes, ...] as sent, received: Received, content}``; ``received.data`` is the
    base64 text for the seed (it decodes later) and the decoded file for labnet's reader.
    """
    stream = base64.b64encode(content) + SEED_MARKER
    at = len(stream) - len(SEED_MARKER) + cut
    first, second = stream[:at], stream[at:]
    first_read = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()[:2]

        def send():
            with socket.create_connection(address, timeout=10) as tx:
                tx.sendall(first)
                first_read.wait(10)
                tx.sendall(second)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        rx, _ = listener.accept()
        with rx:
            rx.settimeout(10)
            if reader == "seed":
                got = _seed_loop(rx, SEED_MARKER, len(first), first_read, give_up)
            else:
                got = _labnet_loop(rx, len(first), first_read)
        sender.join(10)
    return {"sent": [first[-12:], second], "received": got, "content": content}


# ---------------------------------------------------------------------------
# labnet's framing: the length first
# ---------------------------------------------------------------------------


def length_prefixed_receive(content: bytes, encoding: str = "b64", read_size: int = 1) -> Received:
    """labnet's way: the receiver knows the body length before it starts, and checks a digest.

    The sender's bytes (body plus ``SHA256`` trailer, exactly what the
    protocol sends) are fed to :class:`labnet.protocol.receiver.Receiver` ``read_size``
    bytes at a time -- one byte per "recv" by default, the worst case.
    """
    sender = BodySender(len(content), encoding)
    wire = sender.encode(content) + sender.finish()
    rx = Receiver()
    rx.start_body(len(content), encoding)
    out, reads = [], 0
    for i in range(0, len(wire), read_size):
        rx.receive_data(wire[i:i + read_size])
        reads += 1
        while (event := rx.next_event()) is not BODY_NEED_DATA:
            if isinstance(event, BodyData):
                out.append(event.data)
            elif isinstance(event, BodyEnd):
                return Received(b"".join(out), True, reads, f"SHA-256 verified: {event.sha256[:16]}...")
    return Received(b"".join(out), False, reads, "stream ended before the body did")
