"""The assignment's ETS matrix: every cell run, measured and verified, resumable.

>>> result = run_matrix("results/ets", server_models=["thread"], volumes=["10MB"])
>>> print(result.markdown())        # the ETS table(s)
>>> result.rows[0]["throughput_mean_Bps"]

The matrix (:func:`plan_cells`): operation {download, upload} x volume
{10, 50, 100 MB} x client worker pool {1, 5, 50} x server worker pool
{1, 5, 50} = 54 rows per server model (thread, process) and per client pool
kind (thread, process).  Rows are numbered (``Nomor``) by their place in that
54-row table, so a subset keeps the numbers of the full table.  Quick mode
(``quick=True`` or ``LABNET_QUICK=1``) uses the small matrix
:data:`QUICK_DIMENSIONS` (100 KB / 1 MB files, pools of 1 / 2 and 4) that
runs in seconds.  MB = 10**6 bytes everywhere.

Per cell: a pre-flight estimate of memory, disk and file descriptors skips a
cell that cannot run here with the reason written in its row; otherwise a
fresh :class:`labnet.launcher.BackgroundServer`, one :func:`labnet.stress.run`
with the cell's time limit, the server's peak RSS (VmHWM of each of its
processes, read just before it is stopped), digest checks (every transfer
against the file's known SHA-256; after an upload cell, the server's stored
file too), then the row is appended to ``ets.csv`` and flushed.

Resource and error rules
------------------------
* A server is stopped on every exit path (its context manager), also on
  ``KeyboardInterrupt`` and ``cancel``; the row of an interrupted cell is not
  written, so a resumed run does it again.  Finished cells (status ``ok`` or
  ``failed``) are never run twice: rerunning with the same ``out_dir``
  resumes.  Skipped and harness-error cells are tried again.
* ``ets.csv`` is append-only; a last line cut short by a kill is dropped on
  the next run; when the same cell appears twice the last row wins.
* The server's folder is ``out_dir/.server_files`` (removed at the end of a
  complete run), downloads are deleted once verified, so disk use is bounded
  by the largest cell.

Must not import matplotlib at import time (plots are made by
``labnet.plotting``, imported when plots are asked for) nor pandas.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from .errors import LabnetError, UsageError
from .files import data_dir, make_test_file, parse_size, project_dir, quick_mode, size_label, test_file_name
from .launcher import BackgroundServer
from .stress import POOLS as CLIENT_POOLS
from .stress import file_sha256

SERVER_MODELS = ("thread", "process")
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
MB = 10**6
UNITS_NOTE = "MB = 10^6 bytes; time in seconds; throughput per client = file bytes / total seconds of that client"

# The assignment's column names, and an English rendering.
ETS_COLUMNS = (
    ("Nomor", "No."),
    ("Operasi", "Operation"),
    ("Volume", "Volume"),
    ("Jumlah client worker pool", "Client worker pool size"),
    ("Jumlah server worker pool", "Server worker pool size"),
    ("Waktu total per client", "Total time per client"),
    ("Throughput per client", "Throughput per client"),
    ("Jumlah worker client yang sukses dan gagal", "Client workers succeeded / failed"),
    ("Jumlah worker server yang sukses dan gagal", "Server workers succeeded / failed"),
)
ETS_NAMES = tuple(name for name, _ in ETS_COLUMNS)

# Machine-readable columns after the assignment's ones (units in the names: s, bytes, B/s).
DETAIL_TYPES = {
    "server_model": str,
    "client_pool": str,
    "op": str,
    "volume_bytes": int,
    "client_workers": int,
    "server_workers": int,
    "number": int,
    "status": str,
    "note": str,
    "clients_ok": int,
    "clients_failed": int,
    "failures": str,
    "server_measured": bool,
    "server_ok": int,
    "server_failed": int,
    "server_busy": int,
    "time_mean_s": float,
    "time_p50_s": float,
    "time_p95_s": float,
    "time_max_s": float,
    "wait_mean_s": float,
    "throughput_mean_Bps": float,
    "throughput_aggregate_Bps": float,
    "wall_s": float,
    "digests_verified": int,
    "digest_mismatches": int,
    "server_peak_rss_max_bytes": int,
    "server_processes": int,
    "encoding": str,
    "cell_seconds": float,
    "finished_at": str,
    "units": str,
}
CSV_FIELDS = ETS_NAMES + tuple(DETAIL_TYPES)
KEY_FIELDS = ("server_model", "client_pool", "op", "volume_bytes", "client_workers", "server_workers")
DONE_STATUSES = ("ok", "failed")


# --------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One row of the matrix.  ``number`` is its ``Nomor`` in its table."""

    server_model: str
    client_pool: str
    op: str
    volume: int
    clients: int
    server_workers: int
    number: int = 0

    @property
    def key(self) -> tuple:
        return (self.server_model, self.client_pool, self.op, self.volume, self.clients, self.server_workers)

    def label(self) -> str:
        return (f"#{self.number} {self.server_model} server x{self.server_workers}, {self.op} "
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
               client_pools=None, quick: bool | None = None) -> list[Cell]:  # fmt: skip
    """The cells selected by the filters, in run order (server model, client pool, ``Nomor``).

    Each filter is ``None`` (every value of the matrix), one value, a list, or
    a comma-separated string (``"10MB,50MB"``).  Values outside the matrix are
    allowed (``volumes="1MB"``): they are numbered after the matrix's own.
    ``quick`` (default: ``LABNET_QUICK``) selects :data:`QUICK_DIMENSIONS`.
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
                    cells.append(Cell(model, pool, op, vol, cli, srv, numbers[combo]))
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


def estimate(cell: Cell) -> dict:
    """What a cell needs: ``{"memory", "disk", "fds"}`` in bytes / descriptors (an upper estimate).

    Disk: uploads stream into one temporary file per client in the server's
    folder; downloads write one file per client before it is checked and
    deleted; plus the test file in the client and server folders.
    """
    server_mem = SERVER_BASE_MEM + (SERVER_WORKER_PROCESS_MEM * cell.server_workers
                                    if cell.server_model == "process" else 0)  # fmt: skip
    client_mem = (CLIENT_PROCESS_MEM if cell.client_pool == "process" else CLIENT_THREAD_MEM) * cell.clients
    disk = cell.clients * cell.volume + 2 * cell.volume
    fds = 3 * cell.clients + 2 * cell.server_workers + 32
    return {"memory": server_mem + client_mem, "disk": disk, "fds": fds}


def preflight(cell: Cell, folders, *, memory: int | None = None, disk_free: int | None = None,
              fd_limit: int | None = None) -> str | None:  # fmt: skip
    """``None`` if the cell can run here, else the reason to skip it (one line).

    ``folders``: the folders the cell writes to (the free space of the
    fullest one counts).  ``memory``/``disk_free``/``fd_limit`` override
    what this machine reports (tests use them).
    """
    need = estimate(cell)
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


# --------------------------------------------------------------------------
# Rows, the CSV and the table
# --------------------------------------------------------------------------


def _f(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _secs(value) -> str:
    """Seconds with three significant digits at least: 0.00412, 0.412, 4.12, 41.2."""
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 0.01 else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def _counts(ok, failed, busy=None) -> str:
    if ok is None or failed is None:
        return "-"
    text = f"{ok} sukses / {failed} gagal"
    if busy:
        text += f" (+{busy} ditolak BUSY)"
    return text


def display_columns(row: dict) -> dict:
    """The assignment's nine columns of a row, as they are shown (MB = 10^6 bytes)."""
    skipped = row["status"] not in DONE_STATUSES
    time_text = "-" if skipped or row.get("time_mean_s") is None else (
        f"{_secs(row['time_mean_s'])} s (p50 {_secs(row.get('time_p50_s'))}, p95 {_secs(row.get('time_p95_s'))})")
    tput = row.get("throughput_mean_Bps")
    if skipped:
        server = "-"
    elif not row.get("server_measured"):
        server = "tidak terukur (not measured)"
    else:
        server = _counts(row.get("server_ok"), row.get("server_failed"), row.get("server_busy"))
    return {
        "Nomor": str(row["number"]),
        "Operasi": row["op"],
        "Volume": f"{row['volume_bytes'] / MB:g} MB",
        "Jumlah client worker pool": str(row["client_workers"]),
        "Jumlah server worker pool": str(row["server_workers"]),
        "Waktu total per client": time_text,
        "Throughput per client": "-" if skipped or tput is None else f"{tput / MB:.2f} MB/s",
        "Jumlah worker client yang sukses dan gagal": (
            f"dilewati (skipped): {row.get('note', '')}" if skipped else
            _counts(row.get("clients_ok"), row.get("clients_failed"))),
        "Jumlah worker server yang sukses dan gagal": server,
    }


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY_FIELDS)


