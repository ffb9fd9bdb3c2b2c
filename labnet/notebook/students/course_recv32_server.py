"""A ``course`` server shaped like the course's reference server: each ``recv(32)`` is a request -- ONE deliberate bug.

Dialect ``course``: requests ``LIST``, ``GET <name>``, ``UPLOAD <name> <base64>``, ``DELETE <name>``; every
reply is one JSON object followed by ``\\r\\n\\r\\n``.  The connection stays open for more requests until the
client closes it, as in the reference server (rm77/progjar, progjar4a/file_server.py).

BUG (deliberate, the reference server's own): it reads ``recv(32)`` and handles each 32-byte chunk as
one whole request.  ``LIST`` and ``GET <short name>`` fit in 32 bytes, so the reference client works;
a request longer than 32 bytes -- any ``UPLOAD`` with content -- arrives in pieces, and every piece is
answered as a request of its own: the first as an ``UPLOAD`` of a few base64 characters (``ERROR``
Incorrect padding, or ``OK`` with a file of a few bytes), the rest as unknown requests.

Otherwise student-like: a ``ThreadPoolExecutor`` of ``--workers`` threads, one connection each, and a
listen backlog from ``--backlog`` (the reference listens with ``listen(1)``).

Run: ``python -m labnet.notebook.students.course_recv32_server --port 6666 --workers 5 --root files --backlog 1``
"""

import argparse
import base64
import json
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

END = b"\r\n\r\n"
stopping = threading.Event()
open_conns = set()  # so that a stop can wake the handlers blocked in recv()
lock = threading.Lock()


def parse_args():
    p = argparse.ArgumentParser(description="course file server (thread pool, recv(32) per request)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6666)
    p.add_argument("--workers", type=int, default=5)
    p.add_argument("--root", default="files")
    p.add_argument("--backlog", type=int, default=5)
    return p.parse_args()


def path_of(root, name):
    if not name or name != os.path.basename(name) or name.startswith("."):
        raise ValueError(f"bad file name {name!r}")
    return os.path.join(root, name)


def handle(root, text):
    words = text.strip().split(" ")
    verb = words[0].strip()
    try:
        if verb == "LIST":
            names = sorted(n for n in os.listdir(root) if not n.startswith("."))
            return {"status": "OK", "data": names}
        if verb == "GET":
            name = words[1].strip()
            with open(path_of(root, name), "rb") as f:
                content = base64.b64encode(f.read()).decode("ascii")
            return {"status": "OK", "data_namafile": name, "data_file": content}
        if verb == "UPLOAD":
            name = words[1].strip()
            data = base64.b64decode(words[2].strip())
            with open(path_of(root, name), "wb") as f:
                f.write(data)
            return {"status": "OK", "data": f"{name} uploaded ({len(data)} bytes)"}
        if verb == "DELETE":
            os.remove(path_of(root, words[1].strip()))
            return {"status": "OK", "data": f"{words[1].strip()} deleted"}
        return {"status": "ERROR", "data": "request tidak dikenali"}
    except (OSError, ValueError, IndexError) as exc:  # binascii.Error is a ValueError
        return {"status": "ERROR", "data": str(exc)}


def serve_client(conn, root):
    with lock:
        open_conns.add(conn)
    try:
        while not stopping.is_set():
            # BUG (deliberate): one recv(32) is taken as one whole request, as in the reference server
            data = conn.recv(32)
            if not data:
                break
            reply = handle(root, data.decode("ascii", "replace"))
            conn.sendall(json.dumps(reply).encode() + END)
    except OSError:
        pass  # the client went away
    finally:
        with lock:
            open_conns.discard(conn)
        conn.close()


def main():
    args = parse_args()
    os.makedirs(args.root, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(args.backlog)
    srv.settimeout(0.5)  # wake up twice a second to see whether we must stop
    host, port = srv.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    pool = ThreadPoolExecutor(max_workers=args.workers)
    try:
        while not stopping.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            pool.submit(serve_client, conn, args.root)
    finally:
        srv.close()
        with lock:
            for conn in open_conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv() or sendall()
                except OSError:
                    pass
        pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    main()
