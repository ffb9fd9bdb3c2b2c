"""A student's client judged by what labnet's server saw and by the bytes it left: one matrix cell's verdict.

What it holds, all pure (no sockets, no processes; the files are only hashed):

* :func:`read_connection_log` -- the server's connection log (``labnet server --connection-log``:
  one JSON line per closed connection), read here rather than imported from ``labnet.server``
  (the measuring tools never import the server); a partial last line is skipped.
* :class:`ServerView` / :func:`server_view` -- the cell's transfers as the server logged them:
  per connection the time from accept to close (``Waktu total per client``), the wait for a
  worker, the file bytes, whether it was whole, padded mid-stream, what the client was told.
* :class:`ClientClaims` / :func:`client_claims` -- what the client printed about itself, read with
  regexes (``--client-log-regex``): its success count, its own times and throughputs.
  :data:`SEED_CLAIMS` reads the seed's ``client_pool.py`` lines.
* :class:`FileCheck` / :func:`check_file` -- one file against the lab's copy (SHA-256, size).
* :func:`judge` -- the row's measured fields: verified count (never a client's or server's word:
  a digest match, or, when every worker wrote the same file, that file's digest together with the
  server's log of whole transfers -- and the row says so), the verdict, and notes in plain words
  ("client reported 5 ok, 5 uploads truncated ...").

Must not import sockets, threads, the server package, ``matrix_run`` or matplotlib.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from labnet.config import MB, size_label
from labnet.errors import UsageError
from labnet.protocol.console import parse_connection_log

# The seed's client_pool.py prints "[OK] Time: 0.12s | Throughput: 123.45 B/s | Msg: ..." per worker
# and "Success count     : 5" at the end: the per-worker lines add one each, the summary sets the count.
SEED_CLAIMS = (
    r"^\[(?:(?P<ok>OK)|(?P<failed>FAIL))\] Time: (?P<time>[\d.]+)\s*s \| Throughput: (?P<throughput>[\d.]+) B/s",
    r"^Success count\s*:\s*(?P<ok>\d+)",
    r"^Fail count\s*:\s*(?P<failed>\d+)",
)
CLAIM_GROUPS = ("ok", "failed", "time", "throughput")
TAIL_CHARS = 1200


# --------------------------------------------------------------------------
# What the server logged
# --------------------------------------------------------------------------


def read_connection_log(path) -> list[dict]:
    """The connection records of a connection log, in order ([] when there is no file)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return [obj for obj in parse_connection_log(data) if obj.get("kind", "connection") == "connection"]


@dataclass
class Transfer:
    """One request of the cell's operation, as the server logged it, with its connection's times."""

    name: str | None
    ok: bool
    size: int | None
    error: str | None
    padded: bool
    seconds: float | None  # accept (else worker start) to close
    wait: float | None  # accept to worker start
    accepted: float | None
    closed: float | None
    whole: bool = False  # ok and exactly the lab file's size


@dataclass
class ServerView:
    transfers: list[Transfer]
    connections: int  # every connection logged, those without a request of the op included
    idle_connections: int  # connections that carried no request at all (a client that hung, a probe)

    @property
    def whole(self) -> list[Transfer]:
        return [t for t in self.transfers if t.whole]

    @property
    def ok(self) -> int:
        return sum(t.ok for t in self.transfers)

    @property
    def names(self) -> set:
        return {t.name for t in self.transfers}


def _seconds(a, b) -> float | None:
    return max(0.0, float(b) - float(a)) if a is not None and b is not None else None


def server_view(entries: list[dict], op: str, volume: int) -> ServerView:
    """The transfers of ``op`` in the log entries (``upload``/``download``)."""
    transfers, idle = [], 0
    for conn in entries:
        requests = conn.get("requests") or []
        idle += not requests
        start = conn.get("accepted") if conn.get("accepted") is not None else conn.get("started")
        for req in requests:
            if req.get("op") != op:
                continue
            size = req.get("size")
            transfers.append(Transfer(req.get("name"), bool(req.get("ok")), size, req.get("error"),
                                      bool(req.get("padded_midstream")), _seconds(start, conn.get("closed")),
                                      _seconds(conn.get("accepted"), conn.get("started")), start,
                                      conn.get("closed"), bool(req.get("ok")) and size == volume))  # fmt: skip
    return ServerView(transfers, len(entries), idle)


# --------------------------------------------------------------------------
# What the client said
# --------------------------------------------------------------------------


@dataclass
class ClientClaims:
    ok: int | None = None
    failed: int | None = None
    times: list = field(default_factory=list)
    throughputs: list = field(default_factory=list)  # bytes per second


