"""Transfer benchmark: labnet against the plainest possible socket code, on loopback.

Run with ``make bench`` (or ``.venv/bin/python bench/transfer.py [--size 100MB] [--repeat 3]``).

What is measured, in one run:

* labnet: one upload and one download of a ``--size`` file (default 100 MB)
  per server model (thread, process) and encoding (b64, raw), with
  ``labnet.client.Client`` against a ``labnet.measure.launcher.BackgroundServer``
  (a server in its own process, 2 workers).  The time runs from sending the
  request line to the final reply (upload) or the verified, renamed file
  (download): both ends hash (SHA-256), encode or decode, and write to disk.
  Uploads go to a fresh name (the previous copy is deleted, untimed) and
  downloaded files are removed after timing, so labnet, like the baselines,
  always writes a new file instead of also paying to free a replaced one.
* baseline raw: the sender ``socket.sendfile()``-s the file, the receiver (a
  separate process) ``recv_into()``-s a buffer and writes it to a file, then
  sends one byte back; the time runs from connect to that byte.
* baseline b64: the same, but the sender reads the file in chunks that are a
  multiple of 3 bytes and base64-encodes each, and the receiver decodes
  whole 4-character groups as they arrive (the rest waits for the next read).
  It uses the same base64 library as labnet's codec, so the ratio measures
  labnet's own overhead, not a choice of library.  Baselines do not hash.
* reference "+sha256": the same plain code, but both sides also compute
  SHA-256 of the file bytes, as labnet must for its end-to-end integrity
  check (the raw sender then reads and sends instead of ``sendfile``, since
  it has to see the bytes): plain code doing the same verified work, the
  yardstick of the targets.  The baselines (no hashing) are information.

* sha256 alone and the "ceiling": the CPU time SHA-256 takes over the
  file's bytes while they are in cache, and from it the most *any* receiver
  that checks SHA-256 could reach on this machine: it has the baseline's
  work (its sender and receiver CPU time) plus the hashing, shared by the
  cores, and the hashing is one sequential chain that no second core can
  help with.
* plain raw spliced: labnet's raw design written plainly (the sender knows
  the digest and ``sendfile``-s; the receiver ``splice``-s socket -> pipe ->
  file and a helper thread hashes each piece back from the page cache).  It
  is the measured bound for the ceiling target on raw transfers: on the 2-core
  VM, quiet, it reached 0.77, then 0.76, 0.85 and 0.80 of the ceiling in three
  ``make bench`` runs (2026-12-02; a stand-alone test of the same reached
  1270-1352 MB/s), while the other designs tried
  did worse -- ``recv_into`` a rotation of 1 MiB buffers written in line and
  hashed by a helper 1089-1165 MB/s, hashed in line and written by a helper
  864-1039, one thread doing all with 128 KiB 716-727 -- so each raw labnet
  line also gives its ratio to this one.

Each measurement: one untimed warm-up, then ``--repeat`` timed runs; the
best is used for the ratios (the median is printed too).  MB = 10**6 bytes.
Targets (2-core machine), printed next to every labnet line: labnet MB/s
>= 1.0 of the reference "+sha256" of the same encoding, and >= 0.8 of the
ceiling.  Peak RSS is VmHWM of every server process (the parent and, for
the process model, each worker) after all its transfers (target: < 64 MB
each).  The heavy cells (50 concurrent transfers, pools of 1/5/50) are
``bench/heavy.py``.

CPU view.  Wall-clock MB/s swing widely when other work shares the CPUs;
the CPU time each side spends does not.  So every line also shows the
median CPU milliseconds of the sender and the receiver (for labnet: the
client, and all server processes and threads), and "cpu-bound MB/s" =
size / the busier side's CPU time: what the transfer reaches when each side
has a core to itself, as on an idle 2-core machine.  "cpu ratio" compares
those, labnet against the baseline.  Run it more than once and compare.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import multiprocessing
import os
import queue
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labnet.client import Client  # noqa: E402
from labnet.config import MB, SERVER_MODELS, parse_size  # noqa: E402
from labnet.measure.files import make_test_file  # noqa: E402
from labnet.measure.launcher import BackgroundServer  # noqa: E402
from labnet.protocol import codec  # noqa: E402

BUF = 1 << 20  # baseline receive buffer (1 MiB)
READ = 3 * (1 << 18)  # baseline read chunk: 768 KiB, a multiple of 3
TARGET_REFERENCE = 1.0  # labnet MB/s over the reference "+sha256" (plain code, the same verified work)
TARGET_CEILING = 0.8  # labnet MB/s over the ceiling (the most any receiver that hashes can reach)
TARGET_RSS = 64 * MB
ENCODINGS = ("raw", "b64")

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


def _receive(listener: socket.socket, dest: str, wire_size: int, encoding: str, digest: bool) -> None:
    """Receive ``wire_size`` bytes, write them (decoded for b64) to ``dest``, then acknowledge.

    The acknowledgement: one byte (for the reference, the first byte of the SHA-256), then the CPU
    seconds this receiver used, as a double."""
    cpu0 = time.process_time()
    conn, _ = listener.accept()
    listener.close()
    buf = bytearray(BUF)
    view = memoryview(buf)
    left = wire_size
    held = b""
    sha = hashlib.sha256()
    with conn, open(dest, "wb") as out:
        while left:
            n = conn.recv_into(view, min(BUF, left))
            if n == 0:
                raise ConnectionError("sender closed early")
            left -= n
            if encoding == "raw":
                data = view[:n]
            else:
                wire = held + view[:n] if held else view[:n]
                cut = len(wire) - len(wire) % 4
                held = bytes(wire[cut:])
                data = b64decode(wire[:cut])
            if digest:
                sha.update(data)
            out.write(data)
        ack = sha.digest()[:1] if digest else b"!"
        conn.sendall(ack + struct.pack("d", time.process_time() - cpu0))


def _receive_spliced(listener: socket.socket, dest: str, wire_size: int, encoding: str, digest: bool) -> None:
    """The plain form of labnet's raw receiver: socket -> pipe -> file by ``splice``, and a helper
    thread hashing each piece back from the page cache; acknowledges like :func:`_receive`."""
    cpu0 = time.process_time()
    conn, _ = listener.accept()
    listener.close()
    sha = hashlib.sha256()
    pieces: queue.Queue = queue.Queue(2)
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def hash_back() -> None:
        buf = bytearray(BUF)
        view = memoryview(buf)
        while (piece := pieces.get()) is not None:
            offset, count = piece
            while count:
                n = os.preadv(fd, [view[: min(count, BUF)]], offset)
                sha.update(view[:n])
                offset, count = offset + n, count - n

    helper = threading.Thread(target=hash_back)
    helper.start()
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, BUF)  # as labnet's channel asks
        pos = 0
        with conn:
            while pos < wire_size:
                n = os.splice(conn.fileno(), w, min(BUF, wire_size - pos), flags=os.SPLICE_F_MOVE)
                if n == 0:
                    raise ConnectionError("sender closed early")
                left = n
                while left:
                    left -= os.splice(r, fd, left, flags=os.SPLICE_F_MOVE)
                pieces.put((pos, n))
                pos += n
            pieces.put(None)
            helper.join()
            conn.sendall(sha.digest()[:1] + struct.pack("d", time.process_time() - cpu0))
    finally:
        pieces.put(None)
        helper.join()
        for d in (r, w, fd):
            os.close(d)


def _send(sock: socket.socket, path: Path, encoding: str, digest: bool, known: bytes | None = None) -> bytes:
    """Send the file; return the acknowledgement the receiver must send back."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        if known is not None:  # the digest is known before (as labnet's client keeps it): zero-copy
            sock.sendfile(f)
            return known[:1]
        if encoding == "raw" and not digest:
            sock.sendfile(f)
        else:
            while chunk := f.read(READ):
                if digest:
                    sha.update(chunk)
                sock.sendall(b64encode(chunk) if encoding == "b64" else chunk)
    return sha.digest()[:1] if digest else b"!"


