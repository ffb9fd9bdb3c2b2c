"""A ``course`` server whose memory grows with every transfer until it is stopped -- ONE deliberate bug.

Dialect ``course``, thread pool: ``course_thread_server`` with one change (``diff`` them).

BUG (deliberate): "for speed" it gives every GET and UPLOAD a 64 MB work buffer (written through,
so every page of it is really in memory) and keeps each one in a cache list that nothing ever
reads or empties.  LIST costs nothing, so the server starts and answers; but after a handful of
transfers its process holds hundreds of MB, and under a memory limit (``labnet matrix
--memory-limit``, ``labnet grade``) it is stopped and its clients are counted ``out_of_memory``.

Run: ``python -m labnet.notebook.students.course_memhog_server --port 6666 --workers 5 --root files``
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
BUFFER_BYTES = 64 * 10**6
cache = []  # work buffers, kept "for reuse"


def parse_args():
    p = argparse.ArgumentParser(description="course file server (thread pool, memory hog)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6666)
    p.add_argument("--workers", type=int, default=5)
    p.add_argument("--root", default="files")
    p.add_argument("--backlog", type=int, default=5)
    return p.parse_args()


def read_request(conn):
    data = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:  # the client closed its side
            return bytes(data)
        data += chunk
        if data.find(END, max(0, len(data) - len(chunk) - 3)) != -1:  # only near the new bytes
            return bytes(data)


def path_of(root, name):
    if not name or name != os.path.basename(name) or name.startswith("."):
        raise ValueError(f"bad file name {name!r}")
    return os.path.join(root, name)


def handle(root, request):
    text = request.split(END, 1)[0].decode("utf-8")
    verb, _, rest = text.strip().partition(" ")
    if verb in ("GET", "UPLOAD"):
        # BUG (deliberate): a 64 MB buffer per transfer (bytes * n writes every page), kept forever
        cache.append(b"\0" * BUFFER_BYTES)
    try:
        if verb == "LIST":
            names = sorted(n for n in os.listdir(root) if not n.startswith("."))
            return {"status": "OK", "data": names}
        if verb == "GET":
            name = rest.strip()
            with open(path_of(root, name), "rb") as f:
                content = base64.b64encode(f.read()).decode("ascii")
            return {"status": "OK", "data_namafile": name, "data_file": content}
        if verb == "UPLOAD":
            name, _, b64 = rest.partition(" ")
            path = path_of(root, name.strip())
            data = base64.b64decode(b64.strip(), validate=True)
            temp = os.path.join(root, f".upload-{threading.get_ident()}")
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, path)  # a GET at the same time sees the old file or the new one, never half
            return {"status": "OK", "data": f"{name} uploaded ({len(data)} bytes)"}
        if verb == "DELETE":
            os.remove(path_of(root, rest.strip()))
            return {"status": "OK", "data": f"{rest.strip()} deleted"}
        return {"status": "ERROR", "data": "request tidak dikenali"}
    except (OSError, ValueError) as exc:  # binascii.Error is a ValueError
        return {"status": "ERROR", "data": str(exc)}


def serve_client(conn, root):
    with lock:
        open_conns.add(conn)
    try:
        if stopping.is_set():
            return
        request = read_request(conn)
        if request.strip():
            conn.sendall(json.dumps(handle(root, request)).encode() + END)
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
