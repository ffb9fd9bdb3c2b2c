"""The assignment's ETS matrix: every cell run, measured and verified, resumable.

>>> result = run_matrix("results/ets", server_models=["thread"], volumes=["10MB"])
>>> print(result.markdown())        # the ETS table(s)
>>> result.rows[0]["throughput_mean_Bps"]

The matrix (:func:`labnet.measure.matrix_plan.plan_cells`): operation {download, upload} x volume
{10, 50, 100 MB} x client worker pool {1, 5, 50} x server worker pool
{1, 5, 50} = 54 rows per server model (thread, process) and per client pool
kind (thread, process).  Rows are numbered (``Nomor``) by their place in that
54-row table, so a subset keeps the numbers of the full table.  Quick mode
(``quick=True`` or ``LABNET_QUICK=1``) uses the small matrix
``matrix_plan.QUICK_DIMENSIONS`` (100 KB / 1 MB files, pools of 1 / 2 and 4) that
runs in seconds.  MB = 10**6 bytes everywhere.

Per cell: a pre-flight estimate of memory, disk and file descriptors skips a
cell that cannot run here with the reason written in its row; otherwise a
fresh :class:`labnet.measure.launcher.BackgroundServer`, one :func:`labnet.measure.stress.run`
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

Where things are: this module holds the running (:func:`run_cell`,
:func:`run_matrix`, :class:`MatrixResult`) and the ``labnet matrix`` CLI;
:mod:`labnet.measure.matrix_plan` holds the cells and the pre-flight check,
:mod:`labnet.measure.matrix_table` the columns, the CSV and the Markdown tables
(:func:`ets_table` and :func:`ets_rows` are importable from here too).

Must not import matplotlib at import time (plots are made by
``labnet.measure.plotting``, imported when plots are asked for) nor pandas.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from labnet.config import ENCODINGS, quick_mode
from labnet.errors import LabnetError, UsageError
from labnet.measure import stress
from labnet.measure.files import data_dir, make_test_file, project_dir, test_file_name
from labnet.measure.launcher import BackgroundServer
from labnet.measure.matrix_plan import Cell, plan_cells, preflight
from labnet.measure.matrix_table import (
    DETAIL_TYPES,
    DONE_STATUSES,
    UNITS_NOTE,
    append_row,
    display_columns,
    ets_rows,
    ets_table,
    prepare_csv,
    read_rows,
)
from labnet.measure.progress import ByteBar
from labnet.measure.stress import file_sha256

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

    ``progress``: passed to :func:`labnet.measure.stress.run` (``None``: no bar).
    Raises ``KeyboardInterrupt`` through (after stopping the server); a
    cancelled cell raises :class:`Cancelled` so its row is not written.
    """
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
    """Run the selected cells (see :func:`labnet.measure.matrix_plan.plan_cells` for the filters), resuming ``out_dir/ets.csv``.

    Writes ``out_dir/ets.csv`` (a row appended per finished cell),
    ``out_dir/ets.md`` and, with ``plots``, the PNGs of :mod:`labnet.measure.plotting`.
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
    if encoding not in ENCODINGS:
        raise UsageError(f"encoding must be b64 or raw, not {encoding!r}")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "ets.csv"
    if fresh and csv_path.exists():
        os.replace(csv_path, out_dir / "ets.csv.bak")
    prepare_csv(csv_path)
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
        from labnet.measure import plotting  # matplotlib: imported only when plots are asked for

        result.figures, result.plot_paths = plotting.save_all(result.rows, out_dir)
    return result


__all__ = ["MatrixResult", "Cancelled", "run_cell", "run_matrix", "default_out_dir",
           "ets_table", "ets_rows"]
