"""Notebook 01's demonstrations (protocol by hand): message framing and base64, the seed's bugs and labnet's fixes.

What it holds:

* :func:`seed_receive` -- the seed's way of finding the end of a body: read
  until a ``__END__`` marker shows up.  :func:`split_marker_demo` and
  :func:`marker_in_file_demo` show the two ways that goes wrong;
  :func:`length_prefixed_receive` shows labnet's receiver getting the same
  bytes right whatever ``recv()`` returns; :func:`stream_boundaries` shows
  real TCP gluing separate sends together.
* :func:`seed_encode` / :func:`seed_decode` -- the seed's base64: every
  1 MiB chunk encoded on its own, the concatenation decoded as one string.
  :func:`truncation_demo` reproduces the silent truncation and shows that a
  SHA-256 digest catches it, and that labnet's streamed codec does not truncate.
* :func:`codec_cost` and :func:`transfer_cost` measure what base64 costs in
  size and CPU against ``raw``; :func:`plot_base64_cost` draws it.

Must not import matplotlib at import time (only inside the plotting
function), nor the pool demonstrations of :mod:`labnet.notebook.lessons_pools`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import time
from dataclasses import dataclass, field

from labnet.client import Client
from labnet.config import MB
from labnet.errors import PeerError
from labnet.procutil import cpu_seconds
from labnet.protocol.codec import Decoder, Encoder
from labnet.protocol.receiver import NEED_DATA, BodyEnd, BodySender, Data, Receiver

SEED_MARKER = b"__END__"
SEED_CHUNK = 1 << 20  # the seed encoded every 1 MiB on its own


# ---------------------------------------------------------------------------
# The seed's __END__ sentinel
# ---------------------------------------------------------------------------


@dataclass
class Received:
    """What a receiver made of a stream of ``recv()`` results."""

    data: bytes
    finished: bool  # did it believe the body was complete?
    reads: int  # recv() calls used
    note: str = ""


def seed_receive(reads, marker: bytes = SEED_MARKER) -> Received:
    """The seed's receive loop: read until a read contains the marker; what came before it is the file.

    ``reads`` is what successive ``recv()`` calls returned (a list of bytes, or
    any iterable; an empty bytes means the peer closed).  Like the seed, each
    read is checked on its own (``if b"__END__" in data``), and everything
    before the marker is taken as the file.
    """
    parts, n = [], 0
    for chunk in reads:
        n += 1
        if not chunk:
            return Received(b"".join(parts), False, n, "peer closed; marker never seen")
        at = chunk.find(marker)
        if at != -1:
            parts.append(chunk[:at])
            rest = len(chunk) - at - len(marker)
            return Received(b"".join(parts), True, n, f"{rest} byte(s) after the marker were dropped" if rest else "")
        parts.append(chunk)
    return Received(b"".join(parts), False, n, "no more data and no marker: the seed would wait here forever")


def seed_receive_searching(reads, marker: bytes = SEED_MARKER) -> Received:
    """A 'fixed' sentinel loop: search the whole buffer, stop at the first marker.

    This survives a marker split across reads, but not a file that contains
    the marker (and rescanning the buffer gets slow for big files).
    """
    buf, n = b"", 0
    for chunk in reads:
        n += 1
        if not chunk:
            return Received(buf, False, n, "peer closed; marker never seen")
        buf += chunk
        at = buf.find(marker)
        if at != -1:
            rest = len(buf) - at - len(marker)
            note = f"{rest} byte(s) after the first marker were left unread" if rest else ""
            return Received(buf[:at], True, n, note)
    return Received(buf, False, n, "no more data and no marker")


def split_marker_reads(payload: bytes, marker: bytes = SEED_MARKER, cut: int = 3) -> list[bytes]:
    """The reads a receiver may get when the marker is split: ``...__E`` then ``ND__``.

    TCP is a byte stream: one ``send()`` may arrive in several ``recv()``
    calls and several sends in one.  Here the split falls ``cut`` bytes
    into the marker.
    """
    stream = payload + marker
    at = len(payload) + cut
    return [stream[:at], stream[at:]]


def split_marker_demo(payload: bytes = b"hello, this is the whole file") -> dict:
    """The seed's loop against a marker split across two reads: it never sees the end."""
    reads = split_marker_reads(payload)
    got = seed_receive(reads)
    return {"reads": reads, "seed": got, "payload": payload, "searching": seed_receive_searching(reads)}


