"""What the stress dashboard shows: counters, summaries, timelines, and the live-counters widget.

* :class:`LiveCounters`: a server's counters, live, as one HTML widget, for notebooks 03/04 (read from
  the counters listener: no worker taken; see ``labnet.notebook.dashboard`` for why not ``STATS``).
* Pure rendering functions (HTML tables, matplotlib timelines, PNG bytes),
  easy to test without a browser.

Must not import ``labnet.notebook.dashboard`` (which builds on this module) nor run
stress tests itself.
"""

from __future__ import annotations

import html
import io
import threading
from typing import TYPE_CHECKING

from labnet.config import MB

if TYPE_CHECKING:
    from labnet.measure.launcher import BackgroundServer


def _fmt(value, unit="s", scale=1.0, digits=3) -> str:
    return "–" if value is None else f"{value / scale:.{digits}f} {unit}"


def counters_html(snap: dict | None, source: str = "", server: str = "") -> str:
    if not snap:
        return f"<div class='labnet-counters-body'><b>Server counters</b><br><i>{html.escape(server or 'no server yet')}</i></div>"
    v = snap.get("verbs", {})

    def pair(verb):
        c = v.get(verb, {"ok": 0, "failed": 0})
        return f"{c['ok']} / {c['failed']}"

    rows = [("server", html.escape(server)), ("active / waiting", f"{snap.get('active', 0)} / {snap.get('waiting', 0)}"),
            ("upload ok / failed", pair("UPLOAD")), ("download ok / failed", pair("DOWNLOAD")),
            ("all requests ok / failed", f"{snap.get('ok', 0)} / {snap.get('failed', 0)}"),
            ("refused busy", str(snap.get("busy", 0))),
            ("bytes in / out", f"{snap.get('bytes_in', 0) / MB:.1f} / {snap.get('bytes_out', 0) / MB:.1f} MB")]  # fmt: skip
    body = "".join(f"<tr><td>{k}</td><td style='text-align:right'><b>{val}</b></td></tr>" for k, val in rows)
    return (f"<div class='labnet-counters-body'><b>Server counters</b> <small>({html.escape(source)})</small>"
            f"<table>{body}</table></div>")  # fmt: skip


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    s = summary
    failures = ", ".join(f"{k} {n}" for k, n in sorted(s.get("failures", {}).items()))
    server = (f"{s['server_ok']} ok / {s['server_failed']} failed" if s.get("server_measured")
              else f"not measured ({s.get('server_note') or 'STATS unavailable'})")  # fmt: skip
    return [
        ("run", f"{s['op']} {s['size_label']} × {s['clients']} {s['pool']} client workers ({s['encoding']}"
                + (f", base64 with {s['base64']}" if s.get("base64") and s["encoding"] == "b64" else "") + ")"),
        ("client workers ok / failed", f"{s['ok']} / {s['failed']}" + (f" ({failures})" if failures else "")),
        ("server workers ok / failed (STATS)", server),
        ("time per client: mean / p50 / p95 / max",
         " / ".join(_fmt(s[k], "s", 1, 3) for k in ("time_mean", "time_p50", "time_p95", "time_max"))),
        ("waiting to be served (mean)", _fmt(s.get("wait_mean"))),
        ("transferring (mean)", _fmt(s.get("transfer_mean"))),
        ("throughput per client (mean)", _fmt(s.get("throughput_mean"), "MB/s", MB, 2)),
        ("aggregate throughput", _fmt(s.get("throughput_aggregate"), "MB/s", MB, 2)),
        ("wall time", _fmt(s.get("wall_seconds"), "s", 1, 2)),
    ]  # fmt: skip


def summary_html(summary: dict, server_desc: str = "") -> str:
    s = summary
    rows = summary_rows(s)
    if server_desc:
        rows.insert(1, ("server", server_desc))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{html.escape(v)}</b></td></tr>" for k, v in rows)
    state = "CANCELLED" if s.get("cancelled") else ("all ok" if s["failed"] == 0 else "with failures")
    colour = "#1b7f3b" if state == "all ok" else "#b00020"
    return (f"<div class='labnet-summary-body' data-ok='{s['ok']}' data-failed='{s['failed']}' "
            f"data-server-ok='{s.get('server_ok')}' data-clients='{s['clients']}'>"
            f"<b>Summary</b> <span style='color:{colour}'>({state})</span>"
            f"<table>{body}</table><small>MB = 10<sup>6</sup> bytes</small></div>")  # fmt: skip


