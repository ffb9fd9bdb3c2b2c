"""The lab's shared vocabulary and defaults: one home for every name and number that several layers use.

* the choices: server models, client pools, operations, body encodings;
* where a server listens by default (host, port) and :class:`ServerConfig`,
  everything a server needs to know (the CLI's ``labnet server`` flags map
  onto its fields);
* quick mode (``LABNET_QUICK=1``: small files and pools everywhere);
* size units: ``MB`` means 10**6 bytes everywhere in labnet
  (:func:`parse_size`, :func:`size_label`).

This module sits beside ``errors``: it imports no labnet module but
``errors``, and every layer (the protocol included) may import it.  It must
not import sockets, threads or processes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from labnet.errors import UsageError

# -- the choices -------------------------------------------------------------

SERVER_MODELS = ("thread", "process")  # how a server's workers run
CLIENT_POOLS = ("thread", "process")  # how the stress runner's client workers run
OPERATIONS = ("upload", "download")  # what one stress worker does once
ENCODINGS = ("b64", "raw")  # how a file body travels; b64 is the assignment's
DEFAULT_ENCODING = "b64"

# -- where a server listens ------------------------------------------------------

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8989
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServerConfig:
    """Everything a server needs to know; the CLI flags map onto these fields."""

    model: str = "thread"
    workers: int = 5
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    root: str = "server_files"
    backlog: int = 1024  # a burst of 200 connects must not overflow it (the kernel caps it at somaxconn)
    max_waiting: int = 128  # queued connections before new ones are told BUSY
    idle_timeout: float = 60.0  # seconds a connection may sit without a complete request
    max_upload: int = 4 * 1024**3
    status_every: float = 10.0  # 0 turns the periodic status line off
    grace: float = 10.0  # seconds in-flight transfers get to finish on shutdown
    start_method: str | None = None  # process model: "fork", "spawn", "forkserver"
    counters_port: int | None = 0  # counters listener on 127.0.0.1 (0: any free port; None: none)
    dialect: str = "labnet"  # what the server speaks: "labnet", "course" or "sentinel" (the students')
    profile: str | None = None  # the dialect's variant: a built-in profile name or a TOML path (read by workers)
    connection_log: str | None = None  # a file that gets one JSON line per closed connection (labnet.server.connlog)
    base64: str | None = None  # the codec backend: "pybase64" or "binascii" (None: LABNET_BASE64, else pybase64)


# -- quick mode ----------------------------------------------------------------


def quick_mode() -> bool:
    """True when ``LABNET_QUICK=1``: small files and pools everywhere (tests, notebooks under test)."""
    return os.environ.get("LABNET_QUICK", "").strip() not in ("", "0", "false", "no")


# -- sizes: MB = 10**6 bytes ---------------------------------------------------

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
KB, MB, GB = UNITS["KB"], UNITS["MB"], UNITS["GB"]
MiB = UNITS["MIB"]
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """``"10MB"`` -> 10_000_000; ``"1MiB"`` -> 1_048_576; ``"123"`` -> 123 bytes."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"size must not be negative: {text}")
        return text
    m = _SIZE_RE.match(str(text))
    if not m or m.group(2).upper() not in UNITS:
        raise UsageError(f"not a size: {text!r} (examples: 10MB, 512KB, 1MiB, 1234)")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def size_label(size: int) -> str:
    """The canonical label of a size: 10_000_000 -> ``10MB``; odd sizes in bytes."""
    for unit in ("GB", "MB", "KB"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return f"{size}B"
