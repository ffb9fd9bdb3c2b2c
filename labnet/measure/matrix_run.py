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
cell that cannot run here with the reason written in its row; otherwise the
cell's server (:mod:`labnet.measure.matrix_servers`: labnet's
:class:`labnet.measure.launcher.BackgroundServer` or a student's command
under ``Supervised`` -- each started once per model and pool size, whose
cells run together -- or a server run by hand), one
:func:`labnet.measure.stress.run` in the server's dialect with the cell's
time limit, the server's peak RSS (VmHWM of each of its processes, reset
before the cell, and the peak of its whole tree), digest checks (every
transfer against the file's known SHA-256; after an upload cell, the
server's stored file too), then the row is appended to ``ets.csv`` and
flushed.  A row's ``verdict`` is its most serious failure category
(``truncated``, ``out_of_memory``, ``did_not_start``...) or ``ok``.

Server counts ("Jumlah worker server"): ``STATS`` for labnet's protocol; for
a student's dialect the server's own output with ``server_log_regex``, else
"not measured" -- which fails a row of labnet's own server only.

Resource and error rules
------------------------
* A server is stopped on every exit path (its context manager), also on
  ``KeyboardInterrupt`` and ``cancel``; the row of an interrupted cell is not
  written, so a resumed run does it again.  Finished cells (status ``ok`` or
  ``failed``) are never run twice: rerunning with the same ``out_dir``
  resumes.  Skipped and harness-error cells, and cells whose server never
  started (verdict ``did_not_start``: nothing was measured), are tried again.
* ``ets.csv`` is append-only; a last line cut short by a kill is dropped on
  the next run; when the same cell appears twice the last row wins.
* The server's folder is ``out_dir/.server_files`` (removed at the end of a
  complete run) unless ``server_root`` names it; downloads are deleted once
  verified and a student server's stored uploads once verified (those of a
  failed cell stay until the next cell of that size, to look at), so disk use
  is bounded by the largest cell or two.  A command's output stays in
  ``out_dir/server-logs/``.
* A cell whose command server exits or never listens is ``failed`` with the
  tail of its output in the note (``did_not_start``); later cells of the same
  model and pool size fail at once with the same note.

Where things are: this module holds the running (:func:`run_cell`,
:func:`run_matrix`, :class:`MatrixResult`);
:mod:`labnet.measure.matrix_plan` holds the cells and the pre-flight check,
:mod:`labnet.measure.matrix_setup` the server arguments checked,
:mod:`labnet.measure.matrix_servers` where a cell's server comes from,
:mod:`labnet.measure.matrix_table` the columns, the CSV and the Markdown tables
(:func:`ets_table` and :func:`ets_rows` are importable from here too).

