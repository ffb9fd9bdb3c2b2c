"""A ``course`` file server on a process pool, written like a student's -- with no deliberate bug (the baseline).

Dialect ``course``, exactly as ``course_thread_server`` (requests ended by ``\\r\\n\\r\\n``, one JSON
reply ended by ``\\r\\n\\r\\n``, one request per connection).

How the connection meets the pool, the way most students do it: the parent accepts, a small
thread per client reads the whole request, a ``ProcessPoolExecutor`` of ``--workers`` processes
does the file work (decode and write, or read, encode and ``json.dumps``), and the thread sends
the reply back.  The request and the reply cross to the worker and back pickled: a file in
memory twice more -- the price of this design, not a bug.  The pool is started before the first
client (forking after threads have started is unsafe), and its workers ignore Ctrl-C: the
parent stops them.

Run: ``python -m labnet.notebook.students.course_process_server --port 6666 --workers 5 --root files``
"""

import argparse
import base64
import json
import os
import signal
import socket
import threading
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

END = b"\r\n\r\n"
stopping = threading.Event()
open_conns = set()
lock = threading.Lock()


def parse_args():
    p = argparse.ArgumentParser(description="course file server (process pool)")
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
        if not chunk:
            return bytes(data)
        data += chunk
        if data.find(END, max(0, len(data) - len(chunk) - 3)) != -1:
            return bytes(data)


def path_of(root, name):
    if not name or name != os.path.basename(name) or name.startswith("."):
        raise ValueError(f"bad file name {name!r}")
    return os.path.join(root, name)


def worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def handle(root, request):
    """Runs in a worker process: the request's bytes in, the reply's bytes out."""
    text = request.split(END, 1)[0].decode("utf-8")
    verb, _, rest = text.strip().partition(" ")
    try:
        if verb == "LIST":
            reply = {"status": "OK", "data": sorted(n for n in os.listdir(root) if not n.startswith("."))}
        elif verb == "GET":
            name = rest.strip()
            with open(path_of(root, name), "rb") as f:
                content = base64.b64encode(f.read()).decode("ascii")
            reply = {"status": "OK", "data_namafile": name, "data_file": content}
        elif verb == "UPLOAD":
            name, _, b64 = rest.partition(" ")
            path = path_of(root, name.strip())
            data = base64.b64decode(b64.strip(), validate=True)
            temp = os.path.join(root, f".upload-{os.getpid()}")
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, path)
            reply = {"status": "OK", "data": f"{name} uploaded ({len(data)} bytes)"}
        elif verb == "DELETE":
            os.remove(path_of(root, rest.strip()))
            reply = {"status": "OK", "data": f"{rest.strip()} deleted"}
        else:
            reply = {"status": "ERROR", "data": "request tidak dikenali"}
    except (OSError, ValueError) as exc:
        reply = {"status": "ERROR", "data": str(exc)}
    return json.dumps(reply).encode() + END


def serve_client(conn, root, pool):
    with lock:
        open_conns.add(conn)
    try:
        if stopping.is_set():
            return
        request = read_request(conn)
        if request.strip():
            conn.sendall(pool.submit(handle, root, request).result())
    except (OSError, CancelledError, BrokenProcessPool):
        pass  # the client went away, or we are stopping
    finally:
        with lock:
            open_conns.discard(conn)
        conn.close()


def main():
    args = parse_args()
    os.makedirs(args.root, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    pool = ProcessPoolExecutor(max_workers=args.workers, initializer=worker_init)
    pool.submit(os.getpid).result()  # starts every worker now, before any thread of ours exists
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(args.backlog)
    srv.settimeout(0.5)
    host, port = srv.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        while not stopping.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve_client, args=(conn, args.root, pool), daemon=True).start()
    finally:
        srv.close()
        with lock:
            for conn in open_conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    main()
