"""Notebook 02-encoding's demonstrations: base64 and what it costs, block-by-block truncation, SHA-256.

What it holds:

* :func:`base64_alphabet` -- every byte base64 can put on the wire, found by encoding all byte values.
* :func:`encoded_size` -- a real file streamed through labnet's encoder: wire bytes counted, time
  measured (``repeats`` runs: median, min, max).
* :func:`seed_encode` / :func:`seed_decode` -- the seed's base64 (one student's submission): every
  1 MiB block encoded on its own, the concatenation decoded as one string.  :func:`truncation_demo`
  reproduces the silent truncation, shows that a SHA-256 digest catches it, and that labnet's
  streamed codec does not truncate.
* :func:`codec_cost`, :func:`transfer_cost` and :func:`integrity_cost` measure base64 against ``raw``
  and what SHA-256 costs, each timing repeated (:func:`spread`); :func:`plot_base64_cost` draws them.

Must not import matplotlib at import time (only inside the plotting function), nor the pool
demonstrations of :mod:`labnet.notebook.lessons_pools`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from labnet.client import Client
from labnet.config import MB, quick_mode
from labnet.errors import PeerError
from labnet.measure.files import data_dir, make_test_file
from labnet.notebook.envcheck import lab_dimensions
from labnet.procutil import cpu_seconds
from labnet.protocol.codec import Decoder, Encoder

SEED_CHUNK = 1 << 20  # the seed encoded every 1 MiB on its own
STREAM_CHUNK = 3 * (1 << 18)  # 768 KiB: file bytes per step, a multiple of 3 as labnet's encoder uses


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_content(size: int, seed: int = 1) -> bytes:
    """Pseudo-random bytes (not compressible, every MiB different)."""
    import random

    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------------------
# What the notebook works on: quick mode (the tests) or full size
# ---------------------------------------------------------------------------


def lesson_files() -> tuple[list[Path], int]:
    """The test files of ``client_files/`` the lesson measures (made if missing), and how many times each
    timing is repeated: the lab's sizes and 3 repeats in quick mode; 10 MB and 50 MB and 5 repeats otherwise."""
    sizes = lab_dimensions()["volumes"] if quick_mode() else (10 * MB, 50 * MB)
    return [make_test_file(data_dir("client_files"), size) for size in sizes], 3 if quick_mode() else 5


def truncation_size() -> int:
    """Bytes for the truncation demonstration: several 1 MiB blocks (3 MB in quick mode, 50 MB otherwise)."""
    return 3 * MB if quick_mode() else 50 * MB


# ---------------------------------------------------------------------------
# Timings with their spread
# ---------------------------------------------------------------------------