def compile_claims(patterns) -> list[re.Pattern]:
    """``--client-log-regex`` (one regex or several) compiled; each needs a group of :data:`CLAIM_GROUPS`."""
    given = [patterns] if isinstance(patterns, str) else list(patterns)
    out = []
    for text in given:
        try:
            rx = re.compile(text, re.M)
        except re.error as exc:
            raise UsageError(f"--client-log-regex is not a regular expression: {exc}") from None
        if not set(rx.groupindex) & set(CLAIM_GROUPS):
            raise UsageError(f"--client-log-regex {text!r} needs a named group: (?P<ok>..), (?P<failed>..), "
                             "(?P<time>..) seconds or (?P<throughput>..) bytes per second")  # fmt: skip
        out.append(rx)
    return out


def client_claims(output: str, patterns: list[re.Pattern]) -> ClientClaims:
    """What the output says: in order of the lines, a match's ``ok``/``failed`` group holding a number sets
    that count, other text adds one; ``time`` (s) and ``throughput`` (B/s) of ``ok`` lines are collected."""
    claims = ClientClaims()
    for line in output.splitlines():
        for rx in patterns:
            m = rx.search(line)
            if m is None:
                continue
            groups = {k: v for k, v in m.groupdict().items() if v is not None}
            for key in ("ok", "failed"):
                if key in groups:
                    text, old = groups[key], getattr(claims, key) or 0
                    setattr(claims, key, int(text) if text.strip().isdigit() else old + 1)
            if "failed" not in groups:
                for key, where in (("time", claims.times), ("throughput", claims.throughputs)):
                    try:
                        where.append(float(groups[key]))
                    except (KeyError, ValueError):
                        pass
    return claims


# --------------------------------------------------------------------------
# The bytes
# --------------------------------------------------------------------------


@dataclass
class FileCheck:
    path: Path
    size: int
    status: str  # "ok", "truncated" (shorter), "corrupted" (same size or longer, other bytes)


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_file(path, expected_sha256: str, volume: int) -> FileCheck:
    path = Path(path)
    size = path.stat().st_size
    if size == volume and sha256_of(path) == expected_sha256:
        return FileCheck(path, size, "ok")
    return FileCheck(path, size, "truncated" if size < volume else "corrupted")


# --------------------------------------------------------------------------
# The row
# --------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _tail(text: str) -> str:
    kept = " ⏎ ".join(line.rstrip() for line in (text or "").strip().splitlines()[-12:] if line.strip())
    return kept if len(kept) <= TAIL_CHARS else "..." + kept[-TAIL_CHARS:]