def baseline(path: Path, dest: Path, encoding: str, digest: bool = False,
             spliced: bytes | None = None) -> tuple[float, float, float]:  # fmt: skip
    """One plain transfer of ``path`` to ``dest``: (seconds from connect to the receiver's
    acknowledgement, sender CPU seconds, receiver CPU seconds).  ``spliced``: the file's known
    SHA-256 -- a raw transfer the way labnet's is built (sendfile; splice + a hashing helper)."""
    size = path.stat().st_size
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    args = (listener, str(dest), codec.wire_length(size, encoding), encoding, digest)
    target = _receive if spliced is None else _receive_spliced
    proc = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    proc.start()
    listener.close()
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            ack = _send(sock, path, encoding, digest, known=spliced)
            reply = sock.recv(1)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            if reply != ack:
                raise ConnectionError("baseline receiver failed")
            rest = b""
            while len(rest) < 8 and (data := sock.recv(8 - len(rest))):
                rest += data
            (receiver_cpu,) = struct.unpack("d", rest)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if proc.exitcode != 0 or dest.stat().st_size != size:
        raise RuntimeError(f"baseline receiver failed (exit {proc.exitcode})")
    dest.unlink()
    return seconds, cpu, receiver_cpu


def hash_seconds(path: Path, repeat: int) -> float:
    """Fewest seconds SHA-256 took over the file's bytes, each 1 MiB piece hashed right after it
    was read into a buffer (so it is in this core's cache, as a receiver's freshly decoded chunk is):
    the least CPU any receiver that checks SHA-256 must add to the baseline's work."""
    buf = bytearray(BUF)
    best = float("inf")
    with open(path, "rb", buffering=0) as f:
        for _ in range(repeat + 1):
            f.seek(0)
            sha, spent = hashlib.sha256(), 0.0
            while n := f.readinto(buf):
                t0 = time.perf_counter()
                sha.update(memoryview(buf)[:n])
                spent += time.perf_counter() - t0
            best = min(best, spent)
    return best


