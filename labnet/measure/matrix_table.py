"""The ETS table: its columns, its rows, the append-only ``ets.csv`` and the Markdown tables.

What it holds: the assignment's column names (:data:`ETS_COLUMNS`,
:data:`ETS_NAMES`) and the machine-readable ones after them
(:data:`DETAIL_TYPES`, :data:`CSV_FIELDS`, :data:`KEY_FIELDS`), how a row is
shown (:func:`display_columns`) and judged (:func:`cell_verdict`: the most
serious failure category of a cell, :data:`SEVERITY`), the CSV
(:func:`prepare_csv`, :func:`append_row`: one row written and flushed per
finished cell; :func:`read_rows`: the finished rows by cell key, a cut-short
last line dropped, the last row of a cell winning -- what resuming reads) and
the Markdown tables (:func:`ets_table`, :func:`ets_rows`).  MB = 10**6 bytes.

One ``ets.csv`` holds several servers side by side: a cell's key starts with
``label`` (whose server: ``labnet``, ``student``...) and ``dialect``.  A CSV
written before those columns existed is still read (its rows are label
``labnet``, dialect ``labnet``, their verdict derived from ``failures``) and
:func:`prepare_csv` rewrites it with today's header before appending.

Rows are plain dicts, so this module needs no server: it must not import
``labnet.measure.matrix_run`` (which imports it), ``labnet.measure.launcher``,
``labnet.measure.stress``, sockets, threads, matplotlib or pandas; its only
labnet imports are ``errors`` and ``config`` (the order of the server models,
MB), so that ``import labnet.measure.matrix_table`` loads no socket code
(``tests/test_layers.py``).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from labnet.config import MB, SERVER_MODELS
from labnet.errors import UsageError

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
    "label": str,  # whose server: "labnet" for labnet's own, else what --label said (default: the dialect)
    "dialect": str,  # the wire dialect the clients spoke: labnet, course, sentinel
    "server_model": str,
    "client_pool": str,
    "op": str,
    "volume_bytes": int,
    "client_workers": int,
    "server_workers": int,
    "server_workers_declared": int,  # the pool size as someone declared it (a server labnet did not size)
    "number": int,
    "status": str,
    "verdict": str,  # the most serious failure category of the cell (SEVERITY), or "ok"
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
    "server_peak_tree_rss_bytes": int,  # peak of the summed RSS of the server's whole process tree
    "memory_mechanism": str,  # what enforced --memory-limit: "watchdog"/"cgroup" (it acted), "... not reached"
    "encoding": str,
    "cell_seconds": float,
    "finished_at": str,
    "units": str,
}
CSV_FIELDS = ETS_NAMES + tuple(DETAIL_TYPES)
KEY_FIELDS = ("label", "dialect", "server_model", "client_pool", "op", "volume_bytes", "client_workers",
              "server_workers")  # fmt: skip
DONE_STATUSES = ("ok", "failed")
RETRIED_VERDICTS = ("did_not_start",)  # failed rows that measured nothing: a resumed run tries them again
# Columns added after the first ets.csv format, with what an older row reads as ("": empty; verdict: derived).
ADDED_FIELDS = {"label": "labnet", "dialect": "labnet", "verdict": "", "server_workers_declared": "",
                "server_peak_tree_rss_bytes": "", "memory_mechanism": ""}  # fmt: skip
# Failure categories from the most serious down: a file the server answered OK for but got wrong,
# then a server that died, then a transfer that broke, then a refusal.  Unknown ones come last.
SEVERITY = ("corrupted", "truncated", "integrity", "out_of_memory", "did_not_start", "server_died",
            "unverified", "not_understood", "server_error", "protocol", "closed_early", "no_reply", "reset",
            "timeout", "busy", "refused", "client_error", "error", "cancelled")  # fmt: skip


# --------------------------------------------------------------------------
# Rows, the CSV and the table
# --------------------------------------------------------------------------


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
        "Jumlah server worker pool": (f"{row['server_workers']} (declared)" if row.get("server_workers_declared")
                                      else str(row["server_workers"])),
        "Waktu total per client": time_text,
        "Throughput per client": "-" if skipped or tput is None else f"{tput / MB:.2f} MB/s",
        "Jumlah worker client yang sukses dan gagal": (
            f"dilewati (skipped): {row.get('note', '')}" if skipped else
            _counts(row.get("clients_ok"), row.get("clients_failed"))),
        "Jumlah worker server yang sukses dan gagal": server,
    }


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY_FIELDS)


def is_finished(row: dict | None) -> bool:
    """Whether resuming skips this cell: ``ok`` or ``failed``, unless its server never started."""
    return bool(row) and row.get("status") in DONE_STATUSES and row.get("verdict") not in RETRIED_VERDICTS


def parse_failures(text: str | None) -> dict[str, int]:
    """``"reset=2;truncated=1"`` (the ``failures`` column) as a dict."""
    out = {}
    for part in (text or "").split(";"):
        name, _, count = part.partition("=")
        if name.strip():
            out[name.strip()] = int(count) if count.strip().isdigit() else 1
    return out


def most_serious(categories) -> str | None:
    """The most serious of ``categories`` by :data:`SEVERITY` (unknown ones after, by name); None if empty."""
    found = sorted(set(categories), key=lambda c: (SEVERITY.index(c) if c in SEVERITY else len(SEVERITY), c))
    return found[0] if found else None


def cell_verdict(row: dict) -> str:
    """A cell in one word: ``ok``, the most serious failure category among its clients, or why a row
    without client failures still failed (``integrity``: a stored file differs; ``server_failed``:
    labnet's server counted failures; ``server_not_measured``); ``skipped``/``error`` for those rows."""
    status = row.get("status")
    if status not in DONE_STATUSES:
        return status or "error"
    worst = most_serious(parse_failures(row.get("failures")))
    if worst is not None:
        return worst
    if status == "ok":
        return "ok"
    if row.get("digest_mismatches"):
        return "integrity"
    if row.get("server_failed"):
        return "server_failed"
    return "server_not_measured" if not row.get("server_measured") else "failed"


def _to_csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _from_csv(row: dict) -> dict | None:
    """A typed row from a CSV record; ``None`` if it is incomplete (a line cut short).

    A column of :data:`ADDED_FIELDS` the file does not have takes its default."""
    row = {**{k: v for k, v in ADDED_FIELDS.items() if k not in row}, **row}
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
    out["verdict"] = out["verdict"] or cell_verdict(out)
    return out


def _header_is_known(fields) -> bool:
    """Today's header, or an older one (today's without some of :data:`ADDED_FIELDS`), in any order."""
    fields = tuple(fields or ())
    return (len(set(fields)) == len(fields) and set(fields) <= set(CSV_FIELDS)
            and set(CSV_FIELDS) - set(fields) <= set(ADDED_FIELDS))  # fmt: skip


def _complete_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.endswith("\n"):  # the last line was cut short by a kill: ignore it
        text = text[: text.rfind("\n") + 1]
    return text


def read_rows(csv_path) -> dict[tuple, dict]:
    """The finished rows of ``ets.csv`` by cell key (last row of a cell wins); {} if there is no file.

    An older file without the columns of :data:`ADDED_FIELDS` is read with their defaults.  Raises ``UsageError`` if the file has other columns (another labnet version).
    """
    path = Path(csv_path)
    if not path.is_file():
        return {}
    text = _complete_text(path)
    if not text.strip():
        return {}
    reader = csv.DictReader(io.StringIO(text))
    if not _header_is_known(reader.fieldnames):
        raise UsageError(f"{path} has other columns than this labnet writes; use another --out or --fresh")
    rows = {}
    for record in reader:
        row = _from_csv(record)
        if row is not None:
            rows[row_key(row)] = row
    return rows


def prepare_csv(path: Path) -> None:
    """Make ``path`` ready for appending: header written, a cut-short last line removed, and a file
    of an older format rewritten (atomically) with today's header, every row kept."""
    if path.is_file() and path.stat().st_size > 0:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
        if path.stat().st_size > 0:
            read_rows(path)  # checks the header
            with open(path, newline="", encoding="utf-8") as f:
                header = tuple(next(csv.reader(f), ()))
            if header != CSV_FIELDS:
                _upgrade(path)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow(CSV_FIELDS)


def _upgrade(path: Path) -> None:
    """Rewrite an older-format CSV with today's columns (each row in its order, defaults filled in)."""
    rows = [r for r in map(_from_csv, csv.DictReader(io.StringIO(_complete_text(path)))) if r is not None]
    temp = path.with_name(path.name + ".upgrade")
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _to_csv_value(row.get(k)) for k in CSV_FIELDS})
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


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