def _to_csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _from_csv(row: dict) -> dict | None:
    """A typed row from a CSV record; ``None`` if it is incomplete (a line cut short)."""
    if any(row.get(name) is None for name in CSV_FIELDS):
        return None
    out = {name: row[name] for name in ETS_NAMES}
    try:
        for name, kind in DETAIL_TYPES.items():
            text = row[name]
            if kind is str:
                out[name] = text
            elif text == "":
                out[name] = None
            elif kind is bool:
                out[name] = text == "true"
            else:
                out[name] = kind(text)
    except ValueError:
        return None
    if out["status"] not in ("ok", "failed", "skipped", "error"):
        return None
    return out


def read_rows(csv_path) -> dict[tuple, dict]:
    """The finished rows of ``ets.csv`` by cell key (last row of a cell wins); {} if there is no file.

    Raises ``UsageError`` if the file has other columns (another labnet version).
    """
    path = Path(csv_path)
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return {}
    if not text.endswith("\n"):  # the last line was cut short by a kill: ignore it
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != CSV_FIELDS:
        raise UsageError(f"{path} has other columns than this labnet writes; use another --out or --fresh")
    rows = {}
    for record in reader:
        row = _from_csv(record)
        if row is not None:
            rows[row_key(row)] = row
    return rows