def ceiling(base: Result, hash_s: float) -> float:
    """MB/s that no receiver which hashes can beat on this machine's cores (a bound, not a target).

    It must do the baseline's work (sender and receiver CPU) plus the hashing;
    ``cpu_count`` cores share it, and the hashing itself cannot be split
    (SHA-256 is one sequential chain), so the time is at least the larger of
    the two."""
    work = base.sender_cpu + base.receiver_cpu + hash_s
    return base.size / max(hash_s, work / (os.cpu_count() or 1)) / MB


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------


def measure(fn, repeat: int) -> list:
    """Run ``fn`` once untimed, then ``repeat`` times; return the results of the timed runs."""
    fn()
    return [fn() for _ in range(repeat)]


class Result:
    """Timed runs of one measurement: rows of (seconds, sender CPU s, receiver CPU s)."""

    def __init__(self, size: int, rows: list[tuple[float, float, float]]):
        self.size = size
        self.rows = rows
        self.best = size / min(r[0] for r in rows) / MB
        self.median = size / statistics.median(r[0] for r in rows) / MB
        self.sender_cpu = statistics.median(r[1] for r in rows)
        self.receiver_cpu = statistics.median(r[2] for r in rows)
        self.cpu_bound = size / statistics.median(max(r[1], r[2]) for r in rows) / MB

    def line(self) -> str:
        return (f"{self.best:6.0f} MB/s (median {self.median:4.0f})  cpu ms sender {self.sender_cpu * 1000:4.0f} "
                f"receiver {self.receiver_cpu * 1000:4.0f}: cpu-bound {self.cpu_bound:5.0f} MB/s")  # fmt: skip


