"""The lines a labnet server prints on its console, which labnet's own tools read back.

Each kind written and parsed here so that the two cannot drift apart:

* the **ready line**, printed once the server listens:
  ``labnet server ready on HOST:PORT (model=..., workers=..., root=...)``;
  ``labnet.measure.launcher`` waits for it to learn the port (``--port 0``);
* the **counters line**: one JSON object and a newline, the answer of the
  server's counters listener (``counters=HOST:PORT`` in the ready line), read
  by the launcher and the dashboards without taking a worker;
* the **connection log**: one JSON object per line, one line per closed
  connection (``labnet server --connection-log FILE``, written by
  ``labnet.server.connlog``), read by ``labnet matrix --client-cmd``;
* the **status line**, printed every ``status_every`` seconds and at exit,
  like the seed's "sukses/gagal" print:
  ``[labnet] ok=.. failed=.. (upload ../.., download ../.., list ../..) active=.. ...``;
  the notebooks' live counters read it from the server's log.

Imports nothing of labnet but ``config``; must not import socket, threading,
multiprocessing or os.
"""

from __future__ import annotations

import json
import re

from labnet.config import MB

READY_PREFIX = "labnet server ready on"


def ready_line(host: str, port: int, model: str, workers: int, root, counters=None, base64: str = "",
               dialect: str = "labnet") -> str:
    extra = f", dialect={dialect}" if dialect != "labnet" else ""  # what its clients must speak
    extra += f", counters={counters[0]}:{counters[1]}" if counters else ""
    extra += f", base64={base64}" if base64 else ""  # the codec backend its workers use (--base64)
    return f"{READY_PREFIX} {host}:{port} (model={model}, workers={workers}, root={root}{extra})"


def _address(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def parse_ready_line(line: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ready line, None if ``line`` is not one."""
    if not line.startswith(READY_PREFIX):
        return None
    return _address(line[len(READY_PREFIX):].split()[0])


def parse_counters_address(line: str) -> tuple[str, int] | None:
    """The counters listener's ``(host, port)`` named in a ready line, None if it names none."""
    m = re.search(r"[(, ]counters=(\S+?)[,)]", line) if line.startswith(READY_PREFIX) else None
    return _address(m.group(1)) if m else None


def parse_ready_base64(line: str) -> str | None:
    """The codec backend (``pybase64``/``binascii``) a ready line names, None if it names none."""
    m = re.search(r"[(, ]base64=(\w+)[,)]", line) if line.startswith(READY_PREFIX) else None
    return m.group(1) if m else None


def counters_line(snap: dict) -> bytes:
    return (json.dumps(snap, separators=(",", ":"), sort_keys=True) + "\n").encode()


def parse_counters_line(data: bytes) -> dict:
    """The counters of a :func:`counters_line`; ``ValueError`` if ``data`` is not one."""
    text = data.decode("utf-8", "replace").strip()
    snap = json.loads(text)
    if not isinstance(snap, dict) or "verbs" not in snap:
        raise ValueError(f"not a counters line: {text[:80]!r}")
    return snap


def status_line(snap: dict) -> str:
    """The periodic one-line status of a counters snapshot (``labnet.server.stats``)."""
    v = snap["verbs"]
    return (
        f"[labnet] ok={snap['ok']} failed={snap['failed']} "
        f"(upload {v['UPLOAD']['ok']}/{v['UPLOAD']['failed']}, "
        f"download {v['DOWNLOAD']['ok']}/{v['DOWNLOAD']['failed']}, "
        f"list {v['LIST']['ok']}/{v['LIST']['failed']}) "
        f"active={snap['active']} waiting={snap['waiting']} busy={snap['busy']} "
        f"in={snap['bytes_in'] / 1e6:.1f}MB out={snap['bytes_out'] / 1e6:.1f}MB"
    )


_STATUS_RE = re.compile(
    r"\[labnet\] ok=(?P<ok>\d+) failed=(?P<failed>\d+) "
    r"\(upload (?P<up_ok>\d+)/(?P<up_failed>\d+), download (?P<down_ok>\d+)/(?P<down_failed>\d+), "
    r"list (?P<list_ok>\d+)/(?P<list_failed>\d+)\) "
    r"active=(?P<active>\d+) waiting=(?P<waiting>\d+) busy=(?P<busy>\d+) "
    r"in=(?P<in_mb>[\d.]+)MB out=(?P<out_mb>[\d.]+)MB"
)


def parse_status_line(line: str) -> dict | None:
    """The counters of one :func:`status_line` (None if ``line`` is not one)."""
    m = _STATUS_RE.search(line)
    if not m:
        return None
    g = {k: (float(v) if k.endswith("_mb") else int(v)) for k, v in m.groupdict().items()}
    return {
        "ok": g["ok"], "failed": g["failed"], "active": g["active"], "waiting": g["waiting"], "busy": g["busy"],
        "bytes_in": int(g["in_mb"] * MB), "bytes_out": int(g["out_mb"] * MB),
        "verbs": {"UPLOAD": {"ok": g["up_ok"], "failed": g["up_failed"]},
                  "DOWNLOAD": {"ok": g["down_ok"], "failed": g["down_failed"]},
                  "LIST": {"ok": g["list_ok"], "failed": g["list_failed"]}},
    }  # fmt: skip


def parse_connection_log(data: bytes) -> list[dict]:
    """Every complete JSON object line of a connection log's bytes, in order.

    A last line without its newline is left out (a line still being written, or a writer killed
    mid-way); so is a line that is not a JSON object.
    """
    lines = data.split(b"\n")
    if lines and lines[-1]:
        lines = lines[:-1]
    out = []
    for raw in lines:
        try:
            obj = json.loads(raw) if raw.strip() else None
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
