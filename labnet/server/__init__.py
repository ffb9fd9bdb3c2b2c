"""labnet's file server: one accept loop, two concurrency models, one connection handler.

* ``base``         -- :class:`~labnet.server.base.BaseServer`: listening, admission control, status, shutdown
* ``thread_pool``  -- the thread model: a pool of worker threads
* ``process_pool`` -- the process model: worker processes, connections handed over as file descriptors
* ``session``      -- one connection served start to finish: what every worker runs
* ``store``        -- the served folder: name checks, temporary file + atomic publish, cleanup
* ``stats``        -- the counters, exact across threads and processes

This package's ``__init__`` is the only module that imports the models
(:func:`create_server`, :func:`run_server`); the models import only ``base``.
Nothing here imports the client, the lab's tools or the notebooks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from labnet.config import LOOPBACK_HOSTS, SERVER_MODELS, ServerConfig
from labnet.errors import UsageError
from labnet.procutil import set_parent_death_signal
from labnet.protocol.codec import use_backend
from labnet.protocol.console import ready_line, status_line
from labnet.server.base import BaseServer
from labnet.server.process_pool import ProcessPoolServer
from labnet.server.thread_pool import ThreadPoolServer

MODEL_CLASSES = {"thread": ThreadPoolServer, "process": ProcessPoolServer}
assert tuple(MODEL_CLASSES) == SERVER_MODELS


def create_server(config: ServerConfig) -> BaseServer:
    try:
        cls = MODEL_CLASSES[config.model]
    except KeyError:
        raise UsageError(f"unknown server model {config.model!r}; choose {' or '.join(SERVER_MODELS)}") from None
    return cls(config)


def _watch_parent(server: BaseServer, parent_pid: int) -> None:
    """Stop the server when the process that launched it is gone (a killed notebook kernel)."""
    while not server.stop_requested.wait(0.5):
        if os.getppid() != parent_pid:
            print("[labnet] launching process is gone: stopping", flush=True)
            server.request_stop()
            return


def run_server(config: ServerConfig) -> int:
    """Run a server in this process until SIGINT/SIGTERM/SIGHUP; the CLI's ``labnet server``.

    SIGHUP (the terminal it ran in was closed) stops it like SIGTERM: a graceful stop, the
    temporary files of unfinished uploads removed.  Its default action would kill it on the
    spot and leave them behind.  Process-model workers ignore SIGHUP: the parent decides.

    When started by ``labnet.measure.launcher`` (``LABNET_PARENT_PID`` set), the server
    also stops when its launcher dies: a parent-death signal (prctl) where the
    launcher asked for one, and a watchdog on the parent PID in every case.
    """
    parent_pid = int(os.environ.get("LABNET_PARENT_PID", "0") or 0)
    if parent_pid:
        if os.environ.get("LABNET_PDEATHSIG") == "1":
            set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:
            return 1
    config.base64 = use_backend(config.base64)  # named, so process workers (spawn too) use the same one
    server = create_server(config)
    server.start()
    host, port = server.address
    if parent_pid:
        threading.Thread(target=_watch_parent, args=(server, parent_pid), daemon=True).start()

    def on_signal(signum, frame):
        print(f"[labnet] {signal.Signals(signum).name}: stopping (grace {config.grace:g} s)", flush=True)
        server.request_stop()

    stop_signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):  # not on Windows
        stop_signals.append(signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in stop_signals}
    try:
        if config.host not in LOOPBACK_HOSTS:
            print(f"WARNING: listening on {config.host}: anyone who can reach this host can list, "
                  "upload, download and delete files here (no authentication). See docs/security.md.",
                  file=sys.stderr, flush=True)  # fmt: skip
        print(ready_line(host, port, config.model, config.workers, server.store.root, server.counters_address,
                         config.base64, config.dialect), flush=True)  # fmt: skip
        server.serve_forever()
    finally:
        server.shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
        print(status_line(server.stats.snapshot()), flush=True)
        print("[labnet] server stopped", flush=True)
    return 0