Must not import matplotlib at import time (plots are made by
``labnet.measure.plotting``, imported when plots are asked for) nor pandas.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from labnet.config import ENCODINGS, quick_mode
from labnet.errors import LabnetError, UsageError
from labnet.measure import stress
from labnet.measure.files import data_dir, make_test_file, project_dir, test_file_name
from labnet.measure.matrix_plan import Cell, plan_cells, preflight
from labnet.measure.matrix_servers import CellServerError, OwnServers, open_servers
from labnet.measure.matrix_setup import server_setup
from labnet.measure.matrix_table import (
    DETAIL_TYPES,
    UNITS_NOTE,
    append_row,
    cell_verdict,
    display_columns,
    ets_rows,
    ets_table,
    is_finished,
    most_serious,
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
    ``label``/``dialect``: whose server; ``server_kind``: ``labnet``, ``command`` or ``hand``;
    ``server_starts``: ``(model, workers)`` of every server started by this run, in order.
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
    label: str = "labnet"
    dialect: str = "labnet"
    server_kind: str = "labnet"
    server_starts: list = field(default_factory=list)

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
        verdicts: dict[str, int] = {}
        for r in self.rows:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        return {"cells": len(self.cells), "rows": len(self.rows), "ran": self.ran, "resumed": self.resumed,
                "skipped": self.skipped, "cancelled": self.cancelled, "statuses": statuses, "verdicts": verdicts,
                "label": self.label, "dialect": self.dialect, "server": self.server_kind,
                "server_starts": len(self.server_starts),
                "client_failures": self.failures,
                "digest_mismatches": sum(r.get("digest_mismatches") or 0 for r in self.rows),
                "wall_seconds": round(self.wall_seconds, 3), "csv": str(self.csv_path),
                "markdown": str(self.md_path) if self.md_path else None,
                "plots": {k: str(v) for k, v in self.plot_paths.items()}}  # fmt: skip


def base_row(cell: Cell, encoding: str) -> dict:
    """A row of ``ets.csv`` for ``cell`` with every column present and nothing measured yet."""
    row = {k: None for k in DETAIL_TYPES}
    row.update(label=cell.server_label, dialect=cell.dialect, server_model=cell.server_model,
               client_pool=cell.client_pool, op=cell.op, volume_bytes=cell.volume, client_workers=cell.clients,
               server_workers=cell.server_workers, number=cell.number, encoding=encoding, note="", failures="",
               units=UNITS_NOTE)  # fmt: skip
    return row


def finish_row(row: dict) -> dict:
    """Stamp the row, give it its verdict and the assignment's display columns."""
    row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    row["verdict"] = row.get("verdict") or cell_verdict(row)
    row.update(display_columns(row))
    return row


def _student_uploads(folder: Path, name: str) -> list[Path]:
    """The files a student-dialect upload cell stores: ``w00_<name>``, ``w01_<name>``... (``stress.run``)."""
    pattern = re.compile(r"w\d+_" + re.escape(name))
    return [p for p in folder.glob(f"w*_{name}") if pattern.fullmatch(p.name)]


def _prepare_server_files(cell: Cell, stored_root: Path | None, name: str, student: bool, expected: str) -> None:
    """Before a cell: the download's file in the server's folder (labnet's dialect; ``stress.run``
    places it for the others), no stale upload that could pass for a new one."""
    if stored_root is None:
        return
    if student:
        for path in _student_uploads(stored_root, name.lower()):
            path.unlink(missing_ok=True)
    elif cell.op == "download":
        served = make_test_file(stored_root, cell.volume)  # same generator, same bytes
        if file_sha256(served) != expected:
            served.unlink()
            make_test_file(stored_root, cell.volume)
    else:
        (stored_root / name).unlink(missing_ok=True)


def _requests_expected(cell: Cell, records, student: bool, stored_root) -> tuple[int, str]:
    """How many requests the server should count for the cell, and labnet's own extra ones said."""
    reached = sum(1 for r in records if r.ok or r.category not in ("refused", "cancelled", "client_error"))
    if not student or stored_root is not None:
        return reached, ""
    if cell.op == "download":
        return reached + 2, "the counts include labnet's upload and download that put the file on the server"
    return reached + reached, "the counts include labnet's downloads that checked each stored upload"


def server_env_with(env, base64: str | None):
    """The servers' environment with ``LABNET_BASE64`` set to ``base64`` (``None``: ``env`` as it is):
    labnet's servers and any labnet-based command read their codec backend from it."""
    if not base64:
        return env
    return dict(os.environ if env is None else env, LABNET_BASE64=base64)


def run_cell(cell: Cell, *, files_dir, server_root, downloads_dir, encoding: str = "b64",
             time_limit: float = 600.0, timeout: float = 60.0, progress=None, cancel=None,
             server_env=None, servers=None, base64: str | None = None) -> dict:  # fmt: skip
    """Run one cell; return its row (status ``ok``, ``failed``, ``skipped`` or ``error``).

    ``servers``: where the server comes from (:func:`labnet.measure.matrix_servers.open_servers`);
    default a labnet server of the cell's model and pool size in ``server_root``, started for this
    cell and stopped at the end.  ``progress``: passed to :func:`labnet.measure.stress.run`
    (``None``: no bar).
    Raises ``KeyboardInterrupt`` through (after stopping a server it started); a
    cancelled cell raises :class:`Cancelled` so its row is not written.
    """
    if servers is None:
        with OwnServers(root=server_root, env=server_env_with(server_env, base64)) as own:
            return run_cell(cell, files_dir=files_dir, server_root=server_root, downloads_dir=downloads_dir,
                            encoding=encoding, time_limit=time_limit, timeout=timeout, progress=progress,
                            cancel=cancel, servers=own, base64=base64)  # fmt: skip
    setup = servers.setup
    student = setup.dialect != "labnet"
    stored_root = setup.stored_root(Path(server_root))
    row = base_row(cell, encoding)
    row["server_workers_declared"] = cell.server_workers if setup.workers_declared else None
    t0 = time.perf_counter()
    folders = [f for f in (files_dir, stored_root, downloads_dir) if f is not None]
    reason = preflight(cell, folders, local_server=setup.kind != "hand")
    if reason:
        row.update(status="skipped", note=reason, cell_seconds=0.0)
        return finish_row(row)
    name = test_file_name(cell.volume)
    try:
        expected = file_sha256(make_test_file(files_dir, cell.volume))
        _prepare_server_files(cell, stored_root, name, student, expected)
    except OSError as exc:
        row.update(status="error", note=f"cannot write the test file: {exc}", cell_seconds=time.perf_counter() - t0)
        return finish_row(row)
    try:
        lease = servers.lease(cell)
    except CellServerError as exc:
        row.update(status=exc.status, verdict=exc.category, note=exc.note, cell_seconds=time.perf_counter() - t0,
                   memory_mechanism=exc.memory_mechanism, server_peak_tree_rss_bytes=exc.peak_tree_rss or None)
        if exc.status == "failed":  # the server's fault: no client could be served
            row.update(clients_ok=0, clients_failed=cell.clients, failures=f"{exc.category}={cell.clients}",
                       server_measured=False, digests_verified=0, digest_mismatches=0)  # fmt: skip
        return finish_row(row)
    try:
        lease.before()
        result = stress.run(cell.op, cell.volume, cell.clients, cell.client_pool, lease.host, lease.port,
                            encoding=encoding, timeout=timeout, time_limit=time_limit, files_dir=files_dir,
                            downloads_dir=downloads_dir, expected_sha256=expected, keep_downloads=False,
                            progress=progress or False, per_worker_bars=False, cancel=cancel,
                            dialect=setup.dialect, profile=setup.profile, server_root=stored_root,
                            verify_uploads=True, base64=base64)  # fmt: skip
        want, extra_note = _requests_expected(cell, result.records, student, stored_root)
        outcome = lease.finish(result.records, expected_requests=want)
    except (LabnetError, OSError) as exc:
        row.update(status="error", note=f"{type(exc).__name__}: {exc}", cell_seconds=time.perf_counter() - t0)
        return finish_row(row)
    finally:
        lease.release()
    if cancel is not None and cancel.is_set() and any(r.category == "cancelled" for r in result.records):
        raise Cancelled(cell)
    row.update(_judge(cell, result, outcome, setup, stored_root, name, expected, extra_note))
    row["cell_seconds"] = time.perf_counter() - t0
    if student and stored_root is not None and cell.op == "upload":
        if row["status"] == "ok":  # verified: free the disk for the next cell
            for path in _student_uploads(stored_root, name.lower()):
                path.unlink(missing_ok=True)
        elif setup.root is not None:  # the student's own folder (labnet's is removed when the run completes)
            row["note"] += f" | what the server stored is kept to look at: {stored_root}/w*_{name.lower()}"
    return finish_row(row)


def _judge(cell: Cell, result, outcome, setup, stored_root, name: str, expected: str, extra_note: str) -> dict:
    """The row's measured columns, status and verdict from the run's records and what the server did."""
    records = result.records
    if outcome.memory_acted:  # the server was killed for its memory: that is why these clients failed
        for r in records:
            if not r.ok and r.category != "cancelled":
                r.message = f"the server was killed over its memory limit; this client saw {r.category}: {r.message}"
                r.category = "out_of_memory"
    s = result.summary
    failed = {}
    for r in records:
        if not r.ok:
            failed[r.category or "error"] = failed.get(r.category or "error", 0) + 1
    mismatches = sum(1 for r in records if r.category in ("integrity", "truncated", "corrupted"))  # by the bytes
    verified = sum(1 for r in records if r.ok and r.sha256 == expected)
    notes = list(outcome.notes)
    if setup.dialect == "labnet" and cell.op == "upload" and s["ok"] and stored_root is not None:
        stored = stored_root / name
        if not stored.is_file() or file_sha256(stored) != expected:
            mismatches += 1
            notes.append("the server's stored file does not match the uploaded file")
    own = setup.kind == "labnet"
    if setup.dialect == "labnet":  # STATS, labnet's protocol
        server = dict(server_measured=s["server_measured"], server_ok=s["server_ok"], server_failed=s["server_failed"],
                      server_busy=s["server_busy"])  # fmt: skip
    elif outcome.counts is not None:  # the server's own output, with --server-log-regex
        server = dict(server_measured=True, server_ok=outcome.counts[0], server_failed=outcome.counts[1])
        notes.append("server counts from its output (--server-log-regex), after the cell minus before it"
                     + (f"; {extra_note}" if extra_note else ""))  # fmt: skip
    else:
        server = dict(server_measured=False)
    # stress.run says "server counts: not measured" for a dialect without STATS: the column says it already
    server_note = "; ".join(p for p in (s.get("server_note") or "").split("; ")
                            if p and not p.startswith("server counts: not measured"))  # fmt: skip
    if server_note:
        notes.append(server_note)
    if failed:
        first = next(r for r in records if not r.ok)
        notes.append(f"first failure: w{first.worker:02d} {first.category} {first.code} {first.message}".strip())
    bad = s["failed"] or mismatches or outcome.died or (own and (not s["server_measured"] or s["server_failed"]))
    worst = most_serious(failed)
    verdict = "out_of_memory" if outcome.memory_acted else worst or ("server_died" if outcome.died else None)
    return dict(status="failed" if bad else "ok", verdict=verdict, note=" | ".join(notes), clients_ok=s["ok"],
                clients_failed=s["failed"], failures=";".join(f"{k}={v}" for k, v in sorted(failed.items())),
                **server, time_mean_s=s["time_mean"], time_p50_s=s["time_p50"], time_p95_s=s["time_p95"],
                time_max_s=s["time_max"], wait_mean_s=s["wait_mean"], throughput_mean_Bps=s["throughput_mean"],
                throughput_aggregate_Bps=s["throughput_aggregate"], wall_s=s["wall_seconds"],
                digests_verified=verified, digest_mismatches=mismatches, server_peak_rss_max_bytes=outcome.peak_rss_max,
                server_processes=outcome.processes, server_peak_tree_rss_bytes=outcome.peak_tree_rss,
                memory_mechanism=outcome.memory_mechanism)  # fmt: skip


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
               downloads_dir=None, max_cells: int | None = None, server_env=None, dialect: str | None = None,
               profile=None, label: str | None = None, server_cmd=None, server_port: int | None = None,
               server_cwd=None, server_root=None, memory_limit=None, server_log_regex: str | None = None,
               host: str | None = None, port: int | None = None,
               server_start_timeout: float = 30.0, base64: str | None = None) -> MatrixResult:  # fmt: skip
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

    Whose server (:func:`labnet.measure.matrix_setup.server_setup` checks these; the ``labnet
    matrix`` flags of the same names):

    * nothing: labnet's own servers, one per model and pool size (its peak RSS reset before each
      cell: :class:`labnet.measure.matrix_servers.OwnServers`), counted by ``STATS``;
    * ``server_cmd``: a command labnet starts (``"python3 srv.py --port {port} --workers {workers}"``,
      placeholders ``{port}``, ``{workers}``, ``{host}``, ``{root}``, ``{model}``; or
      ``["thread=...", "process=..."]``), supervised, restarted only when the model or pool size
      changes; ``server_port``: the port it always listens on; ``server_cwd``: where it runs;
      ``memory_limit`` (``"500MB"``): stopped when its process tree grows past it;
      ``server_log_regex``: its ok/failed counts from its output (named groups ``ok``, ``failed``);
    * ``dialect`` or ``host``/``port`` without ``server_cmd``: a server someone runs by hand;
      ``server_workers`` is then the one pool size it was started with (declared).

    ``dialect``/``profile``: what the clients speak (``stress.run``); ``label``: the name of these
    rows in the CSV (default ``labnet`` for labnet's servers, else the dialect); ``server_root``:
    the server's folder when it is on this machine (uploads verified by hashing it, downloads'
    files copied in).  ``server_start_timeout``: seconds a command's server may take to listen.
    ``base64``: the codec backend (``"pybase64"``/``"binascii"``) of labnet's clients and servers
    (the servers get it as ``LABNET_BASE64``); ``None``: each one's default.
    """
    quick = quick_mode() if quick is None else quick
    server_env = server_env_with(server_env, base64)
    setup = server_setup(dialect=dialect, profile=profile, label=label, server_cmd=server_cmd,
                         server_port=server_port, server_cwd=server_cwd, server_root=server_root,
                         memory_limit=memory_limit, server_log_regex=server_log_regex, host=host, port=port,
                         server_models=server_models, server_workers=server_workers)  # fmt: skip
    cells = setup.adapt_cells(plan_cells(ops=ops, volumes=volumes, clients=clients, server_workers=server_workers,
                                         server_models=setup.plan_models or server_models,
                                         client_pools=client_pools, quick=quick))  # fmt: skip
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
    default_root = (out_dir / ".server_files").resolve()  # a command may run elsewhere (--server-cwd)
    for folder in (files_dir, downloads_dir, default_root):
        folder.mkdir(parents=True, exist_ok=True)
    limit = cell_time_limit or (60.0 if quick else 600.0)

    done = read_rows(csv_path)
    todo = [c for c in cells if not is_finished(done.get(c.key))]
    result = MatrixResult(rows=[], cells=cells, csv_path=csv_path, md_path=None, resumed=len(cells) - len(todo),
                          label=setup.label, dialect=setup.dialect, server_kind=setup.kind)  # fmt: skip
    if setup.kind in ("command", "labnet"):  # one server per model and pool size: run their cells together
        models = {m: i for i, m in enumerate(dict.fromkeys(c.server_model for c in cells))}
        todo.sort(key=lambda c: (models[c.server_model], c.server_workers))  # stable: Nomor order within
    if max_cells is not None:
        todo = todo[: max(0, int(max_cells))]
    t0 = time.perf_counter()
    outer = None
    if progress:
        from tqdm.auto import tqdm

        outer = tqdm(total=len(cells), initial=result.resumed, desc="ETS matrix", unit="cell", dynamic_ncols=True)
    say = outer.write if outer is not None else (lambda message: print(message, file=sys.stderr))
    servers = open_servers(setup, root=default_root, log_dir=(out_dir / "server-logs").resolve(), env=server_env,
                           say=say, start_timeout=server_start_timeout)  # fmt: skip
    try:
        with servers:
            for cell in todo:
                if cancel is not None and cancel.is_set():
                    result.cancelled = True
                    break
                bar = None
                if progress:
                    bar = ByteBar(total=cell.volume * cell.clients, desc=cell.label(), leave=False)
                try:
                    row = run_cell(cell, files_dir=files_dir, server_root=default_root, downloads_dir=downloads_dir,
                                   encoding=encoding, time_limit=limit, timeout=timeout, progress=bar,
                                   cancel=cancel, server_env=server_env, servers=servers,
                                   base64=base64)  # fmt: skip
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
                    outer.set_postfix_str(f"{row['verdict']} {row['Jumlah worker client yang sukses dan gagal']}")
                if on_row is not None:
                    on_row(row)
    finally:
        if outer is not None:
            outer.close()
        result.server_starts = list(servers.starts)
        result.wall_seconds = time.perf_counter() - t0
        result.rows = [done[c.key] for c in cells if c.key in done]
        all_done = all(is_finished(done.get(c.key)) for c in cells)
        if all_done and not result.cancelled:
            shutil.rmtree(default_root, ignore_errors=True)
    result.md_path = out_dir / "ets.md"
    every_row = list(read_rows(csv_path).values())  # every label of the folder, this run's and others'
    result.md_path.write_text(ets_table(every_row, title="ETS: stress-test table"), encoding="utf-8")
    if plots and every_row:
        from labnet.measure import plotting  # matplotlib: imported only when plots are asked for

        result.figures, result.plot_paths = plotting.save_all(every_row, out_dir)
    return result


__all__ = ["MatrixResult", "Cancelled", "run_cell", "run_matrix", "default_out_dir",
           "ets_table", "ets_rows"]
