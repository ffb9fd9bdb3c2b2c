"""A rate-limited link on one machine, for notebook 07: labnet's server on one side, its clients on the other.

>>> ok, why = can_link()
>>> with Link(rate_mbit=40) as link:                  # a veth pair; tbf limits each direction to 40 Mbit/s
...     rows = link.measure(size=1_000_000, clients=(1, 2, 4), encodings=("raw", "b64"), repeats=3)

How: a network namespace of its own holds the clients' end of a **veth pair** (two virtual
network cards joined by a cable); the other end stays in this machine's namespace, where labnet's
server (a ``BackgroundServer``) listens on that end's address only.  Each end's outgoing traffic goes
through a **token bucket filter** (``tc qdisc ... tbf rate R``): at most R bits per second, like a
real link (netem is not available everywhere; tbf is in every kernel).  The clients run
``python -m labnet.notebook.lablink`` inside the namespace (``ip netns exec``): one process for all the
runs of a measurement, which prints one JSON line per ``stress.run``.

Leftovers: namespaces outlive a killed kernel, so every name starts with :data:`PREFIX` and carries
the PID of its maker (``labnet.measure.netns``); :func:`remove_stale` (called by every new
:class:`Link`) deletes those whose maker is gone, and deleting a namespace deletes its veth pair, so
nothing is left in this machine's namespace either.  Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN)
and ``ip``/``tc`` (iproute2): :func:`can_link` says whether this machine allows it, and why not.

:data:`RECORDED` holds figures measured on a machine that could (labelled as recorded), for the
notebook to show where namespaces cannot be made.

Imports ``labnet.measure`` (launcher, netns, files, stress) only; no widgets, no matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from labnet.errors import LabnetError
from labnet.measure import netns, stress
from labnet.measure.files import make_test_file, test_file_name
from labnet.measure.launcher import BackgroundServer

PREFIX = "labnet-link-"
SUBNET = "10.77"  # 10.77.X.0/30 per link: .1 the server's end, .2 the clients'
RUN_TIMEOUT = 300.0  # seconds the clients' process may take for a whole measurement


class LinkError(LabnetError):
    """The link could not be built or the clients' process failed."""


def _run(*argv: str) -> None:
    tool = shutil.which(argv[0]) or f"/usr/sbin/{argv[0]}"
    done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise LinkError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def can_link() -> tuple[bool, str]:
    """``(True, how)`` when a namespace, a veth pair and tbf can be made here, else ``(False, why not)``."""
    if shutil.which("tc") is None and not Path("/usr/sbin/tc").exists():
        return False, "the tc command (iproute2) is not installed"
    ok, why = netns.can_create(PREFIX)
    return (True, "network namespaces, veth and tbf work here (root)") if ok else (False, why)


def remove_stale() -> list[str]:
    """Delete the link namespaces (and so their veth pairs) of runs that are gone; return their names."""
    return netns.remove_stale(PREFIX)


def _used_subnets() -> set[str]:
    done = subprocess.run([shutil.which("ip") or "/usr/sbin/ip", "-o", "-4", "addr", "show"], capture_output=True,
                          text=True, timeout=20)  # fmt: skip
    return {word.split("/")[0].rsplit(".", 1)[0] for word in done.stdout.split() if word.startswith(SUBNET + ".")}