def _prepare_csv(path: Path) -> None:
    """Make ``path`` ready for appending: header written, a cut-short last line removed."""
    if path.is_file() and path.stat().st_size > 0:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
        if path.stat().st_size > 0:
            read_rows(path)  # checks the header
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow(CSV_FIELDS)


def append_row(csv_path, row: dict) -> None:
    """Append one row and flush it to disk (a kill right after loses nothing)."""
    with open(csv_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writerow({k: _to_csv_value(row.get(k)) for k in CSV_FIELDS})
        f.flush()
        os.fsync(f.fileno())


def ets_rows(rows) -> list[dict]:
    """Only the assignment's nine columns of each row (a list of dicts, e.g. for a notebook table)."""
    return [{name: row[name] for name in ETS_NAMES} for row in rows]


def ets_table(rows, title: str = "ETS") -> str:
    """The ETS table(s) in Markdown: one table per (server model, client pool), rows by ``Nomor``.

    Headers carry the assignment's Indonesian names with an English rendering;
    the notes under each table say MB = 10^6 bytes and how each column is measured.
    """
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["server_model"], row["client_pool"]), []).append(row)
    out = [f"# {title}", "", f"Units: {UNITS_NOTE}.", ""]
    for (model, pool) in sorted(groups, key=lambda g: (SERVER_MODELS.index(g[0]) if g[0] in SERVER_MODELS else 9,
                                                        g[1])):  # fmt: skip
        group = sorted(groups[(model, pool)], key=lambda r: r["number"])
        out += [f"## Server {model} pool, client {pool} pool ({len(group)} rows)", ""]
        out.append("| " + " | ".join(f"{name} ({english})" for name, english in ETS_COLUMNS) + " |")
        out.append("|" + "|".join("---:" if i in (0, 2, 3, 4) else "---" for i in range(len(ETS_COLUMNS))) + "|")
        for row in group:
            cells = [str(row[name]).replace("|", "\\|") for name in ETS_NAMES]
            out.append("| " + " | ".join(cells) + " |")
        out += [
            "",
            "Notes: MB = 10^6 bytes. *Waktu total per client*: mean over the successful clients of the time from "
            "the common start to the verified end of that client's transfer (p50/p95 in brackets), queueing for "
            "a server worker included. *Throughput per client*: mean over successful clients of file bytes / that "
            "client's total seconds. *Jumlah worker server*: requests the server counted as succeeded / failed, "
            "measured by STATS before and after the cell (connections refused with BUSY shown apart). "
            "Every transfer's SHA-256 is checked against the file's.",
            "",
        ]
        notes = [r for r in group if r.get("note")]
        for r in notes:
            out.append(f"* Nomor {r['number']}: {r['status']}: {r['note']}")
        if notes:
            out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