def timings(fn, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` (after one warm-up call that is not counted)."""
    fn()
    out = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def spread(values) -> dict:
    """``{median, min, max, n}`` of ``values``: the median is what we compare, min-max how much it moved."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


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


# ---------------------------------------------------------------------------
# What base64 is: its alphabet, and its size measured on real files
# ---------------------------------------------------------------------------


def base64_alphabet() -> bytes:
    """Every byte that standard base64 output can contain, measured: all 256 byte values encoded at all
    three positions of a 3-byte group, with and without padding."""
    seen = set()
    for shift in range(3):
        seen.update(base64.b64encode(bytes(shift) + bytes(range(256))))
    for tail in (b"a", b"ab"):
        seen.update(base64.b64encode(tail))
    return bytes(sorted(seen))


def encoded_size(path, repeats: int = 3) -> dict:
    """Stream ``path`` through labnet's encoder (as a ``b64`` upload does) and count the wire bytes.

    Returns ``{file, file_bytes, wire_bytes, ratio, seconds: spread(...), MBps}`` (MBps of file bytes
    from the median time).  The file is read from the page cache after the first run (warm).
    """
    path = Path(path)

    def run():
        enc = Encoder("b64")
        total = 0
        with open(path, "rb") as f:
            while block := f.read(STREAM_CHUNK):
                total += len(enc.encode(block))
        return total + len(enc.finish())

    wire = run()
    secs = spread(timings(run, repeats))
    size = path.stat().st_size
    return {"file": path.name, "file_bytes": size, "wire_bytes": wire, "ratio": wire / size if size else None,
            "seconds": secs, "MBps": size / MB / secs["median"] if secs["median"] > 0 else float("inf")}  # fmt: skip


# ---------------------------------------------------------------------------
# The seed's per-block base64: silent truncation
# ---------------------------------------------------------------------------


def seed_encode(data: bytes, chunk: int = SEED_CHUNK) -> bytes:
    """The seed's sender: base64 of every ``chunk`` bytes on its own, concatenated.

    1 MiB is not a multiple of 3, so every block ends in ``=`` padding.
    """
    return b"".join(base64.b64encode(data[i:i + chunk]) for i in range(0, len(data), chunk))


def seed_decode(wire: bytes) -> bytes:
    """The seed's receiver: decode the whole concatenation as one base64 string.

    ``base64.b64decode`` (non-strict, the default) stops at the first
    padding and ignores the rest without a word.
    """
    return base64.b64decode(wire)


@dataclass
class TruncationResult:
    size: int
    wire_bytes: int
    received: int
    padding_positions: list = field(default_factory=list)
    sha_sent: str = ""
    sha_received: str = ""
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
    while (at := wire.find(b"=", start)) != -1:
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
    # labnet's encoder: the same blocks, one continuous base64 string, decoded in full
    enc = Encoder("b64")
    wire2 = b"".join(enc.encode(data[i:i + chunk]) for i in range(0, len(data), chunk)) + enc.finish()
    res.labnet_roundtrip_ok = base64.b64decode(wire2) == data
    return res


# ---------------------------------------------------------------------------
# What base64 and SHA-256 cost
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


def _mbps(size: int, seconds: float) -> float:
    return size / MB / seconds if seconds > 0 else float("inf")


def codec_cost(size: int = 20 * MB, repeats: int = 3) -> list[dict]:
    """Encode and decode ``size`` bytes with each base64 backend, in stream-sized pieces; also copy them
    (the raw baseline).  Each timing ``repeats`` times.

    Rows ``{backend, size, wire_bytes, encode_s, decode_s (medians), encode_spread, decode_spread,
    encode_MBps, decode_MBps}``; ``wire_bytes`` is the length of the encoder's actual output.
    """
    data = random_content(size)
    copy = spread(timings(_chunked(bytes, data, STREAM_CHUNK), repeats))
    rows = [{"backend": "raw (copy)", "size": size, "wire_bytes": size, "encode_spread": copy, "decode_spread": copy}]
    for name, (enc, dec) in _backends().items():
        wire = enc(data)
        assert dec(wire) == data
        rows.append({"backend": name, "size": size, "wire_bytes": len(wire),
                     "encode_spread": spread(timings(_chunked(enc, data, STREAM_CHUNK), repeats)),
                     "decode_spread": spread(timings(_chunked(dec, wire, STREAM_CHUNK // 3 * 4), repeats))})  # fmt: skip
    for r in rows:
        r["encode_s"], r["decode_s"] = r["encode_spread"]["median"], r["decode_spread"]["median"]
        r["encode_MBps"], r["decode_MBps"] = _mbps(size, r["encode_s"]), _mbps(size, r["decode_s"])
    return rows


def integrity_cost(path, repeats: int = 3) -> dict:
    """SHA-256 of a file's bytes, in memory on one core: the CPU labnet's end-to-end check costs
    each side of a transfer (the receiver always; the sender unless it remembers the digest).

    Returns ``{bytes, sha256, seconds (median), spread, MBps, decoder, decode_MBps}``; for comparison
    the base64 backend labnet uses (``decoder``) decoding the same bytes' encoding; both in
    stream-sized pieces, ``repeats`` times.
    """
    data = Path(path).read_bytes()
    hashing = spread(timings(_chunked(hashlib.sha256().update, data, STREAM_CHUNK), repeats))
    decoder, (enc, dec) = list(_backends().items())[-1]  # pybase64 when installed: what labnet uses
    decoding = spread(timings(_chunked(dec, enc(data), STREAM_CHUNK // 3 * 4), repeats))
    return {"bytes": len(data), "sha256": sha256(data), "seconds": hashing["median"], "spread": hashing,
            "MBps": _mbps(len(data), hashing["median"]), "decoder": decoder,
            "decode_MBps": _mbps(len(data), decoding["median"])}  # fmt: skip


def transfer_cost(address, path, encodings=("raw", "b64"), repeats: int = 3, dest_dir=None) -> list[dict]:
    """Upload then download ``path`` through a labnet server in each encoding, ``repeats`` times each.

    Rows: ``{encoding, op, bytes, wire_bytes, seconds (median), spread, MBps (from the median),
    client_cpu_s (median), sha256}``.  Client CPU is this process's CPU time for the transfer,
    where the client's base64 work shows up.  The file is in the page cache after the first run.
    """
    import tempfile

    path = Path(path)
    rows = []
    with tempfile.TemporaryDirectory(prefix="labnet-cost-") as tmp:
        dest = Path(dest_dir or tmp)
        with Client(*address, timeout=60) as c:
            for enc in encodings:
                name = f"cost-{enc}-{path.name}"
                for op in ("upload", "download"):
                    runs = []
                    for _ in range(max(1, repeats)):
                        cpu0 = cpu_seconds()
                        r = c.upload(path, name=name, encoding=enc) if op == "upload" else c.download(name, dest, encoding=enc)
                        runs.append((r, cpu_seconds() - cpu0))
                    secs = spread(r.seconds for r, _ in runs)
                    r = runs[-1][0]
                    rows.append({"encoding": enc, "op": op, "bytes": r.bytes, "wire_bytes": r.wire_bytes,
                                 "seconds": secs["median"], "spread": secs, "MBps": _mbps(r.bytes, secs["median"]),
                                 "client_cpu_s": statistics.median(cpu for _, cpu in runs),
                                 "sha256": r.sha256})  # fmt: skip
                c.delete(name)
    return rows


def plot_base64_cost(codec_rows, transfer_rows=None):
    """Two or three panels: bytes on the wire, codec speed, and transfer speed per encoding (bars: medians,
    whiskers: min-max of the repeats)."""
    from matplotlib.figure import Figure

    panels = 3 if transfer_rows else 2
    fig = Figure(figsize=(4.2 * panels, 3.6), layout="constrained")
    axes = fig.subplots(1, panels)
    size = codec_rows[0]["size"]
    ax = axes[0]
    values = [size / MB, codec_rows[-1]["wire_bytes"] / MB]
    bars = ax.bar(["raw", "base64"], values, color=["#4c72b0", "#dd8452"])
    ax.bar_label(bars, fmt="%.2f MB")
    ax.set_ylabel("bytes on the wire (MB = 10^6 B)")
    ax.set_title(f"Size of {size / MB:g} MB on the wire")
    ax.set_ylim(0, max(values) * 1.2)

    ax = axes[1]
    names = [r["backend"] for r in codec_rows]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [r["encode_MBps"] for r in codec_rows], width=0.4, label="encode")
    ax.bar([i + 0.2 for i in x], [r["decode_MBps"] for r in codec_rows], width=0.4, label="decode")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("MB/s (one core, median)")
    ax.set_yscale("log")
    ax.set_title("CPU speed: copying vs base64")
    ax.legend()

    if transfer_rows:
        ax = axes[2]
        ops = ["upload", "download"]
        encs = sorted({r["encoding"] for r in transfer_rows}, key=lambda e: e != "raw")
        for j, enc in enumerate(encs):
            rows = [next(r for r in transfer_rows if r["op"] == op and r["encoding"] == enc) for op in ops]
            vals = [r["MBps"] for r in rows]
            lo = [v - _mbps(r["bytes"], r["spread"]["max"]) for v, r in zip(vals, rows, strict=True)]
            hi = [_mbps(r["bytes"], r["spread"]["min"]) - v for v, r in zip(vals, rows, strict=True)]
            b = ax.bar([i + (j - 0.5) * 0.4 for i in range(len(ops))], vals, width=0.4, label=enc,
                       yerr=[lo, hi], capsize=3)  # fmt: skip
            ax.bar_label(b, fmt="%.0f")
        ax.set_xticks(range(len(ops)), ops)
        ax.set_ylabel("file MB/s through labnet (loopback)")
        ax.set_title("One transfer, raw vs b64")
        ax.legend()
    return fig