def marker_in_file_demo(size: int = 10_000, at: int | None = None) -> dict:
    """A file that happens to contain ``__END__``: the receiver stops early, and says OK."""
    at = size // 3 if at is None else at
    content = bytes((i * 7) % 251 for i in range(size))
    content = content[:at] + SEED_MARKER + content[at + len(SEED_MARKER):]
    content = content[:size]
    stream = content + SEED_MARKER
    reads = [stream[i:i + 4096] for i in range(0, len(stream), 4096)]
    return {"content": content, "reads": reads,
            "seed": seed_receive(reads), "searching": seed_receive_searching(reads)}  # fmt: skip


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
        while True:
            event = rx.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, Data):
                out.append(event.data)
            elif isinstance(event, BodyEnd):
                return Received(b"".join(out), True, reads, f"SHA-256 verified: {event.sha256[:16]}...")
    return Received(b"".join(out), False, reads, "stream ended before the body did")


def stream_boundaries(pieces=(b"UPLOAD a.txt 5\r\n", b"hello", b"SHA256 ..."), settle: float = 0.2) -> dict:
    """Send ``pieces`` with separate ``send()`` calls over real loopback TCP and see what ``recv()`` returns.

    The receiver waits ``settle`` seconds before reading, as a busy server
    might: the pieces arrive glued together.  Message boundaries do not
    survive TCP; only a protocol can put them back.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tx:
            rx, _ = listener.accept()
            with rx:
                rx.settimeout(5)
                for p in pieces:
                    tx.sendall(p)
                time.sleep(settle)
                tx.shutdown(socket.SHUT_WR)
                reads = []
                while True:
                    chunk = rx.recv(65536)
                    if not chunk:
                        break
                    reads.append(chunk)
    return {"sent": list(pieces), "received": reads}


# ---------------------------------------------------------------------------
# The seed's per-chunk base64: silent truncation
# ---------------------------------------------------------------------------


def seed_encode(data: bytes, chunk: int = SEED_CHUNK) -> bytes:
    """The seed's sender: base64 of every ``chunk`` bytes on its own, concatenated.

    1 MiB is not a multiple of 3, so every chunk ends in ``=`` padding.
    """
    return b"".join(base64.b64encode(data[i:i + chunk]) for i in range(0, len(data), chunk))


def seed_decode(wire: bytes) -> bytes:
    """The seed's receiver: decode the whole concatenation as one base64 string.

    ``base64.b64decode`` (non-strict, the default) stops at the first
    padding and ignores the rest without a word.
    """
    return base64.b64decode(wire)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_content(size: int, seed: int = 1) -> bytes:
    """Pseudo-random bytes (not compressible, every MiB different)."""
    import random

    return random.Random(seed).randbytes(size)


@dataclass
class TruncationResult:
    size: int
    wire_bytes: int
    received: int
    padding_positions: list = field(default_factory=list)
    sha_sent: str = ""
    sha_received: str = ""
    seed_says: str = "OK"  # the seed's client printed success whatever arrived
    labnet_decoder: str = ""  # what labnet's streamed decoder made of the seed's wire bytes
    labnet_roundtrip_ok: bool = False

    @property
    def truncated(self) -> bool:
        return self.received != self.size

    @property
    def digest_caught_it(self) -> bool:
        return self.sha_sent != self.sha_received


def truncation_demo(size: int = 5 * MB, chunk: int = SEED_CHUNK) -> TruncationResult:
    """Reproduce the seed's truncation on ``size`` bytes and show who notices."""
    data = random_content(size)
    wire = seed_encode(data, chunk)
    got = seed_decode(wire)
    pads, start = [], 0
    while True:
        at = wire.find(b"=", start)
        if at == -1:
            break
        pads.append(at)
        start = at + 1
    res = TruncationResult(size, len(wire), len(got), pads[:10], sha256(data), sha256(got))
    # labnet's decoder, fed the seed's wire bytes, refuses them instead of truncating
    dec = Decoder("b64")
    try:
        for i in range(0, len(wire), 65536):
            dec.decode(wire[i:i + 65536], final=i + 65536 >= len(wire))
        res.labnet_decoder = "accepted"
    except PeerError as exc:
        res.labnet_decoder = f"refused: {exc}"
    # labnet's encoder: the same chunking, one continuous base64 string, decoded in full
    enc = Encoder("b64")
    wire2 = b"".join(enc.encode(data[i:i + chunk]) for i in range(0, len(data), chunk)) + enc.finish()
    res.labnet_roundtrip_ok = base64.b64decode(wire2) == data
    return res


