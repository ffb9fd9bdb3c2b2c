"""Transfer benchmark: labnet against the plainest possible socket code, on loopback.

Run with ``make bench`` (or ``.venv/bin/python bench/transfer.py [--size 100MB] [--repeat 3]``).

What is measured, in one run:

* labnet: one upload and one download of a ``--size`` file (default 100 MB)
  per server model (thread, process) and encoding (b64, raw), with
  ``labnet.client.Client`` against a ``labnet.launcher.BackgroundServer``
  (a server in its own process, 2 workers).  The time runs from sending the
  request line to the final reply (upload) or the verified, renamed file
  (download): both ends hash (SHA-256), encode or decode, and write to disk.
* baseline raw: the sender ``socket.sendfile()``-s the file, the receiver (a
  separate process) ``recv_into()``-s a buffer and writes it to a file, then
  sends one byte back; the time runs from connect to that byte.
* baseline b64: the same, but the sender reads the file in chunks that are a
  multiple of 3 bytes and base64-encodes each, and the receiver decodes
  whole 4-character groups as they arrive (the rest waits for the next read).
  It uses the same base64 library as labnet's codec, so the ratio measures
  labnet's own overhead, not a choice of library.  Baselines do not hash.

Each measurement: one untimed warm-up, then ``--repeat`` timed runs; the
best is used for the ratios (the median is printed too).  MB = 10**6 bytes.
Ratios are labnet MB/s over baseline MB/s of the same encoding (target:
>= 0.6).  Peak RSS is VmHWM of every server process (the parent and, for
the process model, each worker) after all its transfers (target: < 100 MB
each).  The machine is shared: run it more than once and compare.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labnet import codec  # noqa: E402
from labnet.client import Client  # noqa: E402
from labnet.files import make_test_file, parse_size  # noqa: E402
from labnet.launcher import BackgroundServer  # noqa: E402

MB = 10**6
BUF = 1 << 20  # baseline receive buffer (1 MiB)
READ = 3 * (1 << 18)  # baseline b64 read chunk: 768 KiB, a multiple of 3
TARGET_RATIO = 0.6
TARGET_RSS = 100 * MB
ENCODINGS = ("raw", "b64")
MODELS = ("thread", "process")

if codec.BACKEND == "pybase64":
    import pybase64

    def b64encode(data) -> bytes:
        return pybase64.b64encode(data)

    def b64decode(data) -> bytes:
        return pybase64.b64decode(data, validate=True)

else:
    import binascii

    def b64encode(data) -> bytes:
        return binascii.b2a_base64(data, newline=False)

    def b64decode(data) -> bytes:
        return binascii.a2b_base64(data, strict_mode=True)


# --------------------------------------------------------------------------
# Baselines: as plain as possible
# --------------------------------------------------------------------------


def _receive(listener: socket.socket, dest: str, wire_size: int, encoding: str) -> None:
    """Receive ``wire_size`` bytes, write them (decoded for b64) to ``dest``, ack with one byte."""
    conn, _ = listener.accept()
    listener.close()
    buf = bytearray(BUF)
    view = memoryview(buf)
    left = wire_size
    held = b""
    with conn, open(dest, "wb") as out:
        while left:
            n = conn.recv_into(view, min(BUF, left))
            if n == 0:
                raise ConnectionError("sender closed early")
            left -= n
            if encoding == "raw":
                out.write(view[:n])
            else:
                data = held + view[:n] if held else view[:n]
                cut = len(data) - len(data) % 4
                held = bytes(data[cut:])
                out.write(b64decode(data[:cut]))
        conn.sendall(b"!")


def _send(sock: socket.socket, path: Path, encoding: str) -> None:
    with open(path, "rb") as f:
        if encoding == "raw":
            sock.sendfile(f)
        else:
            while chunk := f.read(READ):
                sock.sendall(b64encode(chunk))


def baseline(path: Path, dest: Path, encoding: str) -> float:
    """One baseline transfer of ``path`` to ``dest``; seconds from connect to the receiver's ack."""
    size = path.stat().st_size
    wire = codec.wire_length(size, encoding)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = multiprocessing.get_context("fork").Process(
        target=_receive, args=(listener, str(dest), wire, encoding), daemon=True
    )
    proc.start()
    listener.close()
    try:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            _send(sock, path, encoding)
            if sock.recv(1) != b"!":
                raise ConnectionError("baseline receiver failed")
            seconds = time.perf_counter() - t0
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if proc.exitcode != 0 or dest.stat().st_size != size:
        raise RuntimeError(f"baseline receiver failed (exit {proc.exitcode})")
    dest.unlink()
    return seconds


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


