"""The ETS matrix's cells: which to run, in which order, and whether one fits on this machine.

What it holds: the matrix's dimensions (:data:`ETS_DIMENSIONS`, the small
:data:`QUICK_DIMENSIONS`; the models and pools come from ``labnet.config``), :class:`Cell` (one row of
the matrix, numbered by its place in the full table), :func:`plan_cells`
(the cells a set of filters selects) and the pre-flight check
(:func:`estimate` of memory, disk and file descriptors, :func:`preflight`:
the reason a cell cannot run here, or ``None``).

Pure planning: no servers, no transfers, no CSV.  Must not import
``labnet.measure.matrix_run`` or ``labnet.measure.matrix_table`` (they import this),
``labnet.measure.stress`` (the client pools are named in ``labnet.config``), sockets,
threads, matplotlib or pandas.
"""

from __future__ import annotations

import resource
import shutil
from dataclasses import dataclass
from itertools import product

from labnet.config import CLIENT_POOLS, MB, SERVER_MODELS, parse_size, quick_mode, size_label
from labnet.errors import UsageError

ETS_DIMENSIONS = {
    "ops": ("download", "upload"),
    "volumes": (10 * 10**6, 50 * 10**6, 100 * 10**6),
    "clients": (1, 5, 50),
    "server_workers": (1, 5, 50),
}
QUICK_DIMENSIONS = {
    "ops": ("download", "upload"),
    "volumes": (100 * 10**3, 10**6),
    "clients": (1, 4),
    "server_workers": (1, 2),
}


# --------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One row of the matrix.  ``number`` is its ``Nomor`` in its table.

    ``server_label`` names whose server it measures (``labnet``, ``student``...) and ``dialect``
    the wire dialect spoken: both are part of the key, so one ``ets.csv`` holds several servers.
    ``server_model`` is ``unknown`` for a server run by hand whose model was not given.
    """

    server_model: str
    client_pool: str
    op: str
    volume: int
    clients: int
    server_workers: int
    number: int = 0
    server_label: str = "labnet"
    dialect: str = "labnet"

    @property
    def key(self) -> tuple:
        """The cell's identity, in the order of ``matrix_table.KEY_FIELDS``."""
        return (self.server_label, self.dialect, self.server_model, self.client_pool, self.op, self.volume,
                self.clients, self.server_workers)  # fmt: skip

    def label(self) -> str:
        who = "" if (self.server_label, self.dialect) == ("labnet", "labnet") else f"[{self.server_label}] "
        return (f"#{self.number} {who}{self.server_model} server x{self.server_workers}, {self.op} "
                f"{size_label(self.volume)} x{self.clients} {self.client_pool} clients")  # fmt: skip


def _values(given, base, convert, what: str):
    if given is None:
        return tuple(base)
    if isinstance(given, str | int):
        given = [given]
    out = []
    for v in given:
        for part in str(v).split(",") if isinstance(v, str) else [v]:
            if str(part).strip() == "":
                continue
            value = convert(part.strip() if isinstance(part, str) else part)
            if value not in out:
                out.append(value)
    if not out:
        raise UsageError(f"no {what} selected")
    return tuple(out)


def _choice(choices, what):
    def convert(v):
        v = str(v).lower()
        if v not in choices:
            raise UsageError(f"{what} must be one of {', '.join(choices)}, not {v!r}")
        return v

    return convert


def _count(what):
    def convert(v):
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise UsageError(f"{what} must be whole numbers, not {v!r}") from None
        if not 1 <= n <= 1000:
            raise UsageError(f"{what} must be 1..1000, not {n}")
        return n

    return convert


def _volume(v):
    size = parse_size(v)
    if size < 1:
        raise UsageError("volumes must be at least 1 byte")
    return size