class Link:
    """A veth pair limited to ``rate_mbit`` Mbit/s each way (tbf), the clients' end in a namespace of its own.

    ``server_ip`` / ``client_ip``: the two ends' addresses.  A context manager: the namespace (and with
    it both ends of the pair) is deleted on exit, also on an error.
    """

    def __init__(self, rate_mbit: float = 40.0, burst_bytes: int = 32 * 1024, latency_ms: int = 100):
        self.rate_mbit, self.burst_bytes, self.latency_ms = float(rate_mbit), int(burst_bytes), int(latency_ms)
        self.ns = netns.new_name(PREFIX)
        number = self.ns[len(PREFIX):].replace("-", "")
        self.server_if, self.client_if = f"lk{number}s"[-15:], f"lk{number}c"[-15:]
        self.server_ip = self.client_ip = ""

    @property
    def rate_bytes(self) -> float:
        """The limit in bytes per second (1 Mbit = 10^6 bits)."""
        return self.rate_mbit * 1e6 / 8

    def __enter__(self) -> Link:
        remove_stale()
        used = _used_subnets()
        third = next((x for x in range(os.getpid() % 200, 256) if f"{SUBNET}.{x}" not in used), None)
        if third is None:
            raise LinkError(f"no free {SUBNET}.X.0/30 subnet for the link")
        self.server_ip, self.client_ip = f"{SUBNET}.{third}.1", f"{SUBNET}.{third}.2"
        netns.create(self.ns)
        try:
            rate, tbf = f"{self.rate_mbit:g}mbit", ["burst", str(self.burst_bytes), "latency", f"{self.latency_ms}ms"]
            _run("ip", "link", "add", self.server_if, "type", "veth", "peer", "name", self.client_if, "netns", self.ns)
            _run("ip", "addr", "add", f"{self.server_ip}/30", "dev", self.server_if)
            _run("ip", "link", "set", self.server_if, "up")
            _run("ip", "-n", self.ns, "addr", "add", f"{self.client_ip}/30", "dev", self.client_if)
            _run("ip", "-n", self.ns, "link", "set", self.client_if, "up")
            _run("tc", "qdisc", "add", "dev", self.server_if, "root", "tbf", "rate", rate, *tbf)  # downloads
            _run("ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", self.client_if, "root", "tbf",
                 "rate", rate, *tbf)  # uploads  # fmt: skip
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        netns.delete(self.ns)  # kills what runs inside, deletes the namespace: both veth ends go with it

    def __exit__(self, *exc) -> None:
        self.close()

    def measure(self, size: int, clients=(1, 2, 4), encodings=("raw", "b64"), repeats: int = 3,
                op: str = "download") -> list[dict]:  # fmt: skip
        """Run ``op`` of a ``size``-byte file for every (repeat, clients, encoding), interleaved, with labnet's
        thread server (``max(clients)`` workers: nobody queues) here and the clients across the link.
        Rows: ``clients``, ``encoding``, ``repeat``, ``wall_s``, ``time_mean_s``, ``throughput_mean``
        (file bytes/s per client), ``wire_rate`` (bytes on the wire/s over the run), ``ok``, ``failed``,
        ``digest_ok`` (every client's file had the server's SHA-256)."""
        work = Path(tempfile.mkdtemp(prefix="labnet-link-"))
        try:
            root, files, downloads = (work / d for d in ("server_files", "client_files", "client_downloads"))
            for d in (root, files, downloads):
                d.mkdir()
            digest = stress.file_sha256(make_test_file(root, size))
            argv = [sys.executable, "-m", "labnet.notebook.lablink", "--host", self.server_ip, "--size", str(size),
                    "--clients", ",".join(map(str, clients)), "--encodings", ",".join(encodings),
                    "--repeats", str(repeats), "--op", op, "--files", str(files), "--dest", str(downloads)]  # fmt: skip
            with BackgroundServer("thread", workers=max(clients), host=self.server_ip, root=root, status_every=0) as srv:
                argv += ["--port", str(srv.port)]
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                                 os.environ.get("PYTHONPATH")])))  # fmt: skip
                done = subprocess.run(netns.exec_argv(self.ns, argv), capture_output=True, text=True,
                                      timeout=RUN_TIMEOUT, env=env)  # fmt: skip
            if done.returncode != 0:
                raise LinkError(f"the clients' process failed ({done.returncode}): {done.stderr.strip()[-500:]}")
            rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            for row in rows:
                row["digest_ok"] = row.pop("digest") == digest and row["failed"] == 0
            return rows
        finally:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------
# Reading the rows
# ---------------------------------------------------------------------------


