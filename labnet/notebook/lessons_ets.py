"""Notebook 06's helpers around the ETS table: what to run, a glossary, aggregate throughput, a time estimate.

What it holds:

* :func:`selection` -- where the table goes and which rows the notebook runs (the preset or all of
  them), quick mode and the tests' output folder included, so the notebook's cell shows only the choice.
* :func:`glossary` -- the assignment's Indonesian terms next to the English ones, generated from the
  table's own column definitions (``matrix_table.ETS_COLUMNS``) and from the words its cells use
  (:data:`CELL_WORDS`, each checked against what ``matrix_table.display_columns`` writes), so the
  glossary and the table cannot drift apart.
* :func:`aggregate_rows` -- per row, the measured aggregate throughput (all bytes / the run's wall
  time) next to "throughput per client x successful clients" (a mean of ratios times a count),
  and how far apart they are.
* :func:`estimate` -- how long the whole table would take on this machine, fitted on the rows it has
  just measured (seconds per row = fixed cost + bytes moved / rate).
* :func:`row_spread` -- one row of the table run several times, to see how much a row moves.
* :func:`servers_left` -- labnet servers still running under this kernel (the clean-up check).

Imports the measuring tools (``labnet.measure``); must not import matplotlib or the server package.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from labnet.config import MB, quick_mode, size_label
from labnet.measure import launcher, matrix_plan, matrix_table, stress
from labnet.measure.launcher import BackgroundServer
from labnet.measure.matrix_run import default_out_dir
from labnet.notebook.envcheck import lab_dimensions
from labnet.procutil import process_tree

# Words the table's cells use besides the column names: Indonesian -> English.  Every one must appear
# in what matrix_table.display_columns writes for some row (tests/notebook/test_lessons_ets.py).
CELL_WORDS = (
    ("sukses", "succeeded"),
    ("gagal", "failed"),
    ("ditolak BUSY", "refused with BUSY (the server's waiting list was full)"),
    ("dilewati", "skipped (the row was not run; its note says why, e.g. the pre-flight check)"),
    ("tidak terukur", "not measured (the server's own counts could not be read)"),
)


def selection(full: bool = False) -> tuple[Path, dict]:
    """``(out_dir, selection)`` for ``run_matrix(out_dir, **selection)``.

    ``full``: every row (108 at full size); else the preset, the smallest volume only (and in quick
    mode downloads only).  Both models, thread client pool.  ``out_dir``: ``$LABNET_ETS_OUT`` (the tests set it) or the project's results folder.
    """
    out = Path(os.environ.get("LABNET_ETS_OUT") or default_out_dir())
    preset = {} if full else {"volumes": [lab_dimensions()["volumes"][0]]}
    if quick_mode() and not full:
        preset["ops"] = ["download"]  # quick mode (the tests): half the rows, the notebook well under a minute
    return out, dict(server_models=["thread", "process"], client_pools=["thread"], **preset)


def glossary() -> list[tuple[str, str]]:
    """``(Indonesian, English)``: the assignment's column names, then the words used in the cells."""
    return list(matrix_table.ETS_COLUMNS) + list(CELL_WORDS)


def glossary_markdown() -> str:
    lines = ["| Bahasa Indonesia (the assignment) | English |", "|---|---|"]
    lines += [f"| {indonesian} | {english} |" for indonesian, english in glossary()]
    return "\n".join(lines)


def aggregate_rows(rows) -> list[dict]:
    """For every finished row with successful clients: ``product`` = throughput per client (the mean over
    clients of bytes / that client's time) x successful clients, against the measured ``aggregate``
    (all bytes moved / the run's wall time), in bytes/s, and ``overstated`` = product / aggregate."""
    out = []
    for r in rows:
        if r.get("status") not in matrix_table.DONE_STATUSES or not r.get("clients_ok"):
            continue
        mean, agg = r.get("throughput_mean_Bps"), r.get("throughput_aggregate_Bps")
        if not mean or not agg:
            continue
        product = mean * r["clients_ok"]
        out.append({"number": r["number"], "server_model": r["server_model"], "op": r["op"],
                    "volume": f"{r['volume_bytes'] / MB:g} MB", "clients": r["client_workers"],
                    "server_workers": r["server_workers"], "clients_ok": r["clients_ok"], "per_client": mean,
                    "product": product, "aggregate": agg, "overstated": product / agg})  # fmt: skip
    return out


