"""Benchmark: labnet's client in the students' ``course`` dialect against plain code doing the same work.

Run with ``make bench`` or ``.venv/bin/python bench/dialects.py [--size 100MB] [--runs 3] [--check all|client|server-memory]``.

* A plain streaming ``course``-dialect server, written here (a thread per
  connection; ``GET <name>\\r\\n\\r\\n`` answered with the JSON reply whose
  ``data_file`` string is written in pieces, never built whole), serves one
  file.
* **Plain client**: the same request, the reply read in 1 MiB pieces, the
  ``data_file`` string found, base64-decoded with pybase64 in whole 4-char
  groups, SHA-256 of the decoded bytes, written to a file -- the least code
  that does the verified work.
* **labnet**: ``labnet.client.StudentClient("course").download`` (streaming
  JSON scan, segment decoder, SHA-256, temporary file + rename).

Printed: MB/s of each (best of ``--runs``, after a warm-up) and the ratio
labnet / plain; target **>= 0.8**.  Then 5 concurrent downloads of the same
file by labnet's client in a fresh process, whose peak RSS (VmHWM) must stay
**under 100 MB** -- a client that held the reply would need 5 x 133 MB.

**Server memory** (``--check server-memory`` runs it alone): labnet's own
server, each model with 5 workers, speaking the ``course`` dialect
(``labnet server --dialect course``), serves 5 concurrent uploads of a
``--server-size`` file (100 MB) by labnet's StudentClient, then 5 concurrent
downloads of it; every file is checked by SHA-256; the peak RSS (VmHWM) of
every server process is printed against the target **under 100 MB** per
process -- a server that held a request or a reply would need 133 MB or more
per connection.
MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pybase64

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labnet.client import StudentClient  # noqa: E402
from labnet.config import MB, parse_size  # noqa: E402
from labnet.measure.files import make_test_file  # noqa: E402
from labnet.measure.launcher import BackgroundServer  # noqa: E402

PIECE = 1 << 20


class PlainCourseServer:
    """GET only, streamed: the JSON prefix, the base64 in 3 MiB-aligned pieces, the suffix."""

    def __init__(self, root: Path):
        self.root = root
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.address = self.sock.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
            name = buf.split(b"\r\n\r\n")[0].decode().split(" ", 1)[1]
            head = json.dumps({"status": "OK", "data_namafile": name, "data_file": ""})[:-2].encode()
            conn.sendall(head)
            with open(self.root / name, "rb") as f:
                while True:
                    piece = f.read(3 * PIECE)
                    if not piece:
                        break
                    conn.sendall(pybase64.b64encode(piece))
            conn.sendall(b'"}\r\n\r\n')

    def close(self):
        self.sock.close()


def plain_download(address, name: str, dest: Path) -> tuple[int, str]:
    """The least code doing the verified work: stream, decode, hash, write."""
    h = hashlib.sha256()
    size = 0
    with socket.create_connection(address) as s, open(dest, "wb") as out:
        s.sendall(f"GET {name}\r\n\r\n".encode())
        marker = b'"data_file": "'
        buf = b""
        while marker not in buf:
            buf += s.recv(PIECE)
        buf = buf.split(marker, 1)[1]
        done = False
        while not done:
            end = buf.find(b'"')
            if end >= 0:
                body, done = buf[:end], True
            else:
                cut = len(buf) - len(buf) % 4
                body, buf = buf[:cut], buf[cut:]
            if body:
                data = pybase64.b64decode(body, validate=True)
                h.update(data)
                out.write(data)
                size += len(data)
            if not done:
                more = s.recv(PIECE)
                if not more:
                    raise ConnectionError("closed early")
                buf += more
    return size, h.hexdigest()


def best_rate(fn, size: int, runs: int) -> float:
    fn()  # warm-up: page cache, allocator, fresh pages (see README: this VM returns freed memory)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return size / min(times)


CONCURRENT = '''
import sys, threading
sys.path.insert(0, {root!r})
from labnet.client import StudentClient
errors = []
def one(i):
    try:
        r = StudentClient("course", host={host!r}, port={port}, timeout=120).download({name!r}, {dest!r}, save_as=f"c{{i}}.bin")
        assert r.sha256 == {digest!r}, "digest differs"
    except Exception as exc:
        errors.append(exc)
ts = [threading.Thread(target=one, args=(i,)) for i in range(5)]
[t.start() for t in ts]; [t.join() for t in ts]
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(int(hwm) * 1024, len(errors))
'''


SERVER_CLIENTS = 5
SERVER_TARGET = 100 * MB


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            h.update(piece)
    return h.hexdigest()


def _concurrently(fn, count: int) -> list:
    errors: list = []

    def run(i: int) -> None:
        try:
            fn(i)
        except Exception as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def server_memory(size: int) -> bool:
    """labnet's server in the course dialect, both models: 5 concurrent uploads, then 5 downloads, of
    ``size`` bytes; peak RSS per server process against the target.  True when every figure is met."""
    work = Path(tempfile.mkdtemp(prefix="labnet-bench-server-memory-"))
    met = True
    try:
        src = make_test_file(work / "src", size)
        digest = _file_digest(src)
        print(f"labnet server, course dialect, {SERVER_CLIENTS} workers: {SERVER_CLIENTS} concurrent uploads then "
              f"{SERVER_CLIENTS} concurrent downloads of {size / MB:g} MB (MB = 10^6 bytes)")  # fmt: skip
        for model in ("thread", "process"):
            met &= _server_memory_one(model, src, digest, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return met


def _server_memory_one(model: str, src: Path, digest: str, work: Path) -> bool:
    root, dest = work / f"srv-{model}", work / f"dl-{model}"
    root.mkdir()
    dest.mkdir()
    with BackgroundServer(model, workers=SERVER_CLIENTS, root=root, dialect="course", idle_timeout=600,
                          start_timeout=60) as srv:  # fmt: skip
        client = StudentClient("course", host=srv.address[0], port=srv.address[1], timeout=600)

        def down(i: int) -> None:
            r = client.download(f"u{i}.bin", dest, save_as=f"d{i}.bin")
            if r.sha256 != digest:
                raise AssertionError(f"download {i}: digest differs")
            (dest / f"d{i}.bin").unlink()

        t0 = time.perf_counter()
        errors = _concurrently(lambda i: client.upload(src, name=f"u{i}.bin"), SERVER_CLIENTS)
        up = time.perf_counter() - t0
        wrong = [i for i in range(SERVER_CLIENTS) if _file_digest(root / f"u{i}.bin") != digest]
        t0 = time.perf_counter()
        errors += _concurrently(down, SERVER_CLIENTS)
        down_s = time.perf_counter() - t0
        peaks = srv.peak_rss()
    ok = bool(not errors and not wrong and peaks and max(peaks.values()) < SERVER_TARGET)
    figures = ", ".join(f"pid {pid}: {rss / MB:.1f} MB" for pid, rss in peaks.items())
    print(f"  {model:7s} model: uploads {up:5.1f} s, downloads {down_s:5.1f} s; peak RSS per server process: "
          f"{figures}  (target < {SERVER_TARGET / MB:g} MB each: {'met' if ok else 'NOT met'})")  # fmt: skip
    if errors or wrong:
        print(f"    errors: {errors[:3]}; uploads with a wrong digest: {wrong}")
    shutil.rmtree(root, ignore_errors=True)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="100MB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check", choices=["all", "client", "server-memory"], default="all",
                    help="client: labnet's client against plain code; server-memory: labnet's server in the course "
                         "dialect, peak RSS per process; all: both (default)")  # fmt: skip
    ap.add_argument("--server-size", default="100MB", help="file size of the server-memory check")
    args = ap.parse_args(argv)
    server_ok = True
    if args.check in ("all", "server-memory"):
        server_ok = server_memory(parse_size(args.server_size))
        if args.check == "server-memory":
            return 0 if server_ok else 1
    return 0 if client_check(args) == 0 and server_ok else 1


def client_check(args) -> int:
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="labnet-bench-dialects-"))
    try:
        src = make_test_file(work / "srv", size)
        name = src.name.lower()
        src.rename(work / "srv" / name)
        digest = hashlib.sha256((work / "srv" / name).read_bytes()).hexdigest()
        server = PlainCourseServer(work / "srv")
        dest = work / "dl"
        dest.mkdir()

        def plain():
            got = plain_download(server.address, name, dest / "plain.bin")
            assert got == (size, digest), "plain client: digest differs"

        def labnet():
            r = StudentClient("course", host=server.address[0], port=server.address[1]).download(name, dest)
            assert (r.bytes, r.sha256) == (size, digest), "labnet client: digest differs"

        print(f"course-dialect download of {size / MB:g} MB (best of {args.runs}, after a warm-up; MB = 10^6 bytes)")
        rate_plain = best_rate(plain, size, args.runs)
        rate_labnet = best_rate(labnet, size, args.runs)
        ratio = rate_labnet / rate_plain
        print(f"  plain client (pybase64 + SHA-256 + write): {rate_plain / MB:8.1f} MB/s")
        print(f"  labnet StudentClient:                      {rate_labnet / MB:8.1f} MB/s")
        print(f"  ratio labnet / plain: {ratio:.2f}  (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
        code = CONCURRENT.format(root=str(ROOT), host=server.address[0], port=server.address[1], name=name,
                                 dest=str(dest), digest=digest)  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            print(out.stderr)
            return 1
        hwm, errors = map(int, out.stdout.split())
        print(f"  5 concurrent downloads by labnet's client: peak RSS {hwm / MB:.1f} MB, {errors} errors  "
              f"(target < 100 MB: {'met' if hwm < 100 * MB and not errors else 'NOT met'})")
        server.close()
        return 0 if ratio >= 0.8 and hwm < 100 * MB and not errors else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