# ---------------------------------------------------------------------------
# What base64 costs
# ---------------------------------------------------------------------------


def _backends():
    """Each backend's (encode, decode), decoding as strictly as labnet does (which is also faster)."""
    out = {"binascii": (lambda d: binascii.b2a_base64(d, newline=False),
                        lambda d: binascii.a2b_base64(d, strict_mode=True))}  # fmt: skip
    try:
        import pybase64

        out["pybase64"] = (pybase64.b64encode, lambda d: pybase64.b64decode(d, validate=True))
    except ImportError:
        pass
    return out


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


STREAM_CHUNK = 3 * (1 << 18)  # 768 KiB: file bytes per step, a multiple of 3 as labnet's encoder uses


def _chunked(fn, data: bytes, chunk: int):
    """A callable that applies ``fn`` to ``data`` piece by piece, as a stream does.

    One call on a whole file would mostly measure the operating system
    handing out fresh memory for the result, not the codec or the hash."""
    view = memoryview(data)
    pieces = [view[i : i + chunk] for i in range(0, len(data), chunk)]

    def run():
        for piece in pieces:
            fn(piece)

    return run


def codec_cost(size: int = 20 * MB, repeats: int = 3) -> list[dict]:
    """Encode and decode ``size`` bytes with each base64 backend, in stream-sized pieces; also
    copying them (the raw baseline).

    Returns rows ``{backend, size, wire_bytes, encode_s, decode_s, encode_MBps, decode_MBps}``.
    """
    data = random_content(size)
    copy_s = _best_of(_chunked(bytes, data, STREAM_CHUNK), repeats)
    rows = [{"backend": "raw (copy)", "size": size, "wire_bytes": size, "encode_s": copy_s, "decode_s": copy_s}]
    for name, (enc, dec) in _backends().items():
        wire = enc(data)
        assert dec(wire) == data
        rows.append({"backend": name, "size": size, "wire_bytes": len(wire),
                     "encode_s": _best_of(_chunked(enc, data, STREAM_CHUNK), repeats),
                     "decode_s": _best_of(_chunked(dec, wire, STREAM_CHUNK // 3 * 4), repeats)})  # fmt: skip
    for r in rows:
        r["encode_MBps"] = size / MB / r["encode_s"] if r["encode_s"] > 0 else float("inf")
        r["decode_MBps"] = size / MB / r["decode_s"] if r["decode_s"] > 0 else float("inf")
    return rows


def integrity_cost(path, repeats: int = 3) -> dict:
    """SHA-256 of a file's bytes, in memory on one core: the CPU labnet's end-to-end check costs
    each side of a transfer (the receiver always; the sender unless it remembers the digest).

    Returns ``{bytes, sha256, seconds, MBps, decoder, decode_MBps}``: the
    best of ``repeats`` hashing runs, and for comparison the base64 backend
    labnet uses (``decoder``) decoding the same bytes' encoding; both in
    stream-sized pieces.
    """
    from pathlib import Path

    data = Path(path).read_bytes()
    sha = hashlib.sha256()
    seconds = _best_of(_chunked(hashlib.sha256().update, data, STREAM_CHUNK), repeats)
    sha.update(data)
    decoder, (enc, dec) = list(_backends().items())[-1]  # pybase64 when installed: what labnet uses
    decode_s = _best_of(_chunked(dec, enc(data), STREAM_CHUNK // 3 * 4), repeats)
    return {"bytes": len(data), "sha256": sha.hexdigest(), "seconds": seconds,
            "MBps": len(data) / MB / seconds if seconds > 0 else float("inf"), "decoder": decoder,
            "decode_MBps": len(data) / MB / decode_s if decode_s > 0 else float("inf")}  # fmt: skip


def transfer_cost(address, path, encodings=("raw", "b64"), repeats: int = 2, dest_dir=None) -> list[dict]:
    """Upload then download ``path`` through a labnet server in each encoding.

    Rows: ``{encoding, op, bytes, wire_bytes, seconds, MBps, client_cpu_s, sha256}``
    (best of ``repeats``; client CPU is this process's CPU time for the
    transfer, where the client's base64 work shows up).
    """
    import tempfile
    from pathlib import Path

    path = Path(path)
    rows = []
    with tempfile.TemporaryDirectory(prefix="labnet-cost-") as tmp:
        dest = Path(dest_dir or tmp)
        with Client(*address, timeout=60) as c:
            for enc in encodings:
                name = f"cost-{enc}-{path.name}"
                for op in ("upload", "download"):
                    best = None
                    for _ in range(repeats):
                        cpu0 = cpu_seconds()
                        if op == "upload":
                            r = c.upload(path, name=name, encoding=enc)
                        else:
                            r = c.download(name, dest, encoding=enc)
                        cpu = cpu_seconds() - cpu0
                        if best is None or r.seconds < best["seconds"]:
                            best = {"encoding": enc, "op": op, "bytes": r.bytes, "wire_bytes": r.wire_bytes,
                                    "seconds": r.seconds, "MBps": r.bytes / MB / r.seconds, "client_cpu_s": cpu,
                                    "sha256": r.sha256}  # fmt: skip
                    rows.append(best)
                c.delete(name)
    return rows


def plot_base64_cost(codec_rows, transfer_rows=None):
    """Two or three panels: bytes on the wire, codec speed, and transfer speed per encoding."""
    from matplotlib.figure import Figure

    panels = 3 if transfer_rows else 2
    fig = Figure(figsize=(4.2 * panels, 3.6), layout="constrained")
    axes = fig.subplots(1, panels)
    size = codec_rows[0]["size"]
    ax = axes[0]
    labels = ["raw", "base64"]
    values = [size / MB, codec_rows[-1]["wire_bytes"] / MB]
    bars = ax.bar(labels, values, color=["#4c72b0", "#dd8452"])
    ax.bar_label(bars, fmt="%.2f MB")
    ax.set_ylabel("bytes on the wire (MB = 10^6 B)")
    ax.set_title(f"Size of a {size / MB:g} MB file on the wire")
    ax.set_ylim(0, max(values) * 1.2)

    ax = axes[1]
    names = [r["backend"] for r in codec_rows]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [r["encode_MBps"] for r in codec_rows], width=0.4, label="encode")
    ax.bar([i + 0.2 for i in x], [r["decode_MBps"] for r in codec_rows], width=0.4, label="decode")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("MB/s (one core)")
    ax.set_yscale("log")
    ax.set_title("CPU speed: copying vs base64")
    ax.legend()

    if transfer_rows:
        ax = axes[2]
        ops = ["upload", "download"]
        encs = sorted({r["encoding"] for r in transfer_rows}, key=lambda e: e != "raw")
        for j, enc in enumerate(encs):
            vals = [next(r["MBps"] for r in transfer_rows if r["op"] == op and r["encoding"] == enc) for op in ops]
            b = ax.bar([i + (j - 0.5) * 0.4 for i in range(len(ops))], vals, width=0.4, label=enc)
            ax.bar_label(b, fmt="%.0f")
        ax.set_xticks(range(len(ops)), ops)
        ax.set_ylim(0, max(r["MBps"] for r in transfer_rows) * 1.18)
        ax.set_ylabel("file MB/s through labnet (loopback)")
        ax.set_title("One transfer, raw vs b64")
        ax.legend()
    return fig