def estimate(rows, full_selection: dict) -> dict:
    """How long ``run_matrix(**full_selection)`` takes on this machine, from the rows measured so far.

    Fits ``cell_seconds = fixed + moved / rate`` (``moved`` = volume x client workers) on the finished
    rows (least squares), then sums the prediction over the rows of ``full_selection`` that are not in
    ``rows`` yet, plus the measured time of those that are.  Returns ``{fixed_s, rate_Bps, measured_s,
    remaining_s, remaining_rows, total_s, rows_fitted}``; ``rate_Bps`` None when the fit is not usable
    (then the mean time per measured row is used).
    """
    done = {(r["server_model"], r["op"], r["volume_bytes"], r["client_workers"], r["server_workers"]): r
            for r in rows if r.get("status") in matrix_table.DONE_STATUSES}  # fmt: skip
    xs = [k[2] * k[3] for k in done]
    ys = [r["cell_seconds"] for r in done.values()]
    fixed, rate = (statistics.mean(ys) if ys else 0.0), None
    if len(set(xs)) >= 2:
        slope, intercept = statistics.linear_regression(xs, ys)
        if slope > 0:
            fixed, rate = max(0.0, intercept), 1 / slope
    cells = matrix_plan.plan_cells(**full_selection)
    remaining = [c for c in cells
                 if (c.server_model, c.op, c.volume, c.clients, c.server_workers) not in done]  # fmt: skip
    remaining_s = sum(fixed + (c.volume * c.clients / rate if rate else 0.0) for c in remaining)
    measured_s = sum(ys)
    return {"fixed_s": fixed, "rate_Bps": rate, "measured_s": measured_s, "remaining_s": remaining_s,
            "remaining_rows": len(remaining), "total_s": measured_s + remaining_s, "rows_fitted": len(ys),
            "total_rows": len(cells)}  # fmt: skip


def default_repeats() -> int:
    """Runs per repeated measurement: 3 in quick mode, 5 at full size."""
    return 3 if quick_mode() else 5


def queued_row(rows) -> dict:
    """The finished row where clients queue most: one server worker, the most client workers (downloads
    first, the thread server first)."""
    done = [r for r in rows if r.get("status") in matrix_table.DONE_STATUSES and r["server_workers"] == 1]
    return max(done, key=lambda r: (r["client_workers"], r["op"] == "download", r["server_model"] == "thread"))


def row_spread(row: dict, repeats: int | None = None, progress=None) -> dict:
    """Run the stress test of ``row`` (a table row: model, op, volume, clients, server workers) ``repeats``
    times on one fresh server (3 in quick mode, 5 otherwise); the spread of its time per client (mean,
    p50, p95) and of its aggregate throughput over the runs.  Returns ``{repeats, time_mean, time_p50,
    time_p95, aggregate}``, each ``{median, min, max, n}``."""
    repeats = repeats or default_repeats()
    summaries = []
    with BackgroundServer(row["server_model"], workers=row["server_workers"]) as srv:
        for _ in range(repeats):
            res = stress.run(row["op"], size_label(row["volume_bytes"]), row["client_workers"], row["client_pool"],
                             *srv.address, per_worker_bars=False, keep_downloads=False, progress=False)  # fmt: skip
            summaries.append(res.summary)
            if progress:
                progress()

    def spread(key):
        values = [s[key] for s in summaries if s[key] is not None]
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}

    return {"repeats": repeats, "time_mean": spread("time_mean"), "time_p50": spread("time_p50"),
            "time_p95": spread("time_p95"), "aggregate": spread("throughput_aggregate")}  # fmt: skip


def servers_left() -> list[int]:
    """PIDs of labnet servers still running under this process (none after ``run_matrix``)."""
    launcher.stop_all()
    left = []
    for pid in process_tree(os.getpid())[1:]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"labnet" in cmdline and b"server" in cmdline:
            left.append(pid)
    return left