@dataclass
class MatrixResult:
    """A matrix run.  ``rows``: one typed dict per selected cell that has a row, in table order.

    ``ran``: cells run now; ``resumed``: cells found finished in the CSV;
    ``skipped``: cells skipped by the pre-flight check; ``figures``: name ->
    matplotlib Figure (empty without plots); ``plot_paths``: name -> PNG path.
    """

    rows: list[dict]
    cells: list[Cell]
    csv_path: Path
    md_path: Path | None
    ran: int = 0
    resumed: int = 0
    skipped: int = 0
    cancelled: bool = False
    wall_seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    plot_paths: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every selected cell has a row."""
        return len(self.rows) == len(self.cells)

    @property
    def failures(self) -> int:
        """Client workers that failed, over all rows (skipped rows count 0)."""
        return sum(r.get("clients_failed") or 0 for r in self.rows)

    def table(self) -> list[dict]:
        """The assignment's columns of every row (list of dicts)."""
        return ets_rows(self.rows)

    def markdown(self) -> str:
        return ets_table(self.rows)

    def summary(self) -> dict:
        statuses: dict[str, int] = {}
        for r in self.rows:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        return {"cells": len(self.cells), "rows": len(self.rows), "ran": self.ran, "resumed": self.resumed,
                "skipped": self.skipped, "cancelled": self.cancelled, "statuses": statuses,
                "client_failures": self.failures,
                "digest_mismatches": sum(r.get("digest_mismatches") or 0 for r in self.rows),
                "wall_seconds": round(self.wall_seconds, 3), "csv": str(self.csv_path),
                "markdown": str(self.md_path) if self.md_path else None,
                "plots": {k: str(v) for k, v in self.plot_paths.items()}}  # fmt: skip


def _base_row(cell: Cell, encoding: str) -> dict:
    row = {k: None for k in DETAIL_TYPES}
    row.update(server_model=cell.server_model, client_pool=cell.client_pool, op=cell.op, volume_bytes=cell.volume,
               client_workers=cell.clients, server_workers=cell.server_workers, number=cell.number,
               encoding=encoding, note="", failures="", units=UNITS_NOTE)  # fmt: skip
    return row


def _finish_row(row: dict) -> dict:
    row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    row.update(display_columns(row))
    return row


