"""A server that crashes as it starts -- ONE deliberate bug: a forgotten import.

Dialect ``course`` (it would be ``course_thread_server``): it reads its arguments, creates its
folder, and then names ``ThreadPoolExecutor`` without having imported it.  Python prints the
traceback (``NameError: name 'ThreadPoolExecutor' is not defined``) on stderr and the process
exits with status 1 at once, before it listens: a launcher must report that exit and what the
server printed, not wait for a "listening" line that will never come.

Run: ``python -m labnet.notebook.students.exits_on_start --port 6666 --workers 5 --root files``
"""

import argparse
import os
import socket


def parse_args():
    p = argparse.ArgumentParser(description="course file server (thread pool, crashes on start)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6666)
    p.add_argument("--workers", type=int, default=5)
    p.add_argument("--root", default="files")
    p.add_argument("--backlog", type=int, default=5)
    return p.parse_args()


def main():
    args = parse_args()
    os.makedirs(args.root, exist_ok=True)
    # BUG (deliberate): "from concurrent.futures import ThreadPoolExecutor" is missing above
    pool = ThreadPoolExecutor(max_workers=args.workers)  # noqa: F821
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((args.host, args.port))
    srv.listen(args.backlog)
    print(f"listening on {args.host}:{srv.getsockname()[1]}", flush=True)
    pool.shutdown()


if __name__ == "__main__":
    main()