def judge(*, op: str, clients: int, volume: int, files: list[FileCheck], view: ServerView, claims: ClientClaims,
          returncode: int | None, timed_out: bool, tail: str, shown_folder: str, file_name: str) -> dict:  # fmt: skip
    """The measured fields of a row.  ``files``: what the client wrote (download) or the server stored
    (upload), each checked; ``shown_folder``: where those files are, for the notes."""
    notes, failed = [], {}
    n = len(view.transfers)
    what = "uploads" if op == "upload" else "downloads"
    # One file for several transfers: the same name for every worker (the seed), so a file holds the
    # last writer's bytes and nobody can say which worker's they are.
    shared = n > 1 and 0 < len(files) < n
    bad_files = [f for f in files if f.status != "ok"]
    if n == 0:
        verified = 0
    elif shared:
        verified = len(view.whole) if files and not bad_files else 0
        notes.append(f"per-worker verification impossible: the {_plural(n, 'transfer')} used "
                     f"{_plural(len(files), 'file name')} ({file_name} in {shown_folder}); verified "
                     f"instead: the SHA-256 of what is there ({_plural(len(files), 'file')}, the last writer's bytes) and"
                     f" the server's log of whole {what} ({len(view.whole)} of {n} carried {size_label(volume)})")
    else:
        verified = sum(f.status == "ok" for f in files)
    verified = min(verified, clients)
    # Why the others failed, in the student's terms: one category, the most telling.
    short = [t for t in view.transfers if t.ok and t.size is not None and t.size < volume]
    incomplete = [t for t in view.transfers if not t.ok]
    if incomplete:
        notes.append(f"the server logged {_plural(len(incomplete), op)} as not completed: "
                     f"{incomplete[0].error or 'no reason logged'}")
    kinds = {f.status for f in bad_files}
    if n == 0:
        category = "timeout" if timed_out else "no_transfer"
        how = ("ran past the time limit and was killed" if timed_out else
               f"exited with status {returncode}" if returncode is not None else "ended")
        notes.insert(0, f"{category}: the client {how} without any {op} reaching labnet's server"
                        + (f" ({_plural(view.idle_connections, 'connection')} sent nothing)"
                           if view.idle_connections else "") + f"; its last lines: {_tail(tail) or '(none)'}")
    else:
        category = ("truncated" if "truncated" in kinds or (op == "upload" and short) else
                    "corrupted" if "corrupted" in kinds else
                    "timeout" if timed_out else
                    "incomplete" if incomplete else
                    "missing" if op == "download" and not files else "unverified")
    failed = {category: clients - verified} if clients > verified else {}
    if timed_out and n:
        notes.insert(0, f"timeout: the client ran past the time limit and was killed; its last lines: {_tail(tail)}")
    if op == "download" and n and not files:
        notes.append(f"the server sent {_plural(len(view.whole), 'whole file')}, but the client wrote no file "
                     f"in {shown_folder}")
    if short and op == "upload":
        sizes = sorted({t.size for t in short})
        notes.append(f"{_plural(len(short), 'upload')} truncated: the server stored "
                     f"{' / '.join(map(str, sizes))} of {volume} bytes" + (" each" if len(short) > 1 else ""))
    for f in bad_files:
        notes.append(f"{f.path.name}: {f.status}, {f.size} of {volume} bytes" +
                     (" (same size, other bytes)" if f.status == "corrupted" and f.size == volume else ""))
    padded = sum(t.padded for t in view.transfers)
    if padded:
        notes.append(f"{_plural(padded, 'upload')} had base64 padding mid-stream (block-by-block encoding): "
                     "labnet's server decoded every segment; base64.b64decode would keep the first block only")
    if claims.ok is not None and claims.ok != verified:
        cut = len(short) if op == "upload" and short and not shared else failed.get(category, 0)
        said = (f"{_plural(cut, what[:-1])} {category}" if category in ("truncated", "corrupted")
                else f"{verified} verified")
        notes.insert(0, f"client reported {claims.ok} ok, {said} ({verified} of {clients} verified by SHA-256)")
    if returncode not in (0, None) and n:
        notes.append(f"the client exited with status {returncode}")
    counted = view.whole if view.whole else []
    times = [t.seconds for t in counted if t.seconds is not None]
    tputs = [t.size / t.seconds for t in counted if t.seconds]
    starts = [t.accepted for t in counted if t.accepted is not None]
    ends = [t.closed for t in counted if t.closed is not None]
    span = (max(ends) - min(starts)) if starts and ends and max(ends) > min(starts) else None
    waits = [t.wait for t in counted if t.wait is not None]
    status = "ok" if verified == clients and not failed and not timed_out else "failed"
    return dict(
        status=status, clients_ok=verified, clients_failed=clients - verified,
        failures=";".join(f"{k}={v}" for k, v in sorted(failed.items()) if v),
        server_measured=True, server_ok=view.ok, server_failed=n - view.ok, server_busy=None,
        time_mean_s=mean(times) if times else None, time_p50_s=_pct(times, 50), time_p95_s=_pct(times, 95),
        time_max_s=max(times) if times else None, wait_mean_s=mean(waits) if waits else None,
        throughput_mean_Bps=mean(tputs) if tputs else None,
        throughput_aggregate_Bps=sum(t.size for t in counted) / span if span else None,
        digests_verified=sum(f.status == "ok" for f in files), digest_mismatches=len(bad_files),
        note=" | ".join(notes),
        # beside the CSV's columns (client_cells.jsonl):
        client_reported_ok=claims.ok, client_reported_failed=claims.failed,
        client_time_mean_s=mean(claims.times) if claims.times else None,
        client_throughput_mean_Bps=mean(claims.throughputs) if claims.throughputs else None,
        per_worker_verified=None if n == 0 else not shared, transfers_logged=n, connections_logged=view.connections,
        files_checked=[{"path": str(f.path), "size": f.size, "status": f.status} for f in files],
    )  # fmt: skip


def _pct(values, q) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def claims_text(row: dict) -> dict:
    """The assignment's columns of a client row with the client's own figures beside labnet's (display)."""
    out = {}
    if row.get("client_time_mean_s") is not None:
        out["time"] = f"client: {row['client_time_mean_s']:.3g} s"
    if row.get("client_throughput_mean_Bps") is not None:
        out["throughput"] = f"client: {row['client_throughput_mean_Bps'] / MB:.2f} MB/s"
    if row.get("client_reported_ok") is not None:
        failed = row.get("client_reported_failed")
        out["counts"] = f"client reported {row['client_reported_ok']} ok" + (
            f" / {failed} fail" if failed is not None else "")
    return out
