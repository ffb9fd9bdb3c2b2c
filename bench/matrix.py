"""ETS matrix benchmark: the assignment's full table, timed, verified, with the servers' peak memory.

Run with ``make bench`` (or ``.venv/bin/python bench/matrix.py [filters]``).

What it does: ``labnet.measure.matrix_run.run_matrix`` over the whole ETS matrix --
2 server models (thread, process) x 54 rows (operation x 10/50/100 MB x 1/5/50
client workers x 1/5/50 server workers), client workers in a thread pool --
108 cells, one server per model and pool size (started once; its cells
run together).  Every transfer's SHA-256 is checked against the file's (and,
after an upload cell, the server's stored copy); each server process's peak
RSS is its ``VmHWM``, reset before the cell and read at its end (the maximum
over the parent and, for the process model, every worker).

Reported: total wall time, cells per status, failed client workers, digest
mismatches, and per cell the time and the server's peak RSS.  Targets on the
2-core machine: zero failures and mismatches, the whole matrix under 3
minutes, every server process under 64 MB peak RSS (MB = 10^6 bytes).  The
exit status is 1 if a target is missed.

The floor for this machine (printed first, measured, ``--no-floor`` skips
it): the bytes the cells move divided by what plain code doing the same
verified work moves here (``bench/heavy.py``'s thread-pool reference, 10
concurrent 100 MB base64 transfers per operation), plus the start-up of
one labnet server per model and pool size (measured: started and stopped
once per kind).  Until 2026-12-02 every cell had a server of its own: a
start and a stop cost 0.6-0.7 s, 73 s of a 236 s matrix on a quiet machine.
Measured since, three quiet runs on the 2-core VM: 174.6, 178.8 and 180.4 s
against floors of 132-141 s (1.27-1.33x), 0 failures, 0 mismatches, peak RSS
56.3-61.0 MB.  No server can run the matrix faster than that on
this machine; labnet's distance is its wall time over the floor.

Filters (``--volumes 100MB --clients 50`` ...) run a part of the matrix; the
wall-time target then does not apply.  Results go to ``results/bench-matrix``
(ets.csv, ets.md, report.json); a new run starts a fresh CSV unless
``--resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labnet.config import MB  # noqa: E402
from labnet.errors import UsageError  # noqa: E402
from labnet.measure import matrix_plan, matrix_run, matrix_table  # noqa: E402
from labnet.measure.launcher import BackgroundServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heavy import reference_mbps  # noqa: E402  (bench/heavy.py: the plain reference servers)

TARGET_WALL = 3 * 60
TARGET_RSS = 64 * MB


def machine_floor(cells) -> tuple[float, str]:
    """(seconds, how): the least wall time these cells can take here (see the module doc)."""
    mbps = reference_mbps(ops=sorted({c.op for c in cells}))
    moving = sum(c.clients * c.volume / MB / mbps[c.op] for c in cells)
    startup = {}
    with tempfile.TemporaryDirectory(prefix="labnet-floor-") as root:
        for kind in sorted({(c.server_model, c.server_workers) for c in cells}):
            t0 = time.perf_counter()
            with BackgroundServer(kind[0], workers=kind[1], root=root, status_every=0):
                startup[kind] = time.perf_counter() - t0
    starting = sum(startup.values())  # one server per model and pool size, as run_matrix starts them
    how = (f"moving {sum(c.clients * c.volume for c in cells) / 1e9:.1f} GB at the reference's "
           + ", ".join(f"{op} {v:.0f} MB/s" for op, v in mbps.items())
           + f" = {moving:.0f} s, plus server start-up {starting:.0f} s "
           + f"({min(startup.values()):.2f}-{max(startup.values()):.2f} s per server)")  # fmt: skip
    return moving + starting, how


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "results" / "bench-matrix"))
    p.add_argument("--ops")
    p.add_argument("--volumes")
    p.add_argument("--clients")
    p.add_argument("--server-workers")
    p.add_argument("--models")
    p.add_argument("--client-pools", default="thread")
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per cell")
    p.add_argument("--resume", action="store_true", help="keep the rows of an earlier run")
    p.add_argument("--plots", action="store_true", help="draw the PNG plots too")
    p.add_argument("--no-floor", action="store_true", help="skip measuring this machine's floor")
    args = p.parse_args(argv)
    filters = dict(ops=args.ops, volumes=args.volumes, clients=args.clients, server_workers=args.server_workers,
                   server_models=args.models, client_pools=args.client_pools)  # fmt: skip
    partial = any(v for k, v in filters.items() if k != "client_pools") or args.client_pools != "thread"
    try:
        cells = matrix_plan.plan_cells(quick=False, **filters)
    except UsageError as exc:
        print(f"bench/matrix.py: {exc}", file=sys.stderr)
        return 2
    print(f"ETS matrix benchmark: {len(cells)} cells{' (a part of the matrix)' if partial else ''}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; MB = 10^6 bytes", flush=True)  # fmt: skip

    floor = None
    if not args.no_floor:
        floor, how = machine_floor(cells)
        print(f"floor for this machine: {floor:.0f} s ({how})", flush=True)

    def on_row(row: dict) -> None:
        rss = row.get("server_peak_rss_max_bytes")
        print(f"  #{row['number']:>2} {row['server_model']:>7} x{row['server_workers']:<2} {row['op']:>8} "
              f"{row['volume_bytes'] / MB:>4g} MB x{row['client_workers']:<2} {row['status']:>7}  "
              f"cell {row.get('cell_seconds') or 0:6.1f} s  time/client p50 {row.get('time_p50_s') or 0:7.3f} s  "
              f"server peak RSS {'-' if rss is None else f'{rss / MB:5.1f} MB'} ({row.get('server_processes') or 0} "
              f"proc)  clients {row.get('clients_ok')}/{row.get('clients_failed')} server "
              f"{row.get('server_ok')}/{row.get('server_failed')}"
              + (f"  [{row['note']}]" if row.get("note") else ""), flush=True)  # fmt: skip

    t0 = time.perf_counter()
    try:
        result = matrix_run.run_matrix(args.out, quick=False, cell_time_limit=args.time_limit,
                                        fresh=not args.resume, plots=args.plots, progress=False, on_row=on_row,
                                        **filters)  # fmt: skip
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    wall = time.perf_counter() - t0
    rows = result.rows
    rss = [r["server_peak_rss_max_bytes"] for r in rows if r.get("server_peak_rss_max_bytes")]
    worst = max(rows, key=lambda r: r.get("server_peak_rss_max_bytes") or 0) if rows else None
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    failures = sum(r.get("clients_failed") or 0 for r in rows)
    server_failures = sum(r.get("server_failed") or 0 for r in rows)
    mismatches = sum(r.get("digest_mismatches") or 0 for r in rows)
    unmeasured = sum(1 for r in rows if r["status"] in ("ok", "failed") and not r.get("server_measured"))
    checks = {
        "every cell ran": (len(rows) == len(cells) and statuses.get("skipped", 0) == 0
                           and statuses.get("error", 0) == 0),  # fmt: skip
        "zero client failures": failures == 0,
        "zero server failures": server_failures == 0 and unmeasured == 0,
        "zero digest mismatches": mismatches == 0,
        "server peak RSS < 64 MB in every cell": bool(rss) and max(rss) < TARGET_RSS,
    }
    if not partial and not args.resume:
        checks["whole matrix < 3 min"] = wall < TARGET_WALL
    report = {
        "cells": len(cells), "rows": len(rows), "statuses": statuses, "wall_seconds": round(wall, 1),
        "client_failures": failures, "server_failures": server_failures, "digest_mismatches": mismatches,
        "server_peak_rss_max_MB": round(max(rss) / MB, 1) if rss else None,
        "worst_cell": None if worst is None else {k: worst[k] for k in matrix_table.KEY_FIELDS + ("number",)},
        "checks": checks, "csv": str(result.csv_path), "markdown": str(result.md_path),
        "per_cell": [{k: r.get(k) for k in matrix_table.KEY_FIELDS + ("number", "status", "cell_seconds",
                                                                      "time_p50_s", "time_p95_s",
                                                                      "throughput_mean_Bps",
                                                                      "server_peak_rss_max_bytes",
                                                                      "server_processes", "clients_failed",
                                                                      "digest_mismatches")}
                     for r in rows],
    }  # fmt: skip
    Path(args.out, "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    print(f"\n{len(rows)} of {len(cells)} cells, wall {wall:.1f} s ({wall / 60:.1f} min); statuses {statuses}")
    print(f"client failures {failures}, server failures {server_failures}, digest mismatches {mismatches}, "
          f"server peak RSS max {report['server_peak_rss_max_MB']} MB"
          + (f" (#{worst['number']} {worst['server_model']} {worst['op']} {worst['volume_bytes'] / MB:g} MB "
             f"x{worst['client_workers']} clients, {worst['server_workers']} server workers)" if worst else ""))  # fmt: skip
    if floor is not None:
        print(f"labnet's distance to the floor: {wall:.0f} s / {floor:.0f} s = {wall / floor:.2f}x")
        report["floor_seconds"] = round(floor, 1)
        Path(args.out, "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(f"wrote {result.csv_path}, {result.md_path}, {Path(args.out, 'report.json')}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