def measure(fn, repeat: int) -> list[float]:
    """Run ``fn`` once untimed, then ``repeat`` times; return the seconds of the timed runs."""
    fn()
    return [fn() for _ in range(repeat)]


def rate(size: int, seconds: list[float]) -> tuple[float, float]:
    """(best, median) MB/s."""
    return size / min(seconds) / MB, size / statistics.median(seconds) / MB


def labnet_runs(model: str, src: Path, work: Path, repeat: int) -> tuple[dict, dict[int, int]]:
    """{(op, encoding): seconds list}, and peak RSS per server process."""
    out = {}
    root = work / f"server-{model}"
    dl = work / f"downloads-{model}"
    with BackgroundServer(model, workers=2, root=root, status_every=0) as srv:
        with Client(*srv.address, timeout=120) as c:
            for enc in ENCODINGS:

                def up(enc=enc):
                    t0 = time.perf_counter()
                    c.upload(src, name="bench.bin", encoding=enc)
                    return time.perf_counter() - t0

                def down(enc=enc):
                    t0 = time.perf_counter()
                    result = c.download("bench.bin", dl, encoding=enc)
                    seconds = time.perf_counter() - t0
                    Path(result.path).unlink()
                    return seconds

                out[("upload", enc)] = measure(up, repeat)
                out[("download", enc)] = measure(down, repeat)
        rss = srv.peak_rss()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(dl, ignore_errors=True)
    return out, rss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="100MB", help="file size (default 100MB; MB = 10^6 bytes)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (default 3)")
    ap.add_argument("--models", default=",".join(MODELS), help="server models (default thread,process)")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    models = [m for m in args.models.split(",") if m]

    work = Path(tempfile.mkdtemp(prefix="labnet-bench-"))
    try:
        src = make_test_file(work / "src", size)
        print(
            f"labnet transfer benchmark: {size / MB:g} MB file on loopback, best (median) of {args.repeat} "
            f"after one warm-up; MB = 10^6 bytes; base64 backend: {codec.BACKEND}; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        )
        print()
        base = {}
        for enc in ENCODINGS:
            secs = measure(lambda enc=enc: baseline(src, work / "baseline.out", enc), args.repeat)
            base[enc] = rate(size, secs)
            what = "sendfile -> recv_into + write" if enc == "raw" else "read+encode+sendall -> recv_into+decode+write"
            print(f"baseline {enc:<4} {base[enc][0]:8.0f} MB/s  (median {base[enc][1]:.0f})   [{what}]")
        print()

        worst_ratio, worst_rss = float("inf"), 0
        for model in models:
            runs, rss = labnet_runs(model, src, work, args.repeat)
            for (op, enc), secs in runs.items():
                best, median = rate(size, secs)
                ratio = best / base[enc][0]
                worst_ratio = min(worst_ratio, ratio)
                print(
                    f"labnet {model:<7} {op:<8} {enc:<4} {best:8.0f} MB/s  (median {median:.0f})   "
                    f"ratio to baseline {enc}: {ratio:.2f}"
                )
            peaks = ", ".join(f"pid {pid}: {b / MB:.1f} MB" for pid, b in sorted(rss.items()))
            worst_rss = max([worst_rss, *rss.values()])
            print(f"labnet {model:<7} server peak RSS (VmHWM per process): {peaks}")
            print()
        print(
            f"worst labnet/baseline ratio {worst_ratio:.2f} (target >= {TARGET_RATIO}): "
            f"{'met' if worst_ratio >= TARGET_RATIO else 'MISSED'}"
        )
        print(
            f"largest server process peak RSS {worst_rss / MB:.1f} MB (target < {TARGET_RSS / MB:g} MB): "
            f"{'met' if worst_rss < TARGET_RSS else 'MISSED'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