def cpu_of(pids: list[int]) -> float:
    """CPU seconds used so far by ``pids``, threads that already ended included.

    ``/proc/<pid>/stat`` (utime + stime) counts every thread the process ever
    had, so a helper thread that hashed a body and exited is not missed (the
    per-thread ``schedstat`` would miss it); its resolution is one clock tick
    (10 ms), hence the medians over several runs."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


def labnet_runs(model: str, src: Path, work: Path, repeat: int) -> tuple[dict, dict[int, int]]:
    """{(op, encoding): Result}, and peak RSS per server process."""
    out = {}
    size = src.stat().st_size
    root = work / f"server-{model}"
    dl = work / f"downloads-{model}"
    with BackgroundServer(model, workers=2, root=root, status_every=0) as srv:
        pids = srv.pids()

        def timed(action, upload: bool):
            c0, s0, t0 = time.process_time(), cpu_of(pids), time.perf_counter()
            result = action()
            t1, c1, s1 = time.perf_counter(), time.process_time(), cpu_of(pids)
            client, server = c1 - c0, s1 - s0
            return (t1 - t0, client, server) if upload else (t1 - t0, server, client), result

        with Client(*srv.address, timeout=120) as c:
            for enc in ENCODINGS:

                def up(enc=enc):
                    if ("bench.bin", size) in c.list():
                        c.delete("bench.bin")  # untimed: every timed upload writes a new file
                    return timed(lambda: c.upload(src, name="bench.bin", encoding=enc), upload=True)[0]

                def down(enc=enc):
                    row, result = timed(lambda: c.download("bench.bin", dl, encoding=enc), upload=False)
                    Path(result.path).unlink()
                    return row

                out[("upload", enc)] = Result(size, measure(up, repeat))
                out[("download", enc)] = Result(size, measure(down, repeat))
        rss = srv.peak_rss()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(dl, ignore_errors=True)
    return out, rss


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="100MB", help="file size (default 100MB; MB = 10^6 bytes)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (default 3)")
    ap.add_argument("--models", default=",".join(SERVER_MODELS), help="server models (default thread,process)")
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
        print(
            "  labnet: Client -> BackgroundServer (2 workers) on one connection, request line to verified result,\n"
            "          SHA-256 on both ends, uploads to a new file; baseline: plain socket code, no hashing;\n"
            "          reference: the baseline plus SHA-256 on both ends (the targets: >= 1.0 of it, >= 0.8 of the ceiling).\n"
            "  cpu ms: CPU time of the sending and receiving side (median); cpu-bound MB/s = size / the busier\n"
            "          side's CPU time (a side with a core to itself); cpu ratio = labnet / baseline of that."
        )
        print()
        base, ref = {}, {}
        for enc in ENCODINGS:
            base[enc] = Result(size, measure(lambda enc=enc: baseline(src, work / "baseline.out", enc), args.repeat))
            what = "sendfile -> recv_into+write" if enc == "raw" else "read+encode+sendall -> recv_into+decode+write"
            print(f"baseline  {enc:<11} {base[enc].line()}   [{what}]")
        for enc in ENCODINGS:
            runs = measure(lambda enc=enc: baseline(src, work / "baseline.out", enc, digest=True), args.repeat)
            ref[enc] = Result(size, runs)
            print(f"reference {enc + '+sha256':<11} {ref[enc].line()}   [the same, hashing on both sides]")
        hash_s = hash_seconds(src, args.repeat)
        print(f"sha256 alone: {hash_s * 1000:.0f} ms for the file ({size / hash_s / MB:.0f} MB/s, one core, data in cache)")
        ceilings = {}
        for enc in ENCODINGS:
            top = ceiling(base[enc], hash_s)
            ceilings[enc] = top / base[enc].best
            print(f"ceiling   {enc:<11} {top:6.0f} MB/s = ratio {ceilings[enc]:.2f}: the most any receiver that "
                  f"hashes can reach here (baseline CPU + sha256, over {os.cpu_count()} cores)")  # fmt: skip
        with open(src, "rb") as f:
            known = hashlib.file_digest(f, "sha256").digest()
        spliced = Result(size, measure(lambda: baseline(src, work / "baseline.out", "raw", digest=True,
                                                        spliced=known), args.repeat))  # fmt: skip
        spliced_share = spliced.best / (ceilings["raw"] * base["raw"].best)  # of the raw ceiling
        print(f"plain     raw spliced {spliced.line()}   [labnet's raw design in plain code: sendfile -> splice, "
              f"sha256 read back by a helper]: {spliced_share:.2f} of the ceiling")  # fmt: skip
        print()

        worst_ref, worst_ceiling, worst_rss = float("inf"), float("inf"), 0
        to_spliced: list[float] = []
        for model in models:
            runs, rss = labnet_runs(model, src, work, args.repeat)
            for (op, enc), res in runs.items():
                to_ref = res.best / ref[enc].best
                to_ceiling = res.best / (ceilings[enc] * base[enc].best)
                worst_ref, worst_ceiling = min(worst_ref, to_ref), min(worst_ceiling, to_ceiling)
                if enc == "raw":
                    to_spliced.append(res.best / spliced.best)
                print(f"labnet {model:<7} {op:<8} {enc:<4} {res.line()}   to reference+sha256 {to_ref:.2f} "
                      f"(>= {TARGET_REFERENCE}: {_mark(to_ref >= TARGET_REFERENCE)}), to ceiling {to_ceiling:.2f} "
                      f"(>= {TARGET_CEILING}: {_mark(to_ceiling >= TARGET_CEILING)}); to baseline "
                      f"{res.best / base[enc].best:.2f}, cpu ratio to reference "
                      f"{res.cpu_bound / ref[enc].cpu_bound:.2f}"
                      + (f"; to plain spliced {res.best / spliced.best:.2f}" if enc == "raw" else ""))  # fmt: skip
            peaks = ", ".join(f"pid {pid}: {b / MB:.1f} MB" for pid, b in sorted(rss.items()))
            worst_rss = max([worst_rss, *rss.values()])
            print(f"labnet {model:<7} server peak RSS (VmHWM per process): {peaks}")
            print()
        print(f"worst labnet / reference+sha256 {worst_ref:.2f} (target >= {TARGET_REFERENCE}: "
              f"{_mark(worst_ref >= TARGET_REFERENCE)}); worst labnet / ceiling {worst_ceiling:.2f} "
              f"(target >= {TARGET_CEILING}: {_mark(worst_ceiling >= TARGET_CEILING)})")  # fmt: skip
        if to_spliced:
            print(f"the raw ceiling's bound, measured: plain code built like labnet's raw path reaches "
                  f"{spliced_share:.2f} of the ceiling here; labnet's raw "
                  f"transfers reach {min(to_spliced):.2f}-{max(to_spliced):.2f} of that plain code")  # fmt: skip
        print(
            f"largest server process peak RSS {worst_rss / MB:.1f} MB (target < {TARGET_RSS / MB:g} MB): "
            f"{'met' if worst_rss < TARGET_RSS else 'MISSED'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