def summarize(rows: list[dict], rate_bytes: float) -> dict:
    """Medians over the repeats, per (clients, encoding): time per client, throughput per client and the
    wire's use of the link; and the two claims' ratios, per repeat then their median and spread:
    ``share`` = per-client throughput with 1 client / with N, divided by N (1: each of N gets 1/N), and
    ``b64_over_raw`` = the run's total time (until the last client is done) with base64 / raw: 4/3 on a
    full link (the mean per client also depends on how evenly the clients happen to share)."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["clients"], r["encoding"]), []).append(r)
    table = {key: {"time_mean_s": statistics.median(r["time_mean_s"] for r in rs),
                   "wall_s": statistics.median(r["wall_s"] for r in rs),
                   "throughput_mean": statistics.median(r["throughput_mean"] for r in rs),
                   "link_use": statistics.median(r["wire_rate"] for r in rs) / rate_bytes, "runs": len(rs)}
             for key, rs in sorted(cells.items())}  # fmt: skip
    by_repeat: dict[int, dict] = {}
    for r in rows:
        by_repeat.setdefault(r["repeat"], {})[(r["clients"], r["encoding"])] = r
    most = max(r["clients"] for r in rows)
    share, b64 = [], []
    for cell in by_repeat.values():
        for enc in ("raw", "b64"):
            if (1, enc) in cell and (most, enc) in cell and most > 1:
                share.append(cell[(1, enc)]["throughput_mean"] / cell[(most, enc)]["throughput_mean"] / most)
        for n in {c for c, _ in cell}:
            if (n, "raw") in cell and (n, "b64") in cell:
                b64.append(cell[(n, "b64")]["wall_s"] / cell[(n, "raw")]["wall_s"])

    def spread(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)} \
            if values else None  # fmt: skip

    return {"table": table, "most_clients": most, "share": spread(share), "b64_over_raw": spread(b64),
            "all_ok": all(r["digest_ok"] for r in rows), "runs": len(rows)}  # fmt: skip


def format_summary(s: dict, rate_mbit: float, size: int) -> str:
    out = [f"link {rate_mbit:g} Mbit/s = {rate_mbit / 8:g} MB/s each way; {size / 1e6:g} MB per client "
           f"(MB = 10^6 bytes); medians over the repeats",
           f"{'clients':>7} {'encoding':>8} {'s per client':>12} {'run total s':>11} {'MB/s per client':>15} "
           f"{'link used':>9}"]  # fmt: skip
    for (n, enc), c in s["table"].items():
        out.append(f"{n:>7} {enc:>8} {c['time_mean_s']:>12.3f} {c['wall_s']:>11.3f} {c['throughput_mean'] / 1e6:>15.2f} "
                   f"{c['link_use']:>9.0%}")  # fmt: skip
    if s["share"]:
        out.append(f"per-client throughput, 1 client / {s['most_clients']} clients, divided by {s['most_clients']}: "
                   f"{s['share']['median']:.2f} (range {s['share']['min']:.2f}-{s['share']['max']:.2f}; 1 = each gets 1/N)")
    if s["b64_over_raw"]:
        b = s["b64_over_raw"]
        out.append(f"run total, b64 / raw: {b['median']:.2f} (range {b['min']:.2f}-{b['max']:.2f}; "
                   f"4/3 = 1.33 on a full link)")  # fmt: skip
    return "\n".join(out)


# Shown by notebook 07 where namespaces cannot be made, labelled as recorded: the rows of
# Link(rate_mbit=40).measure(500_000, (1, 4), ("raw", "b64"), repeats=3) on a 2-core Linux VM (Python 3.11,
# root, other test runs on the machine at the same time), 2026-12-02.
RECORDED: dict = {
    "when": "2026-12-02", "machine": "2-core Linux VM, Python 3.11, busy with other runs", "rate_mbit": 40.0,
    "size": 500_000,
    "rows": [
        {"clients": 1, "encoding": 'raw', "repeat": 0, "wall_s": 0.1058, "time_mean_s": 0.1036, "throughput_mean": 4827822, "wire_rate": 4726797, "ok": 1, "failed": 0, "digest_ok": True},
        {"clients": 1, "encoding": 'b64', "repeat": 0, "wall_s": 0.1367, "time_mean_s": 0.1362, "throughput_mean": 3670728, "wire_rate": 4875323, "ok": 1, "failed": 0, "digest_ok": True},
        {"clients": 4, "encoding": 'raw', "repeat": 0, "wall_s": 0.4171, "time_mean_s": 0.3761, "throughput_mean": 1345826, "wire_rate": 4794963, "ok": 4, "failed": 0, "digest_ok": True},
        {"clients": 4, "encoding": 'b64', "repeat": 0, "wall_s": 0.555, "time_mean_s": 0.5127, "throughput_mean": 986377, "wire_rate": 4805009, "ok": 4, "failed": 0, "digest_ok": True},
        {"clients": 1, "encoding": 'raw', "repeat": 1, "wall_s": 0.0998, "time_mean_s": 0.0991, "throughput_mean": 5045253, "wire_rate": 5010016, "ok": 1, "failed": 0, "digest_ok": True},
        {"clients": 1, "encoding": 'b64', "repeat": 1, "wall_s": 0.1356, "time_mean_s": 0.1351, "throughput_mean": 3700890, "wire_rate": 4915798, "ok": 1, "failed": 0, "digest_ok": True},
        {"clients": 4, "encoding": 'raw', "repeat": 1, "wall_s": 0.4447, "time_mean_s": 0.355, "throughput_mean": 1630659, "wire_rate": 4497595, "ok": 4, "failed": 0, "digest_ok": True},
        {"clients": 4, "encoding": 'b64', "repeat": 1, "wall_s": 0.6207, "time_mean_s": 0.4093, "throughput_mean": 1479198, "wire_rate": 4295987, "ok": 4, "failed": 0, "digest_ok": True},
        {"clients": 1, "encoding": 'raw', "repeat": 2, "wall_s": 0.1016, "time_mean_s": 0.1006, "throughput_mean": 4968947, "wire_rate": 4921567, "ok": 1, "failed": 0, "digest_ok": True},
        {"clients": 1, "encoding": 'b64', "repeat": 2, "wall_s": 0.1352, "time_mean_s": 0.1347, "throughput_mean": 3712179, "wire_rate": 4930986, "ok": 1, "failed": 0, "digest_ok": True},
        {"clients": 4, "encoding": 'raw', "repeat": 2, "wall_s": 0.4156, "time_mean_s": 0.3456, "throughput_mean": 1561144, "wire_rate": 4811814, "ok": 4, "failed": 0, "digest_ok": True},
        {"clients": 4, "encoding": 'b64', "repeat": 2, "wall_s": 0.5719, "time_mean_s": 0.4794, "throughput_mean": 1064537, "wire_rate": 4662457, "ok": 4, "failed": 0, "digest_ok": True},
    ],
}  # fmt: skip


# ---------------------------------------------------------------------------
# The clients' side: python -m labnet.notebook.lablink (inside the namespace)
# ---------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m labnet.notebook.lablink", description="stress runs, one JSON line each")
    for flag in ("--host", "--files", "--dest", "--op"):
        p.add_argument(flag, required=flag != "--op", default="download")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--clients", default="1,2,4")
    p.add_argument("--encodings", default="raw,b64")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    for repeat in range(args.repeats):
        for n in (int(c) for c in args.clients.split(",")):
            for enc in args.encodings.split(","):
                res = stress.run(args.op, args.size, n, "thread", args.host, args.port, encoding=enc,
                                 files_dir=args.files, downloads_dir=args.dest, keep_downloads=False,
                                 progress=False, name=test_file_name(args.size), timeout=60, time_limit=RUN_TIMEOUT)  # fmt: skip
                s = res.summary
                wire = sum(r.bytes for r in res.records if r.ok) * (4 / 3 if enc == "b64" else 1)
                print(json.dumps({"clients": n, "encoding": enc, "repeat": repeat, "wall_s": s["wall_seconds"],
                                  "time_mean_s": s["time_mean"], "throughput_mean": s["throughput_mean"],
                                  "wire_rate": wire / s["wall_seconds"], "ok": s["ok"], "failed": s["failed"],
                                  "digest": s["digest"]}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
