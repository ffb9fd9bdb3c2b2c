"""A ``sentinel`` file server (the seed's protocol) on a thread pool -- with no deliberate bug (the baseline).

Dialect ``sentinel``: plain text, one request per connection, the server closes after answering::

    UPLOAD <name>    ->  READY,  then the client sends <base64>__END__  ->  Upload successful
    DOWNLOAD <name>  ->  <base64>__END__        (or: File not found / Filename not provided)
    LIST             ->  name1\\nname2\\n...      (or: No files found.)
    anything else    ->  Unknown command

The request has no terminator: like the seed, the first ``recv()`` is the request (up to a newline
if there is one).  Correct where students often are not: the download is encoded in blocks whose
size is a multiple of 3 bytes, so the blocks join into one base64 string with no ``=`` in the
middle; the end marker is found even when it is cut across two reads; an upload whose base64
is not valid is refused out loud (``validate=True``) instead of silently shortened.

Run: ``python -m labnet.notebook.students.sentinel_server --port 6666 --workers 5 --root files``
"""

import argparse
import base64
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

MARKER = b"__END__"
BLOCK = 3 * 256 * 1024  # a multiple of 3: every block but the last encodes without '=' padding
stopping = threading.Event()
open_conns = set()
lock = threading.Lock()


def parse_args():
    p = argparse.ArgumentParser(description="sentinel file server (thread pool)")
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


def receive_upload(conn, data):
    """The base64 up to the marker (``data``: what came with the request already)."""
    data = bytearray(data)
    at = data.find(MARKER)
    while at == -1:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("connection closed before __END__")
        data += chunk
        # search only where the marker can be (it may be cut across two reads): no re-scan from the start
        at = data.find(MARKER, max(0, len(data) - len(chunk) - len(MARKER) + 1))
    return bytes(data[:at])


def serve_client(conn, root):
    with lock:
        open_conns.add(conn)
    try:
        if stopping.is_set():
            return
        first = conn.recv(1024)
        line, _, extra = first.partition(b"\n")
        words = line.decode("utf-8", "replace").split()
        verb = words[0] if words else ""
        name = words[1] if len(words) > 1 else ""
        if verb == "LIST":
            names = sorted(n for n in os.listdir(root) if not n.startswith("."))
            conn.sendall("".join(n + "\n" for n in names).encode() if names else b"No files found.")
        elif verb == "DOWNLOAD":
            if not name:
                conn.sendall(b"Filename not provided")
                return
            try:
                f = open(path_of(root, name), "rb")
            except (OSError, ValueError):
                conn.sendall(b"File not found")
                return
            with f:
                while block := f.read(BLOCK):
                    conn.sendall(base64.b64encode(block))
            conn.sendall(MARKER)
        elif verb == "UPLOAD":
            if not name:
                conn.sendall(b"Filename not provided")
                return
            try:
                path = path_of(root, name)
            except ValueError as exc:
                conn.sendall(f"Error during upload: {exc}".encode())
                return
            conn.sendall(b"READY")
            try:
                data = base64.b64decode(receive_upload(conn, extra), validate=True)
                temp = os.path.join(root, f".upload-{threading.get_ident()}")
                with open(temp, "wb") as f:
                    f.write(data)
                os.replace(temp, path)
                conn.sendall(b"Upload successful")
            except (OSError, ValueError) as exc:
                conn.sendall(f"Error during upload: {exc}".encode())
        else:
            conn.sendall(b"Unknown command")
    except OSError:
        pass
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
    srv.settimeout(0.5)
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
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    main()