def draw_timeline(ax, result, title: str | None = None, legend: bool = True) -> None:
    """Each client of a run as a bar from the common start: grey while waiting to be served, then transferring.

    Blue for a client that succeeded, red for one that failed.  Clients are
    drawn in the order the server took them (shortest wait first), so a
    queue shows as a staircase; the labels are the client workers' ids.
    """
    recs = sorted(result.records, key=lambda r: (r.wait_seconds, r.worker))
    pos = list(range(len(recs)))
    wait = [r.wait_seconds for r in recs]
    transfer = [r.transfer_seconds if r.ok else max(r.total_seconds - r.wait_seconds, 0) for r in recs]
    ax.barh(pos, wait, color="#c7c7c7", label="waiting to be served")
    ax.barh(pos, transfer, left=wait, color=["#4c72b0" if r.ok else "#c44e52" for r in recs], label="transferring")
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the common start")
    ax.set_ylabel("client worker (in the order served)")
    s = result.summary
    ax.set_title(title or f"{s['op']} {s['size_label']} × {s['clients']}: where each client's time went")
    if len(pos) <= 20:
        ax.set_yticks(pos, [str(r.worker) for r in recs])
    else:
        ax.set_yticks([])
    if legend:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small", frameon=False)


def plot_run(result, history=()):
    """Left: each client's time, waiting vs transferring.  Right: throughput per client for every run so far."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    draw_timeline(ax1, result)

    runs = list(history)[-8:]
    labels = [f"#{i}\n{'down' if r.summary['op'] == 'download' else 'up'} {r.summary['size_label']}\n×{r.summary['clients']} {r.config.get('server', '')}"
              for i, r in enumerate(runs, start=max(1, len(history) - len(runs) + 1))]  # fmt: skip
    vals = [(r.summary.get("throughput_mean") or 0) / MB for r in runs]
    bars = ax2.bar(range(len(runs)), vals, color="#55a868")
    ax2.bar_label(bars, fmt="%.1f", fontsize="small")
    ax2.set_xticks(range(len(runs)), labels, fontsize="x-small")
    ax2.set_ylabel("MB/s per client, mean (MB = 10^6 B)")
    ax2.set_title("Throughput per client, run by run")
    if vals:
        ax2.set_ylim(0, max(vals) * 1.2 or 1)
    return fig


class LiveCounters:
    """A live view of a server's counters while a cell works: ``with LiveCounters(srv): stress.run(...)``.

    Reads the server's counters listener (``BackgroundServer.counters()``: a
    second port answered by the accept loop itself), so it never takes a
    worker away from the clients and shows what happened even for a run
    shorter than one status line; at the end it shows the exact counters
    once more.  ``peak`` keeps the highest ``active`` and ``waiting`` seen.
    """

    def __init__(self, server: BackgroundServer, every: float = 0.25):
        import ipywidgets as W

        self.server, self.every = server, every
        self.widget = W.HTML(counters_html(None, server="reading the server's counters..."))
        self.widget.add_class("labnet-counters")
        self.peak = {"active": 0, "waiting": 0}
        self.final: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labnet-live-counters", daemon=True)

    def _desc(self) -> str:
        s = self.server
        return f"{s.model} pool × {s.workers} on {s.address[0]}:{s.address[1]}"

    def _show(self) -> None:
        snap = self.server.counters()
        for k in self.peak:
            self.peak[k] = max(self.peak[k], snap.get(k, 0))
        self.widget.value = counters_html(snap, "live: the server's counters (no worker taken)", self._desc())

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self._show()
            except Exception:
                pass

    def __enter__(self) -> LiveCounters:
        from IPython.display import display

        display(self.widget)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            snap = self.server.counters()
            self.final = snap
            self.widget.value = counters_html(snap, "counters after the run", self._desc())
        except Exception as exc:
            self.widget.value = counters_html(None, server=f"reading the counters failed: {exc}")


def figure_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