def run_cell(cell: Cell, *, files_dir, server_root, downloads_dir, encoding: str = "b64",
             time_limit: float = 600.0, timeout: float = 60.0, progress=None, cancel=None,
             server_env=None) -> dict:  # fmt: skip
    """Run one cell with a fresh server; return its row (status ``ok``, ``failed``, ``skipped`` or ``error``).

    ``progress``: passed to :func:`labnet.stress.run` (``None``: no bar).
    Raises ``KeyboardInterrupt`` through (after stopping the server); a
    cancelled cell raises :class:`Cancelled` so its row is not written.
    """
    from . import stress

    row = _base_row(cell, encoding)
    t0 = time.perf_counter()
    reason = preflight(cell, [files_dir, server_root, downloads_dir])
    if reason:
        row.update(status="skipped", note=reason, cell_seconds=0.0)
        return _finish_row(row)
    name = test_file_name(cell.volume)
    try:
        local = make_test_file(files_dir, cell.volume)
        expected = file_sha256(local)
        if cell.op == "download":
            served = make_test_file(server_root, cell.volume)  # same generator, same bytes
            if file_sha256(served) != expected:
                served.unlink()
                make_test_file(server_root, cell.volume)
        else:
            (Path(server_root) / name).unlink(missing_ok=True)
    except OSError as exc:
        row.update(status="error", note=f"cannot write the test file: {exc}", cell_seconds=time.perf_counter() - t0)
        return _finish_row(row)
    server = BackgroundServer(cell.server_model, cell.server_workers, root=server_root, status_every=0,
                              max_waiting=max(128, 2 * cell.clients), env=server_env)  # fmt: skip
    try:
        with server:
            result = stress.run(cell.op, cell.volume, cell.clients, cell.client_pool, *server.address,
                                encoding=encoding, timeout=timeout, time_limit=time_limit, files_dir=files_dir,
                                downloads_dir=downloads_dir, expected_sha256=expected, keep_downloads=False,
                                progress=progress or False, per_worker_bars=False, cancel=cancel)  # fmt: skip
            peaks = server.peak_rss()  # VmHWM of every server process, just before it stops
    except (LabnetError, OSError) as exc:
        row.update(status="error", note=f"{type(exc).__name__}: {exc}", cell_seconds=time.perf_counter() - t0)
        return _finish_row(row)
    finally:
        server.cleanup_log()
    if cancel is not None and cancel.is_set() and any(r.category == "cancelled" for r in result.records):
        raise Cancelled(cell)
    s = result.summary
    mismatches = sum(1 for r in result.records if r.category == "integrity")
    verified = sum(1 for r in result.records if r.ok and r.sha256 == expected)
    notes = []
    if cell.op == "upload" and s["ok"]:
        stored = Path(server_root) / name
        if not stored.is_file() or file_sha256(stored) != expected:
            mismatches += 1
            notes.append("the server's stored file does not match the uploaded file")
    if s.get("server_note"):
        notes.append(s["server_note"])
    if s["failures"]:
        first = next(r for r in result.records if not r.ok)
        notes.append(f"first failure: w{first.worker:02d} {first.category} {first.code} {first.message}".strip())
    failures = ";".join(f"{k}={v}" for k, v in sorted(s["failures"].items()))
    bad = s["failed"] or mismatches or not s["server_measured"] or s["server_failed"]
    row.update(status="failed" if bad else "ok", note=" | ".join(notes), clients_ok=s["ok"],
               clients_failed=s["failed"], failures=failures, server_measured=s["server_measured"],
               server_ok=s["server_ok"], server_failed=s["server_failed"], server_busy=s["server_busy"],
               time_mean_s=s["time_mean"], time_p50_s=s["time_p50"], time_p95_s=s["time_p95"],
               time_max_s=s["time_max"], wait_mean_s=s["wait_mean"], throughput_mean_Bps=s["throughput_mean"],
               throughput_aggregate_Bps=s["throughput_aggregate"], wall_s=s["wall_seconds"],
               digests_verified=verified, digest_mismatches=mismatches,
               server_peak_rss_max_bytes=max(peaks.values()) if peaks else None, server_processes=len(peaks),
               cell_seconds=time.perf_counter() - t0)  # fmt: skip
    return _finish_row(row)


class Cancelled(Exception):
    """A cell ended early because the run was cancelled (its row is not written)."""

    def __init__(self, cell: Cell):
        super().__init__(f"cancelled during {cell.label()}")
        self.cell = cell


def default_out_dir() -> Path:
    return project_dir() / "results" / ("ets-quick" if quick_mode() else "ets")