def _server_counts_note(dialect: str) -> str:
    if dialect == "labnet":
        return ("*Jumlah worker server*: requests the server counted as succeeded / failed, measured by STATS "
                "before and after the cell (connections refused with BUSY shown apart).")
    return ("*Jumlah worker server*: what the server's own output says, counted with --server-log-regex "
            "(after the cell minus before it), else *tidak terukur* (not measured): this dialect has no STATS, "
            "and labnet never guesses.  Success is decided by the bytes: every download is compared with the "
            "lab's copy, every upload's stored file is hashed (or downloaded back).")


def ets_table(rows, title: str = "ETS") -> str:
    """The ETS table(s) in Markdown: one table per (label, dialect, server model, client pool), rows by ``Nomor``.

    Headers carry the assignment's Indonesian names with an English rendering;
    the notes under each table say MB = 10^6 bytes and how each column is measured.
    """
    groups: dict[tuple, list] = {}
    for row in rows:
        key = (row.get("label") or "labnet", row.get("dialect") or "labnet", row["server_model"], row["client_pool"])
        groups.setdefault(key, []).append(row)

    def order(g):
        return (g[0] != "labnet", g[0], g[1], SERVER_MODELS.index(g[2]) if g[2] in SERVER_MODELS else 9, g[2], g[3])

    out = [f"# {title}", "", f"Units: {UNITS_NOTE}.", ""]
    for (label, dialect, model, pool) in sorted(groups, key=order):
        group = sorted(groups[(label, dialect, model, pool)], key=lambda r: r["number"])
        who = "" if (label, dialect) == ("labnet", "labnet") else f"{label} ({dialect} dialect): "
        out += [f"## {who}Server {model} pool, client {pool} pool ({len(group)} rows)", ""]
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
            "client's total seconds. " + _server_counts_note(dialect) + " "
            "Every transfer's SHA-256 is checked against the file's.",
            "",
        ]
        notes = [r for r in group if r.get("note") or r.get("verdict") not in (None, "", "ok", r["status"])]
        for r in notes:
            verdict = r.get("verdict") or ""
            said = r["status"] + (f" ({verdict})" if verdict and verdict not in ("ok", r["status"]) else "")
            out.append(f"* Nomor {r['number']}: {said}" + (f": {r['note']}" if r.get("note") else ""))
        if notes:
            out.append("")
    return "\n".join(out)
