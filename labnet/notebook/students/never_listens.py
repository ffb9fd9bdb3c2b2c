"""A server that runs but never listens -- ONE deliberate bug: its accept loop is never reached.

Dialect ``course`` (it would be ``course_thread_server``).  It starts its workers inside a
``with ThreadPoolExecutor(...) as pool:`` block, and writes the listening socket and the accept
loop *after* that block.  But leaving a ``with`` block waits for every worker to finish, and the
workers wait for connections that only the accept loop could give them: the program sits there,
alive and quiet, with no listening socket, so every connection is refused.  It prints a
misleading ``server starting on HOST:PORT`` first (never ``listening on``), as students do.  It
stops on SIGTERM or SIGINT (the workers see the flag) and exits with status 0.

Run: ``python -m labnet.notebook.students.never_listens --port 6666 --workers 5 --root files``
"""

import argparse
import os
import queue
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

stopping = threading.Event()
jobs = queue.Queue()  # connections for the workers


def parse_args():
    p = argparse.ArgumentParser(description="course file server (thread pool, never listens)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6666)
    p.add_argument("--workers", type=int, default=5)
    p.add_argument("--root", default="files")
    p.add_argument("--backlog", type=int, default=5)
    return p.parse_args()


def worker():
    while not stopping.is_set():
        try:
            conn = jobs.get(timeout=0.5)
        except queue.Empty:
            continue
        conn.close()  # (serving the client would go here)


def main():
    args = parse_args()
    os.makedirs(args.root, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    print(f"server starting on {args.host}:{args.port}", flush=True)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for _ in range(args.workers):
            pool.submit(worker)
    # BUG (deliberate): this line is reached only when the `with` block above ends, that is when every
    # worker has returned -- and they wait for connections from the accept loop below.
    if stopping.is_set():
        return
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((args.host, args.port))
    srv.listen(args.backlog)
    print(f"listening on {args.host}:{srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        jobs.put(conn)


if __name__ == "__main__":
    main()