def run_matrix(out_dir=None, *, ops=None, volumes=None, clients=None, server_workers=None, server_models=None,
               client_pools=None, quick: bool | None = None, encoding: str = "b64",
               cell_time_limit: float | None = None, timeout: float = 60.0, fresh: bool = False,
               plots: bool = True, progress=True, cancel=None, on_row=None, files_dir=None,
               downloads_dir=None, max_cells: int | None = None, server_env=None) -> MatrixResult:  # fmt: skip
    """Run the selected cells (see :func:`plan_cells` for the filters), resuming ``out_dir/ets.csv``.

    Writes ``out_dir/ets.csv`` (a row appended per finished cell),
    ``out_dir/ets.md`` and, with ``plots``, the PNGs of :mod:`labnet.plotting`.
    ``cell_time_limit``: seconds a cell's transfers may take (default 600,
    quick 60); ``timeout``: seconds without progress before a transfer fails.
    ``fresh``: start a new CSV (the old one is kept as ``ets.csv.bak``).
    ``progress``: ``True`` for a cells bar and a byte bar per cell, ``False``.
    ``cancel``: an object with ``is_set()``; when set, the cell in progress
    stops early, its row is not written, and the run returns (``cancelled``).
    ``on_row(row)``: called after each row is written.  ``max_cells``: run at
    most this many cells now (the rest on the next call).
    ``files_dir``/``downloads_dir``: default the project's ``client_files/``
    and ``client_downloads/``.  ``server_env``: environment of the servers.
    """
    quick = quick_mode() if quick is None else quick
    cells = plan_cells(ops=ops, volumes=volumes, clients=clients, server_workers=server_workers,
                       server_models=server_models, client_pools=client_pools, quick=quick)  # fmt: skip
    if encoding not in ("b64", "raw"):
        raise UsageError(f"encoding must be b64 or raw, not {encoding!r}")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "ets.csv"
    if fresh and csv_path.exists():
        os.replace(csv_path, out_dir / "ets.csv.bak")
    _prepare_csv(csv_path)
    files_dir = Path(files_dir) if files_dir is not None else data_dir("client_files")
    downloads_dir = Path(downloads_dir) if downloads_dir is not None else data_dir("client_downloads")
    server_root = out_dir / ".server_files"
    for folder in (files_dir, downloads_dir, server_root):
        folder.mkdir(parents=True, exist_ok=True)
    limit = cell_time_limit or (60.0 if quick else 600.0)

    done = read_rows(csv_path)
    todo = [c for c in cells if done.get(c.key, {}).get("status") not in DONE_STATUSES]
    result = MatrixResult(rows=[], cells=cells, csv_path=csv_path, md_path=None,
                          resumed=len(cells) - len(todo))  # fmt: skip
    if max_cells is not None:
        todo = todo[: max(0, int(max_cells))]
    t0 = time.perf_counter()
    outer = None
    if progress:
        from tqdm.auto import tqdm

        outer = tqdm(total=len(cells), initial=result.resumed, desc="ETS matrix", unit="cell", dynamic_ncols=True)
    try:
        for cell in todo:
            if cancel is not None and cancel.is_set():
                result.cancelled = True
                break
            bar = None
            if progress:
                from .progress import ByteBar

                bar = ByteBar(total=cell.volume * cell.clients, desc=cell.label(), leave=False)
            try:
                row = run_cell(cell, files_dir=files_dir, server_root=server_root, downloads_dir=downloads_dir,
                               encoding=encoding, time_limit=limit, timeout=timeout, progress=bar, cancel=cancel,
                               server_env=server_env)  # fmt: skip
            except Cancelled:
                result.cancelled = True
                break
            finally:
                if bar is not None:
                    bar.close()
            append_row(csv_path, row)
            done[cell.key] = row
            result.ran += 1
            result.skipped += row["status"] == "skipped"
            if outer is not None:
                outer.update(1)
                outer.set_postfix_str(f"{row['status']} {row['Jumlah worker client yang sukses dan gagal']}")
            if on_row is not None:
                on_row(row)
    finally:
        if outer is not None:
            outer.close()
        result.wall_seconds = time.perf_counter() - t0
        result.rows = [done[c.key] for c in cells if c.key in done]
        all_done = all(done.get(c.key, {}).get("status") in DONE_STATUSES for c in cells)
        if all_done and not result.cancelled:
            shutil.rmtree(server_root, ignore_errors=True)
    result.md_path = out_dir / "ets.md"
    result.md_path.write_text(ets_table(result.rows, title="ETS: stress-test table"), encoding="utf-8")
    if plots and result.rows:
        from . import plotting

        result.figures, result.plot_paths = plotting.save_all(result.rows, out_dir)
    return result


