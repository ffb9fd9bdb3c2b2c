"""The class table of ``labnet grade``: one line per student, as CSV, Markdown and an HTML page; and the
check of a submitted table's claims against what was measured.

What it holds: :func:`slim_row` (the fields of a matrix row a result keeps), :func:`check_claims` (each
row of the student's table: ``contradicted`` when it says "0 gagal" and the digests showed truncated or
corrupted transfers on the same row; ``review`` when its throughput is more than :data:`REVIEW_FACTOR`
times off what was measured here, or it says "0 gagal" where clients failed in other ways -- other
machines differ, so never called false; ``consistent``; ``not_measured``), :func:`class_row` (a
result -> the table's columns, :data:`CLASS_COLUMNS`), :func:`load_results` and
:func:`write_class_table` (``class.csv``, ``class.md``, ``class.html``: the table, a throughput chart
drawn as inline SVG, and per student the plots ``run_matrix`` drew -- with
:mod:`labnet.measure.plotting` -- embedded).  MB = 10^6 bytes.

Pure: reads JSON and PNG files, writes text.  Must not import sockets, the supervisor, ``matrix_run``
or matplotlib (the plots were drawn by the child that measured).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from pathlib import Path
from statistics import mean

from labnet.config import MB, size_label
from labnet.measure.grade_manifest import read_claims
from labnet.measure.matrix_table import parse_failures

REVIEW_FACTOR = 3.0  # a claimed throughput more than 3x away from the measured one deserves a look
PROBE_TEXT = 240  # characters of a probe's error in the table (the tail of a traceback can be long)
DIGEST_CATEGORIES = ("truncated", "corrupted", "integrity")  # failures the bytes prove, not the load
SLIM_FIELDS = ("label", "dialect", "server_model", "client_pool", "op", "volume_bytes", "client_workers",
               "server_workers", "number", "status", "verdict", "note", "clients_ok", "clients_failed", "failures",
               "throughput_mean_Bps", "time_mean_s", "digests_verified", "digest_mismatches",
               "server_peak_tree_rss_bytes", "memory_mechanism")  # fmt: skip
CLASS_COLUMNS = (
    ("student_id", "Student id"),
    ("student_name", "Name"),
    ("status", "Status"),
    ("probe", "Probe (required steps passed)"),
    ("rows_ok", "Rows ok (their servers)"),
    ("truncated", "Truncated transfers"),
    ("corrupted", "Corrupted transfers"),
    ("failures", "Failures by category"),
    ("peak_memory_MB", "Peak server memory (MB)"),
    ("throughput_MBps", "Throughput per client, theirs (MB/s)"),
    ("labnet_throughput_MBps", "Throughput per client, labnet's (MB/s)"),
    ("client_rows_ok", "Their client vs labnet's server (rows ok)"),
    ("contradicted", "Claims contradicted"),
    ("review", "Claims to review"),
    ("isolation", "Isolation"),
    ("notes", "Notes"),
)
CLASS_NAMES = tuple(name for name, _ in CLASS_COLUMNS)


def slim_row(row: dict) -> dict:
    """The fields of a matrix row (``ets.csv``, or the client matrix's) a submission's result keeps."""
    out = {k: row.get(k) for k in SLIM_FIELDS if k in row}
    if isinstance(out.get("note"), str):
        out["note"] = out["note"][:400]
    return out


def _row_text(op: str, volume: int, clients: int, workers: int, model: str | None = None) -> str:
    return f"{op} {size_label(volume)} x{clients} clients, {workers} server workers" + (f" ({model})" if model else "")


def _digest_failures(row: dict) -> int:
    failures = parse_failures(row.get("failures"))
    return sum(failures.get(c, 0) for c in DIGEST_CATEGORIES) or int(row.get("digest_mismatches") or 0)


def check_claims(table_path, student_rows: list[dict]) -> dict:
    """Each claim of the submitted table against the rows measured on the student's own servers."""
    claims, problems = read_claims(table_path)
    out = {"contradicted": [], "review": [], "consistent": 0, "not_measured": 0, "problems": problems,
           "claims": len(claims)}  # fmt: skip
    for claim in claims:
        measured = [r for r in student_rows if r.get("status") in ("ok", "failed") and r.get("op") == claim.op
                    and r.get("volume_bytes") == claim.volume and r.get("client_workers") == claim.clients
                    and r.get("server_workers") == claim.server_workers
                    and (claim.model is None or r.get("server_model") == claim.model)]  # fmt: skip
        if not measured:
            out["not_measured"] += 1
            continue
        where = _row_text(claim.op, claim.volume, claim.clients, claim.server_workers, claim.model)
        says_none_failed = claim.clients_failed == 0 or (claim.clients_failed is None and claim.server_failed == 0)
        said = f"line {claim.line}" + (f" (Nomor {claim.nomor})" if claim.nomor else "")
        verdict = None
        for r in measured:
            bad = _digest_failures(r)
            if says_none_failed and bad:
                out["contradicted"].append({"line": claim.line, "row": where, "claim": f"{said}: 0 gagal",
                                            "measured": f"{r['server_model']} server: {bad} of {r['client_workers']} "
                                                        f"transfers failed their digest ({r.get('failures')})",
                                            "why": "the digests show transfers that were not whole"})  # fmt: skip
                verdict = "contradicted"
                break
        if verdict is None and says_none_failed:
            failed = [r for r in measured if r.get("clients_failed")]
            if failed:
                r = failed[0]
                out["review"].append({"line": claim.line, "row": where, "claim": f"{said}: 0 gagal",
                                      "measured": f"{r['server_model']} server: {r['clients_failed']} clients failed "
                                                  f"here ({r.get('failures')})",
                                      "why": "failures other than a digest mismatch can depend on the machine"})
                verdict = "review"
        speeds = [r["throughput_mean_Bps"] for r in measured if r.get("status") == "ok" and r.get("throughput_mean_Bps")]
        if verdict is None and claim.throughput_Bps and speeds:
            here = mean(speeds)
            ratio = claim.throughput_Bps / here
            if not 1 / REVIEW_FACTOR <= ratio <= REVIEW_FACTOR:
                out["review"].append({"line": claim.line, "row": where,
                                      "claim": f"{said}: {claim.throughput_Bps / MB:.3g} MB/s per client",
                                      "measured": f"{here / MB:.3g} MB/s per client here ({ratio:.2g}x)",
                                      "why": "far from this machine's measurement; other machines differ"})
                verdict = "review"
        if verdict is None:
            out["consistent"] += 1
    return out


def _mean_throughput(rows: list[dict]) -> float | None:
    speeds = [r["throughput_mean_Bps"] for r in rows if r.get("status") == "ok" and r.get("throughput_mean_Bps")]
    return mean(speeds) if speeds else None


def _key(r: dict) -> tuple:
    return (r.get("server_model"), r.get("op"), r.get("volume_bytes"), r.get("client_workers"),
            r.get("server_workers"))  # fmt: skip


def _client_text(rows: list[dict]) -> str:
    """``"1/2 ok (truncated=4)"``: the student's client rows against labnet's server."""
    if not rows:
        return "not measured"
    failures: dict[str, int] = {}
    for r in rows:
        for k, v in parse_failures(r.get("failures")).items():
            failures[k] = failures.get(k, 0) + v
    text = f"{sum(1 for r in rows if r.get('status') == 'ok')}/{len(rows)} ok"
    return text + (f" ({'; '.join(f'{k}={v}' for k, v in sorted(failures.items()))})" if failures else "")


def class_row(result: dict) -> dict:
    """One student's line of the class table (:data:`CLASS_COLUMNS`) from their saved result."""
    theirs = result.get("student_rows") or []
    ours = result.get("labnet_rows") or []
    failures: dict[str, int] = {}
    for r in theirs:
        for k, v in parse_failures(r.get("failures")).items():
            failures[k] = failures.get(k, 0) + v
    pr = result.get("probe")
    if pr is None:
        probe_text = "-"
    elif pr.get("error"):
        error = pr["error"]  # what happened first, then the tail of its output: keep both ends
        error = error if len(error) <= PROBE_TEXT else f"{error[: PROBE_TEXT // 2]} ... {error[-PROBE_TEXT // 2:]}"
        probe_text = f"failed: {error}"  # the whole of it is in result.json
    else:
        probe_text = f"{pr.get('passed', 0)}/{pr.get('required', 0)}" + (" passed" if pr.get("ok") else "")
    peaks = [r.get("server_peak_tree_rss_bytes") or 0 for r in theirs] + [(pr or {}).get("peak_rss_bytes") or 0]
    # labnet's rows measured on the same keys as theirs, same run: the fair comparison
    same = {_key(r) for r in theirs if r.get("status") == "ok"}
    mine, ours_same = _mean_throughput(theirs), _mean_throughput([r for r in ours if _key(r) in same] or ours)
    client = result.get("client") or {}
    client_rows = client.get("rows") or []
    claims = result.get("claims") or {}
    notes = list(result.get("notes") or []) + list(result.get("problems") or [])
    if client.get("note"):
        notes.append(f"client: {client['note']}")
    if "out_of_memory" in failures:
        notes.append("a server went over its memory limit")
    return {
        "student_id": result.get("student_id") or "",
        "student_name": result.get("student_name") or "",
        "folder": result.get("folder", ""),
        "status": result.get("status", ""),
        "probe": probe_text,
        "rows_ok": f"{sum(1 for r in theirs if r.get('status') == 'ok')}/{len(theirs)}" if theirs else "-",
        "truncated": failures.get("truncated", 0),
        "corrupted": failures.get("corrupted", 0) + failures.get("integrity", 0),
        "failures": "; ".join(f"{k}={v}" for k, v in sorted(failures.items())) or "-",
        "peak_memory_MB": round(max(peaks) / MB, 1) if max(peaks) else "",
        "throughput_MBps": round(mine / MB, 2) if mine else "",
        "labnet_throughput_MBps": round(ours_same / MB, 2) if ours_same else "",
        "client_rows_ok": _client_text(client_rows),
        "contradicted": len(claims.get("contradicted", [])) if claims else "",
        "review": len(claims.get("review", [])) if claims else "",
        "isolation": result.get("isolation", ""),
        "notes": " | ".join(n.replace("\n", " ")[:300] for n in notes),
    }


def load_results(out_dir) -> list[dict]:
    """Every saved ``result.json`` under ``out_dir/submissions/`` (by folder name)."""
    found = []
    for path in sorted(Path(out_dir, "submissions").glob("*/result.json")):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return found


def _markdown(rows: list[dict], results: list[dict], isolation: str) -> str:
    out = ["# Class table (labnet grade)", "", f"Isolation: {isolation}. MB = 10^6 bytes.", "",
           "| " + " | ".join(title for name, title in CLASS_COLUMNS if name != "notes") + " |",
           "|" + "|".join("---" for name, _ in CLASS_COLUMNS if name != "notes") + "|"]  # fmt: skip
    for row in rows:
        out.append("| " + " | ".join(str(row[n]).replace("|", "\\|") for n in CLASS_NAMES if n != "notes") + " |")
    out += ["", "## Details", ""]
    for row, result in zip(rows, results, strict=True):
        out.append(f"### {row['student_id']} {row['student_name']} ({row['folder']}): {row['status']}")
        if row["notes"]:
            out.append(f"* notes: {row['notes']}")
        for kind in ("contradicted", "review"):
            for c in (result.get("claims") or {}).get(kind, []):
                out.append(f"* claim {kind}: {c['row']}: {c['claim']}; measured {c['measured']} ({c['why']})")
        out.append("")
    return "\n".join(out)


def _svg_chart(rows: list[dict]) -> str:
    """Horizontal bars: each student's mean throughput per client beside labnet's on the same rows."""
    items = [(r["student_id"] or r["folder"], r["throughput_MBps"] or 0, r["labnet_throughput_MBps"] or 0) for r in rows]
    if not items:
        return ""
    top = max([max(a, b) for _, a, b in items] + [1e-9])
    width, label_w, bar_h = 640, 160, 12
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{len(items) * 34 + 30}" '
             'font-family="sans-serif" font-size="11">']  # fmt: skip
    for i, (who, theirs, ours) in enumerate(items):
        y = 10 + i * 34
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(str(who))}</text>')
        for j, (value, colour, name) in enumerate(((theirs, "#d9822b", "theirs"), (ours, "#2b6cd9", "labnet"))):
            w = (width - label_w - 90) * value / top
            parts.append(f'<rect x="{label_w}" y="{y + j * bar_h}" width="{w:.1f}" height="{bar_h - 2}" '
                         f'fill="{colour}"/><text x="{label_w + w + 4:.1f}" y="{y + j * bar_h + 9}">'
                         f'{name} {value:g}</text>')  # fmt: skip
    parts.append(f'<text x="0" y="{len(items) * 34 + 25}">throughput per client, MB/s (MB = 10^6 bytes); '
                 'orange: their servers, blue: labnet\'s on the same rows, same run</text></svg>')
    return "".join(parts)


