"""Soak test: hours of lab traffic squeezed into minutes, against each server model.

Run with ``make soak`` (10 minutes per server model) or
``.venv/bin/python bench/soak.py --minutes 1 [--models thread,process] [--clients 6]``.
Not part of the test suite.

What it does, per model, for ``--minutes``:

* A background server (``labnet.measure.launcher.BackgroundServer``, ``--workers``
  workers) serves a temporary folder seeded with ``--names`` files.
* ``--clients`` client threads loop until the time is up, each doing a random
  mix of uploads (40 %), downloads (40 %) and lists (20 %) of files of 0 to
  ``--max-size`` bytes (a fixed pool of sizes from 0 B to 10 MB, both
  encodings), reconnecting now and then.  About ``--abort-rate`` (5 %) of the
  transfers are abandoned on purpose in the middle -- a raw connection that
  sends or reads part of a body, then closes or resets (SO_LINGER 0) --
  like a student's interrupted notebook.
* Every download is verified twice: by the client (SHA-256 trailer) and by
  the soak itself, which checks that the content equals one of the source
  files (the server may only ever hold whole uploads: a mix of two versions
  or a truncated file is a *digest mismatch*).
* In the process model, ``--kill-workers`` (3) worker processes are killed
  with SIGKILL at evenly spaced instants: the server must replace them, count
  each death, lose at most the one connection each was serving, and leave
  no temporary file.
* A sampler records the server's RSS, open file descriptors, threads and
  processes (all its processes summed) every ``--sample-every`` seconds.

Reported: transfers done per kind, bytes moved, failures by category (BUSY is
its own category), intentional aborts, digest mismatches (must be 0), the
server's own counters, and the resource samples with a verdict on whether
they stayed flat: the median of the last quarter of the run against the
maximum of its first quarter (after warm-up), with small allowances.  At the
end the folder must hold no temporary file and only whole files, and the
server must stop gracefully with no process left.

Exit status 0 when all of that holds; 1 otherwise (the report says why).
Everything is bounded: each client operation by its socket timeouts, the
run by ``--minutes``, the shutdown by the grace period.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labnet.client import Client  # noqa: E402
from labnet.config import MB, parse_size  # noqa: E402
from labnet.errors import Code, LabnetError, LocalError, PeerError, RemoteError  # noqa: E402
from labnet.measure.launcher import BackgroundServer  # noqa: E402
from labnet.procutil import alive, rss_bytes  # noqa: E402
from labnet.server.store import TEMP_PREFIX  # noqa: E402

SIZES = (0, 1, 2, 3, 1000, 65_537, 300_000, 1_000_000, 2_500_000, 5_000_000, 7_777_777, 10_000_000)


# ----------------------------------------------------------------------------
# Failure categories
# ----------------------------------------------------------------------------


def category(exc: BaseException) -> str:
    """A short failure category for a report line (BUSY is its own category)."""
    if isinstance(exc, RemoteError):
        return "busy" if exc.code == Code.BUSY else f"server {exc.code.value}"
    if isinstance(exc, PeerError):
        return "integrity" if exc.code == Code.INTEGRITY else ("timeout" if exc.code == Code.TIMEOUT else "protocol")
    if isinstance(exc, LocalError | LabnetError):
        return f"client {exc.code.value}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, OSError):
        return f"os {exc.strerror or exc}"
    return f"bug {type(exc).__name__}"


# ----------------------------------------------------------------------------
# Server resources
# ----------------------------------------------------------------------------


def _threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def sample(srv: BackgroundServer, t0: float) -> dict:
    pids = srv.pids()
    rss = [rss_bytes(p) for p in pids]
    return {"t": time.monotonic() - t0, "procs": len(pids), "rss": sum(rss), "rss_each": rss,
            "fds": sum(_fds(p) for p in pids), "threads": sum(_threads(p) for p in pids)}  # fmt: skip


def flatness(samples: list[dict]) -> list[str]:
    """Problems with the resource samples (empty: they stayed flat)."""
    if len(samples) < 8:
        return [f"only {len(samples)} samples: run longer or sample more often to judge"]
    q = len(samples) // 4
    early, late = samples[1 : q + 1], samples[-q:]  # skip the very first sample (before any load)
    problems = []
    for key, slack in (("procs", 0), ("fds", 4), ("threads", 2)):
        base, end = max(s[key] for s in early), statistics.median(s[key] for s in late)
        if end > base + slack:
            problems.append(f"{key} grew from {base} to {end:g}")
    base, end = max(s["rss"] for s in early), statistics.median(s["rss"] for s in late)
    if end > base * 1.25 + 10 * MB:
        problems.append(f"RSS grew from {base / MB:.1f} MB to {end / MB:.1f} MB")
    return problems


# ----------------------------------------------------------------------------
# One client loop
# ----------------------------------------------------------------------------


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.done = Counter()  # "upload", "download", "list"
        self.failures = Counter()
        self.examples: dict[str, str] = {}
        self.aborts = Counter()
        self.mismatches = 0
        self.bytes = 0

    def ok(self, kind: str, nbytes: int = 0) -> None:
        with self.lock:
            self.done[kind] += 1
            self.bytes += nbytes

    def fail(self, kind: str, exc: BaseException) -> None:
        cat = category(exc)
        with self.lock:
            self.failures[cat] += 1
            self.examples.setdefault(cat, f"{kind}: {exc}"[:200])


def _read_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < 4096:
        data = sock.recv(1)
        if not data:
            break
        buf += data
    return buf


def abandon(address, rng: random.Random, sources: list[Path], names: list[str], tally: Tally) -> None:
    """A transfer given up in the middle: part of a body, then a close or a reset."""
    how = rng.choice(["close", "reset"])
    kind = rng.choice(["upload", "download"])
    try:
        with socket.create_connection(address, timeout=30) as s:
            greeting = _read_line(s)
            while greeting.startswith(b"OK LABNET 1 QUEUED"):  # every worker busy: wait in line
                greeting = _read_line(s)
            if not greeting.startswith(b"OK LABNET 1 READY"):
                raise ConnectionError("no greeting")
            if kind == "upload":
                src = rng.choice([p for p in sources if p.stat().st_size > 0])
                size = src.stat().st_size
                s.sendall(f"UPLOAD {rng.choice(names)} {size} raw\r\n".encode())
                if not _read_line(s).startswith(b"OK SEND"):
                    raise ConnectionError("upload refused")
                with open(src, "rb") as f:
                    s.sendall(f.read(rng.randrange(0, size)))
            else:
                s.sendall(f"DOWNLOAD {rng.choice(names)} raw\r\n".encode())
                header = _read_line(s).split()
                if header[:1] != [b"OK"]:
                    raise ConnectionError("download refused")
                want, got = rng.randrange(0, int(header[1]) + 1), 0
                while got < want:
                    data = s.recv(min(1 << 16, want - got))
                    if not data:
                        break
                    got += len(data)
            if how == "reset":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with tally.lock:
            tally.aborts[f"{kind} {how}"] += 1
    except OSError as exc:
        tally.fail(f"abandoned {kind}", exc)


def client_loop(i: int, address, deadline: float, sources: list[Path], digests: dict[str, int], names: list[str],
                work: Path, abort_rate: float, seed: int, tally: Tally) -> None:  # fmt: skip
    rng = random.Random(seed * 1000 + i)
    dest = work / f"dl{i}"
    dest.mkdir()
    client = Client(*address, timeout=30, wait_timeout=60)
    while time.monotonic() < deadline:
        r = rng.random()
        kind = "upload" if r < 0.4 else ("download" if r < 0.8 else "list")
        if kind != "list" and rng.random() < abort_rate:
            client.quit()  # one connection per loop at a time: a loop must not hold a worker while it waits
            abandon(address, rng, sources, names, tally)
            continue
        encoding = rng.choice(["b64", "raw"])
        try:
            if kind == "upload":
                src = rng.choice(sources)
                result = client.upload(src, name=rng.choice(names), encoding=encoding)
                tally.ok(kind, result.bytes)
            elif kind == "download":
                name = rng.choice(names)
                result = client.download(name, dest, encoding=encoding)
                path = dest / name
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digests.get(digest) != path.stat().st_size or digest != result.sha256:
                    with tally.lock:
                        tally.mismatches += 1
                        tally.examples.setdefault("digest mismatch", f"{name}: {digest} ({path.stat().st_size} B)")
                path.unlink()
                tally.ok(kind, result.bytes)
            else:
                client.list()
                tally.ok(kind)
        except Exception as exc:  # counted by category; the loop goes on with a fresh connection
            tally.fail(kind, exc)
            client.close()
        if rng.random() < 0.3:
            client.quit()
    client.quit()


# ----------------------------------------------------------------------------
# One model
# ----------------------------------------------------------------------------


def soak_model(model: str, args, sources: list[Path], digests: dict[str, int]) -> bool:
    work = Path(tempfile.mkdtemp(prefix=f"labnet-soak-{model}-"))
    root = work / "server_files"
    root.mkdir()
    names = [f"n{k:02d}.bin" for k in range(args.names)]
    srv = BackgroundServer(model, workers=args.workers, root=root, grace=5.0)
    tally = Tally()
    samples: list[dict] = []
    ok = True
    print(f"\n=== {model} model: {args.workers} workers, {args.clients} clients, {args.minutes:g} min ===", flush=True)
    try:
        srv.start()
        pids_seen = set(srv.pids())
        with Client(*srv.address, timeout=30) as c:  # every name exists before the mix starts
            for k, name in enumerate(names):
                c.upload(sources[k % len(sources)], name=name)
        t0 = time.monotonic()
        deadline = t0 + args.minutes * 60
        stop_sampling = threading.Event()

        def sampler():
            while True:
                samples.append(sample(srv, t0))
                pids_seen.update(srv.pids())
                if stop_sampling.wait(args.sample_every):
                    return

        sampler_thread = threading.Thread(target=sampler, daemon=True)
        sampler_thread.start()
        threads = [threading.Thread(target=client_loop, daemon=True,
                                    args=(i, srv.address, deadline, sources, digests, names, work,
                                          args.abort_rate, args.seed, tally))  # fmt: skip
                   for i in range(args.clients)]  # fmt: skip
        for t in threads:
            t.start()
        kills: list[int] = []
        if model == "process" and args.kill_workers:
            def killer():  # a few worker deaths, evenly spread over the run (kill -9, like the OOM killer)
                rng = random.Random(args.seed)
                for k in range(args.kill_workers):
                    if stop_sampling.wait(max(0.0, t0 + (k + 1) * (deadline - t0) / (args.kill_workers + 1)
                                                 - time.monotonic())):  # fmt: skip
                        return
                    workers = sorted(set(srv.pids()) - {srv.proc.pid})
                    if workers:
                        victim = rng.choice(workers)
                        os.kill(victim, signal.SIGKILL)
                        kills.append(victim)
                        print(f"  {time.monotonic() - t0:5.0f} s: killed worker {victim} (SIGKILL)", flush=True)

            threading.Thread(target=killer, daemon=True).start()
        next_report = t0 + 60
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 120:
            for t in threads:
                t.join(1.0)
            if time.monotonic() >= next_report and time.monotonic() < deadline:
                next_report += 60
                with tally.lock:
                    print(f"  {time.monotonic() - t0:5.0f} s: {dict(tally.done)}, failures {dict(tally.failures)}",
                          flush=True)  # fmt: skip
        hung = sum(t.is_alive() for t in threads)
        elapsed = time.monotonic() - t0
        stop_sampling.set()
        sampler_thread.join(10)
        samples.append(sample(srv, t0))
        with Client(*srv.address, timeout=30) as c:
            snap = c.stats()
            listing = c.list()
    except Exception as exc:
        print(f"  soak aborted: {type(exc).__name__}: {exc}")
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
        return False

    status = srv.stop()
    left = [p for p in pids_seen if alive(p)]
    temps = [p.name for p in root.iterdir() if p.name.startswith(TEMP_PREFIX)]
    bad_files = []
    for p in root.iterdir():
        if p.is_file() and not p.name.startswith("."):
            if digests.get(hashlib.sha256(p.read_bytes()).hexdigest()) != p.stat().st_size:
                bad_files.append(p.name)

    transfers = tally.done["upload"] + tally.done["download"]
    print(f"  ran {elapsed:.1f} s: {transfers} transfers done ({tally.done['upload']} uploads, "
          f"{tally.done['download']} downloads) + {tally.done['list']} lists; "
          f"{tally.bytes / MB:.0f} MB of file bytes moved ({tally.bytes / MB / elapsed:.1f} MB/s)")  # fmt: skip
    print(f"  abandoned on purpose: {sum(tally.aborts.values())} {dict(tally.aborts)} "
          f"({100 * sum(tally.aborts.values()) / max(1, transfers + sum(tally.aborts.values())):.1f} % of transfers)")
    print(f"  failures by category: {dict(tally.failures) or 'none'}")
    if kills:
        print(f"  workers killed: {len(kills)}; server counted {snap['worker_deaths']} deaths, "
              f"{snap['died']} connections lost with them (their clients' failures are expected)")
    for cat, example in tally.examples.items():
        print(f"    e.g. {cat}: {example}")
    print(f"  digest mismatches: {tally.mismatches} (downloads), {len(bad_files)} (files in the folder)")
    verbs = snap["verbs"]
    print("  server counted: " + ", ".join(f"{v} {verbs[v]['ok']}/{verbs[v]['failed']}"
                                           for v in ("UPLOAD", "DOWNLOAD", "LIST") ) +  # fmt: skip
          f" (ok/failed); busy {snap['busy']}, timeouts {snap['timeouts']}, connections {snap['connections']}")
    print("  server resources (all its processes):")
    print("        t      RSS     fds  threads  procs  RSS per process (MB)")
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        each = " ".join(f"{r / MB:.1f}" for r in s["rss_each"])
        print(f"    {s['t']:5.0f} s {s['rss'] / MB:6.1f} MB {s['fds']:6d} {s['threads']:7d} {s['procs']:6d}  {each}")
    problems = flatness(samples)
    print(f"  resources flat: {'yes' if not problems else 'NO: ' + '; '.join(problems)}")
    print(f"  after stop: exit status {status}, processes left {left or 'none'}, "
          f"temporary files {temps or 'none'}, {len(listing)} files listed")  # fmt: skip

    if tally.mismatches or bad_files:
        print("  FAIL: digest mismatch")
        ok = False
    unexpected = {k: v for k, v in tally.failures.items() if k != "busy"}
    if kills:
        if snap["worker_deaths"] != len(kills):
            print(f"  FAIL: {len(kills)} workers killed, {snap['worker_deaths']} deaths counted")
            ok = False
        # each death can cost the one connection its worker was serving, and nothing else
        if sum(unexpected.values()) <= snap["died"] <= len(kills):
            unexpected = {}
    if unexpected:
        print(f"  FAIL: unexpected failures {unexpected}")
        ok = False
    if hung:
        print(f"  FAIL: {hung} client threads did not finish")
        ok = False
    if problems and len(samples) >= 8:
        print("  FAIL: server resources grew")
        ok = False
    if left or temps or status != 0:
        print("  FAIL: unclean stop")
        ok = False
    shutil.rmtree(work, ignore_errors=True)
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="labnet soak test (bounded; not part of the test suite)")
    p.add_argument("--minutes", type=float, default=10.0, help="run time per server model (default 10)")
    p.add_argument("--models", default="thread,process", help="comma-separated server models")
    p.add_argument("--workers", type=int, default=4, help="server workers")
    p.add_argument("--clients", type=int, default=6, help="concurrent client loops")
    p.add_argument("--names", type=int, default=12, help="distinct file names on the server")
    p.add_argument("--max-size", default="10MB", help="largest file (sizes are a fixed pool from 0 B up to this)")
    p.add_argument("--abort-rate", type=float, default=0.05, help="share of transfers abandoned mid-way")
    p.add_argument("--sample-every", type=float, default=None, help="seconds between resource samples")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kill-workers", type=int, default=3,
                   help="worker processes killed (SIGKILL) during the process-model run (default 3)")
    args = p.parse_args(argv)
    if args.sample_every is None:
        args.sample_every = max(1.0, min(10.0, args.minutes * 60 / 40))
    limit = parse_size(args.max_size)
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    src_dir = Path(tempfile.mkdtemp(prefix="labnet-soak-src-"))
    try:
        sources, digests = [], {}
        rng = random.Random(args.seed)
        for size in sorted({s for s in SIZES if s <= limit} | {limit}):
            path = src_dir / f"src-{size}.bin"
            data = rng.randbytes(size)
            path.write_bytes(data)
            sources.append(path)
            digests[hashlib.sha256(data).hexdigest()] = size
        print(f"labnet soak: {len(sources)} source files of {min(digests.values())} B to {max(digests.values()) / MB:g} MB, "
              f"abort rate {args.abort_rate:.0%}, models {', '.join(models)}")  # fmt: skip
        results = {m: soak_model(m, args, sources, digests) for m in models}
    finally:
        shutil.rmtree(src_dir, ignore_errors=True)
    print("\n" + "  ".join(f"{m}: {'PASS' if ok else 'FAIL'}" for m, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
