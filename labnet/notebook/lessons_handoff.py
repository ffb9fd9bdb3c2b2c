"""A connection handed to a ``ProcessPoolExecutor`` the way students write it, measured (the process-pool notebook).

Students write ``executor.submit(handler, connection, address)`` with a ``ProcessPoolExecutor``, then
``connection.close()`` in the accepting loop, as they would after handing it to a thread.  A socket
argument is pickled by :mod:`multiprocessing.reduction`: it **duplicates the descriptor** (``os.dup``)
and lets the worker fetch the copy -- the same descriptor hand-off labnet's process server does with
``socket.send_fds``.  But the pickling happens later, in the call queue's **feeder thread**, not in
``submit()``: when the parent has closed its socket by then, ``fileno()`` is -1 and ``os.dup(-1)``
fails there with ``OSError: [Errno 9] Bad file descriptor``; the future carries that error, and
the client gets no reply.  Whether the feeder thread or the ``close()`` comes first is a race, so
the helper runs many trials and counts.

* :func:`reply_from_child` -- the importable worker function (a handler serving the connection).
* :func:`trials` -- the experiment, in this process: ``n`` connections, closed right after
  ``submit()`` or only after the worker is done.
* :func:`students_handoff` -- runs :func:`trials` in a fresh interpreter (``python -m`` this module)
  so the notebook's kernel keeps no pool and gets no stray output; returns the counts, the first
  error's one-line reason and where it was raised, and whatever the child printed to stderr.

Must not import matplotlib, the server package or anything that starts threads at import time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')


def reply_from_child(conn: socket.socket) -> int:
    """A handler run by a pool process: answer on the connection it was given, close it, return its PID."""
    with conn:
        conn.sendall(f"served by process {os.getpid()}\n".encode())
    return os.getpid()


def _where(exc: BaseException) -> dict:
    """Where ``exc`` was raised: the first and last frames of the traceback the executor attached
    (``__cause__``, a text from the thread that failed), as ``file, function``."""
    text = str(exc.__cause__ or "")
    frames = [(os.path.join(*path.split(os.sep)[-2:]), fn) for path, fn in _FRAME.findall(text)]
    return {"entry": ", ".join(frames[0]) if frames else "", "raised_in": ", ".join(frames[-1]) if frames else ""}


def trials(n: int = 10, close_after_submit: bool = True, method: str = "spawn", timeout: float = 10.0) -> dict:
    """``n`` connections, each accepted and given to ``executor.submit(reply_from_child, conn)``.

    ``close_after_submit``: the parent closes its socket on the next line (the students' pattern);
    otherwise only once the future is done.  Returns ``{trials, served, failed, errors: {text: count},
    first_error: {error, entry, raised_in}}`` where ``served`` counts clients that got
    the worker's reply.
    """
    served, errors, first = 0, {}, None
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:  # fmt: skip
        list(pool.map(abs, range(2)))  # start both workers first, as a server does before it accepts
        for _ in range(n):
            with socket.create_connection(listener.getsockname()[:2], timeout=timeout) as client:
                conn, _ = listener.accept()
                future = pool.submit(reply_from_child, conn)
                if close_after_submit:
                    conn.close()  # as after handing a connection to a thread
                try:
                    future.result(timeout)
                except Exception as exc:  # the lesson is in the exception
                    key = f"{type(exc).__name__}: {exc}"
                    errors[key] = errors.get(key, 0) + 1
                    first = first or {"error": key, **_where(exc)}
                finally:
                    conn.close()
                client.settimeout(2.0)
                try:
                    got = client.recv(100)
                except OSError:
                    got = b""
                served += got.startswith(b"served by")
    return {"trials": n, "close_after_submit": close_after_submit, "served": served,
            "failed": n - served, "errors": errors, "first_error": first}  # fmt: skip


def students_handoff(n: int = 10, method: str = "spawn", timeout: float = 120.0) -> dict:
    """:func:`trials` both ways (close right after ``submit()``, close after the worker is done), each in
    a fresh ``python -m labnet.notebook.lessons_handoff`` process.  Returns ``{"close_after_submit":
    {...}, "close_when_done": {...}}``, each with the child's ``stderr`` text added."""
    out = {}
    for label, flag in (("close_after_submit", ["--close-after-submit"]), ("close_when_done", [])):
        done = subprocess.run([sys.executable, "-m", "labnet.notebook.lessons_handoff", "--trials", str(n),
                               "--method", method, *flag], capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"the hand-off experiment failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        out[label] = {**json.loads(done.stdout), "stderr": done.stderr}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="a socket given to a ProcessPoolExecutor, closed after submit() or not")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--method", default="spawn")
    p.add_argument("--close-after-submit", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(trials(args.trials, args.close_after_submit, args.method)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