def _html(rows: list[dict], results: list[dict], out_dir: Path, isolation: str) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(title)}</th>" for _, title in CLASS_COLUMNS)
    body = []
    for row in rows:
        cls = "bad" if row["status"] != "graded" or row["contradicted"] or row["truncated"] or row["corrupted"] else ""
        body.append(f'<tr class="{cls}">' + "".join(f"<td>{esc(str(row[n]))}</td>" for n in CLASS_NAMES) + "</tr>")
    details = []
    for row, result in zip(rows, results, strict=True):
        details.append(f"<h3>{esc(row['student_id'])} {esc(row['student_name'])} ({esc(row['folder'])})</h3>")
        items = [f"<li>claim {kind}: {esc(c['row'])}: {esc(c['claim'])}; measured {esc(c['measured'])} "
                 f"({esc(c['why'])})</li>" for kind in ("contradicted", "review")
                 for c in (result.get("claims") or {}).get(kind, [])]  # fmt: skip
        if items:
            details.append("<ul>" + "".join(items) + "</ul>")
        for rel in result.get("plots") or []:
            png = out_dir / "submissions" / result.get("folder", "") / rel
            if png.is_file() and "by_label" in png.name:  # theirs beside labnet's, cell by cell
                data = base64.b64encode(png.read_bytes()).decode("ascii")
                details.append(f'<img alt="{esc(png.name)}" src="data:image/png;base64,{data}" style="max-width:100%">')
    return ("<!doctype html><html><head><meta charset='utf-8'><title>labnet grade: class table</title><style>"
            "body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;font-size:12px} "
            "td,th{border:1px solid #bbb;padding:3px 5px;vertical-align:top} tr.bad{background:#fde8e8}</style>"
            f"</head><body><h1>Class table</h1><p>Isolation: {esc(isolation)}. MB = 10<sup>6</sup> bytes. "
            "Success is a SHA-256 match, never a server's or client's word; a claim is <b>contradicted</b> only "
            "where digests disprove it, and <b>review</b> means: look, machines differ.</p>"
            f"<table><tr>{head}</tr>{''.join(body)}</table><h2>Throughput</h2>{_svg_chart(rows)}"
            f"<h2>Details</h2>{''.join(details)}</body></html>")  # fmt: skip


def write_class_table(results: list[dict], out_dir, isolation: str = "") -> dict:
    """Write ``class.csv``, ``class.md`` and ``class.html`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    rows = [class_row(r) for r in results]
    paths = {"csv": out_dir / "class.csv", "md": out_dir / "class.md", "html": out_dir / "class.html"}
    temp = paths["csv"].with_suffix(".csv.tmp")
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["folder", *CLASS_NAMES], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temp, paths["csv"])
    paths["md"].write_text(_markdown(rows, results, isolation), encoding="utf-8")
    paths["html"].write_text(_html(rows, results, out_dir, isolation), encoding="utf-8")
    return paths
