"""The pool notebooks' grid of stress runs (server workers x clients), each cell repeated, reduced to medians.

One run of a stress test is one sample: the machine's other work, the CPU's clock, the page cache
move it.  So every (server workers, clients) cell of the grid is run ``repeats`` times (3 in quick
mode, 5 at full size: :func:`grid_repeats`), each pool size on a fresh server, and
:func:`grid_summary` gives per cell the median and the min-max of the runs;
:func:`median_runs` picks, per cell, the run whose mean time per client is the median (for the
plots, which draw one run per cell).

Imports the measuring tools (``labnet.measure``: the stress runner and the background server); must not import
matplotlib or the server package.
"""

from __future__ import annotations

import statistics

from labnet.config import quick_mode
from labnet.measure import stress
from labnet.measure.launcher import BackgroundServer


def grid_repeats() -> int:
    """Runs per grid cell: 3 in quick mode, 5 at full size."""
    return 3 if quick_mode() else 5


def run_grid(model: str, volume: str, workers_list, clients_list, repeats: int | None = None, op: str = "download",
             progress=None) -> tuple[list, dict]:  # fmt: skip
    """Stress runs of ``op`` on ``volume`` for every pool size in ``workers_list`` (a fresh ``model``
    server each) and every count in ``clients_list``, ``repeats`` times each.

    Returns ``(runs, peak_rss)``: the ``StressResult``s (``config`` gains ``server_workers`` and
    ``repeat``) and, per pool size, the largest peak resident memory of one server process, read
    just before that server stops.  ``progress``: called after each run.
    """
    repeats = repeats or grid_repeats()
    runs, peak_rss = [], {}
    for workers in workers_list:
        with BackgroundServer(model, workers=workers) as srv:
            for clients in clients_list:
                for repeat in range(repeats):
                    res = stress.run(op, volume, clients, "thread", *srv.address, per_worker_bars=False,
                                     keep_downloads=False)  # fmt: skip
                    res.config.update(server_workers=workers, repeat=repeat)
                    runs.append(res)
                    if progress:
                        progress()
            peak_rss[workers] = max(srv.peak_rss().values())
    return runs, peak_rss


def _cells(runs) -> dict:
    cells: dict[tuple, list] = {}
    for r in runs:
        cells.setdefault((r.config["server_workers"], r.summary["clients"]), []).append(r)
    return cells


def _spread(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def grid_summary(runs) -> list[dict]:
    """Per (server workers, clients): ``repeats``, ``ok``/``clients`` over all runs, and the spread
    (median, min, max over the runs) of the mean time per client (``time``), of the mean waiting
    time (``wait``) and of the mean throughput per client (``throughput``, bytes/s)."""
    rows = []
    for (workers, clients), cell in sorted(_cells(runs).items()):
        rows.append({"server_workers": workers, "clients": clients, "repeats": len(cell),
                     "ok": sum(r.summary["ok"] for r in cell), "failed": sum(r.summary["failed"] for r in cell),
                     "server_ok": sum(r.summary["server_ok"] or 0 for r in cell),
                     "time": _spread(r.summary["time_mean"] for r in cell),
                     "wait": _spread(r.summary["wait_mean"] for r in cell),
                     "throughput": _spread(r.summary["throughput_mean"] for r in cell)})  # fmt: skip
    return rows


def median_runs(runs) -> list:
    """One run per (server workers, clients): the one whose mean time per client is the median of its cell."""
    out = []
    for _, cell in sorted(_cells(runs).items()):
        ordered = sorted(cell, key=lambda r: r.summary["time_mean"] if r.summary["time_mean"] is not None else 1e30)
        out.append(ordered[(len(ordered) - 1) // 2])
    return out