def plan_cells(*, ops=None, volumes=None, clients=None, server_workers=None, server_models=None,
               client_pools=None, quick: bool | None = None, label: str = "labnet",
               dialect: str = "labnet") -> list[Cell]:  # fmt: skip
    """The cells selected by the filters, in run order (server model, client pool, ``Nomor``).

    Each filter is ``None`` (every value of the matrix), one value, a list, or
    a comma-separated string (``"10MB,50MB"``).  Values outside the matrix are
    allowed (``volumes="1MB"``): they are numbered after the matrix's own.
    ``quick`` (default: ``LABNET_QUICK``) selects :data:`QUICK_DIMENSIONS`.
    ``label``/``dialect``: whose server and which dialect (copied into every cell).
    Raises ``UsageError`` for a bad value.
    """
    quick = quick_mode() if quick is None else quick
    base = QUICK_DIMENSIONS if quick else ETS_DIMENSIONS
    sel_ops = _values(ops, base["ops"], _choice(("download", "upload"), "operations"), "operation")
    sel_vol = _values(volumes, base["volumes"], _volume, "volume")
    sel_cli = _values(clients, base["clients"], _count("client workers"), "client worker count")
    sel_srv = _values(server_workers, base["server_workers"], _count("server workers"), "server worker count")
    sel_models = _values(server_models, SERVER_MODELS, _choice(SERVER_MODELS, "server models"), "server model")
    sel_pools = _values(client_pools, ("thread",), _choice(CLIENT_POOLS, "client pools"), "client pool")

    def axis(base_values, selected, key=None):
        extra = sorted((v for v in selected if v not in base_values), key=key)
        return list(base_values) + extra

    ax_ops = axis(base["ops"], sel_ops)
    ax_vol = axis(base["volumes"], sel_vol)
    ax_cli = axis(base["clients"], sel_cli)
    ax_srv = axis(base["server_workers"], sel_srv)
    # The matrix's own cells keep their number in the full table; other values come after it.
    numbers = {combo: i + 1 for i, combo in enumerate(product(base["ops"], base["volumes"], base["clients"],
                                                              base["server_workers"]))}  # fmt: skip
    for combo in product(ax_ops, ax_vol, ax_cli, ax_srv):
        numbers.setdefault(combo, len(numbers) + 1)
    cells = []
    for model in sel_models:
        for pool in sel_pools:
            for combo in product(ax_ops, ax_vol, ax_cli, ax_srv):
                op, vol, cli, srv = combo
                if op in sel_ops and vol in sel_vol and cli in sel_cli and srv in sel_srv:
                    cells.append(Cell(model, pool, op, vol, cli, srv, numbers[combo], label, dialect))
    return cells


# --------------------------------------------------------------------------
# Pre-flight estimate
# --------------------------------------------------------------------------

# Rough, deliberately generous per-unit costs (bytes), measured on Linux/CPython 3.11.
SERVER_BASE_MEM = 60 * MB  # thread server with 50 busy workers peaked near 60 MB
SERVER_WORKER_PROCESS_MEM = 25 * MB  # each worker of the process model
CLIENT_THREAD_MEM = 2 * MB  # buffers of one client thread
CLIENT_PROCESS_MEM = 35 * MB  # one spawned client process (interpreter + labnet)
DISK_MARGIN = 512 * MB
FD_MARGIN = 64


def mem_available() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate(cell: Cell, local_server: bool = True) -> dict:
    """What a cell needs: ``{"memory", "disk", "fds"}`` in bytes / descriptors (an upper estimate).

    Disk: uploads stream into one temporary file per client in the server's
    folder; downloads write one file per client before it is checked and
    deleted; plus the test file in the client and server folders.
    ``local_server=False`` (a server run by hand, maybe on another machine):
    its memory is not counted here.  A student's server that holds whole files
    in memory needs far more than labnet's: ``--memory-limit`` guards that.
    """
    server_mem = 0 if not local_server else SERVER_BASE_MEM + (
        SERVER_WORKER_PROCESS_MEM * cell.server_workers if cell.server_model == "process" else 0)
    client_mem = (CLIENT_PROCESS_MEM if cell.client_pool == "process" else CLIENT_THREAD_MEM) * cell.clients
    disk = cell.clients * cell.volume + 2 * cell.volume
    fds = 3 * cell.clients + 2 * cell.server_workers + 32
    return {"memory": server_mem + client_mem, "disk": disk, "fds": fds}


def preflight(cell: Cell, folders, *, memory: int | None = None, disk_free: int | None = None,
              fd_limit: int | None = None, local_server: bool = True) -> str | None:  # fmt: skip
    """``None`` if the cell can run here, else the reason to skip it (one line).

    ``folders``: the folders the cell writes to (the free space of the
    fullest one counts).  ``memory``/``disk_free``/``fd_limit`` override
    what this machine reports (tests use them); ``local_server``: see :func:`estimate`.
    """
    need = estimate(cell, local_server)
    memory = mem_available() if memory is None else memory
    if memory is not None and need["memory"] > 0.8 * memory:
        return (f"needs about {need['memory'] / MB:.0f} MB of memory, {memory / MB:.0f} MB available "
                f"(MB = 10^6 bytes)")  # fmt: skip
    if disk_free is None:
        frees = []
        for folder in folders:
            try:
                frees.append(shutil.disk_usage(folder).free)
            except OSError:
                continue
        disk_free = min(frees) if frees else None
    if disk_free is not None and need["disk"] > disk_free - DISK_MARGIN:
        return (f"needs about {need['disk'] / MB:.0f} MB of disk, {max(disk_free, 0) / MB:.0f} MB free "
                f"(MB = 10^6 bytes)")  # fmt: skip
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit != resource.RLIM_INFINITY and need["fds"] > fd_limit - FD_MARGIN:
        return f"needs about {need['fds']} file descriptors, the limit is {fd_limit} (ulimit -n)"
    return None