# --------------------------------------------------------------------------
# CLI: labnet matrix [filters] --out DIR
# --------------------------------------------------------------------------


def add_cli(sub) -> None:
    """Add ``labnet matrix`` to the CLI's subparsers (``func`` = :func:`cli_main`)."""
    from .cli import _seconds

    p = sub.add_parser("matrix", help="run the ETS matrix (or a part) and write ets.csv, ets.md and plots",
                       description="Runs the assignment's table: operation x volume x client workers x server "
                                   "workers, per server model and client pool kind, a fresh server per cell. "
                                   "Resumes DIR/ets.csv.  MB = 10^6 bytes.")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default results/ets, or results/ets-quick)")
    p.add_argument("--ops", help="operations, e.g. download,upload")
    p.add_argument("--volumes", help="file sizes, e.g. 10MB,50MB (MB = 10^6 bytes)")
    p.add_argument("--clients", help="client worker pool sizes, e.g. 1,5,50")
    p.add_argument("--server-workers", help="server worker pool sizes, e.g. 1,5,50")
    p.add_argument("--models", help="server models: thread,process (default both)")
    p.add_argument("--client-pools", help="client pool kinds: thread,process (default thread)")
    p.add_argument("--quick", action="store_true", help="small files and pools (also LABNET_QUICK=1)")
    p.add_argument("--encoding", choices=["b64", "raw"], default="b64")
    p.add_argument("--time-limit", type=_seconds, default=None, help="seconds per cell (default 600, quick 60)")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds without progress before a transfer fails")
    p.add_argument("--fresh", action="store_true", help="start a new ets.csv instead of resuming")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the table")
    p.set_defaults(func=cli_main)


def cli_main(args) -> int:
    try:
        result = run_matrix(args.out, ops=args.ops, volumes=args.volumes, clients=args.clients,
                            server_workers=args.server_workers, server_models=args.models,
                            client_pools=args.client_pools, quick=True if args.quick else None,
                            encoding=args.encoding, cell_time_limit=args.time_limit or None,
                            timeout=args.timeout or 60.0, fresh=args.fresh, plots=not args.no_plots,
                            progress=not args.no_progress)  # fmt: skip
    except KeyboardInterrupt:
        print("labnet: interrupted; finished rows are in ets.csv: run the same command again to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(result.markdown())
        print(f"\n{summary['rows']} rows ({summary['ran']} run now, {summary['resumed']} resumed, "
              f"{summary['skipped']} skipped), {summary['client_failures']} client failures, "
              f"{summary['digest_mismatches']} digest mismatches, {summary['wall_seconds']:.1f} s")  # fmt: skip
        print(f"wrote {result.csv_path} and {result.md_path}"
              + (f" and {len(result.plot_paths)} plots" if result.plot_paths else ""))  # fmt: skip
    bad = summary["client_failures"] or summary["digest_mismatches"] or summary["statuses"].get("failed") \
        or summary["statuses"].get("error")
    return 1 if bad else 0


__all__ = ["Cell", "MatrixResult", "plan_cells", "preflight", "estimate", "run_cell", "run_matrix", "read_rows",
           "append_row", "ets_table", "ets_rows", "display_columns", "ETS_COLUMNS", "CSV_FIELDS", "UNITS_NOTE"]
