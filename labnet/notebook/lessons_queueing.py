"""Notebook 03's queueing lesson: why N clients take longer *per client* with N server workers than with one.

What it holds:

* :func:`queue_figures` -- one stress run reduced to what the lesson needs: the run's total
  (wall time, common start to the last client done), the mean time per client, its waiting and
  transferring parts, and the two textbook predictions computed from that measured total;
* :func:`fcfs_vs_sharing` -- N clients against 1 server worker and against N, repeated and
  interleaved (load on the machine hits both alike); :func:`compare` reduces the pairs to the
  measured ratio of mean times per client and the ratio the models predict from the measured
  totals, with medians and spread; :func:`plot_fcfs_vs_sharing` draws them;
* :func:`burst_against_backlogs` -- the listen-backlog burst (``labnet.notebook.lessons_course``'s
  measuring helper, reused) with its per-backlog summary.

The two models, for N equal transfers that together take a total T_total of server time:

* **first come, first served** (1 worker): client k is done at k * T_total / N, so the mean time
  per client is (N + 1) / (2N) * T_total -- about half the total;
* **sharing** (N workers, every transfer progressing at once): every client is done near the end,
  so the mean time per client is about T_total.

So with the *same* total the mean per client is about 2N / (N + 1) times longer when shared (1.6x
for 4 clients, ~2x for 50), and nobody is faster: the first clients in line lose most.  The totals
are measured, not assumed equal: more workers can also change the total (overhead of a big pool,
or two cores doing two transfers at once), and the prediction uses the totals measured.

Imports the measuring tools (``labnet.measure``) and the launcher; matplotlib only inside the plot.
"""

from __future__ import annotations

import statistics

from labnet.measure import stress
from labnet.measure.launcher import BackgroundServer
from labnet.notebook import lessons_course


def fcfs_mean(total: float, clients: int) -> float:
    """Mean time per client when ``clients`` equal jobs of ``total`` seconds together run one after another."""
    return (clients + 1) / (2 * clients) * total


def queue_figures(result) -> dict:
    """The lesson's numbers for one ``StressResult`` (measured), with both models' predictions from its total."""
    s = result.summary
    n, total = s["clients"], s["wall_seconds"]
    return {"clients": n, "server_workers": result.config.get("server_workers"), "total_s": total,
            "mean_s": s["time_mean"], "wait_mean_s": s["wait_mean"], "transfer_mean_s": s["transfer_mean"],
            "fcfs_prediction_s": fcfs_mean(total, n), "sharing_prediction_s": total, "queued": s.get("queued", 0)}  # fmt: skip


def fcfs_vs_sharing(volume, clients: int, repeats: int = 3, op: str = "download", progress=None,
                    **server_kw) -> list[tuple]:  # fmt: skip
    """``repeats`` pairs ``(one_worker_result, n_workers_result)``: ``clients`` clients, one server of each
    size (started once, thread model), runs interleaved.  ``progress``: called after each run."""
    pairs = []
    with BackgroundServer("thread", workers=1, **server_kw) as one, \
            BackgroundServer("thread", workers=clients, **server_kw) as many:  # fmt: skip
        for _ in range(repeats):
            pair = []
            for srv in (one, many):
                res = stress.run(op, volume, clients, "thread", *srv.address, progress=False, keep_downloads=False)
                res.config["server_workers"] = srv.workers
                pair.append(res)
                if progress:
                    progress()
            pairs.append(tuple(pair))
    return pairs


def _spread(values) -> dict:
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def compare(pairs) -> dict:
    """Medians and spread over the repeats: measured totals and means, and the ratio of mean time per client
    (N workers / 1 worker) measured vs predicted from the measured totals (sharing over FCFS)."""
    rows = []
    for fcfs, shared in pairs:
        a, b = queue_figures(fcfs), queue_figures(shared)
        rows.append({"fcfs": a, "shared": b, "ratio_measured": b["mean_s"] / a["mean_s"],
                     "ratio_predicted": b["sharing_prediction_s"] / a["fcfs_prediction_s"],
                     "fcfs_fit": a["mean_s"] / a["fcfs_prediction_s"],
                     "sharing_fit": b["mean_s"] / b["sharing_prediction_s"],
                     # in a queue, client k waits for the k-1 transfers ahead: (N-1)/2 transfers on average
                     "fcfs_wait_fit": a["wait_mean_s"] / (max(a["clients"] - 1, 1) / 2 * a["transfer_mean_s"])})  # fmt: skip
    return {
        "clients": rows[0]["fcfs"]["clients"], "repeats": len(rows), "rows": rows,
        "total_fcfs_s": _spread(r["fcfs"]["total_s"] for r in rows),
        "total_shared_s": _spread(r["shared"]["total_s"] for r in rows),
        "mean_fcfs_s": _spread(r["fcfs"]["mean_s"] for r in rows),
        "mean_shared_s": _spread(r["shared"]["mean_s"] for r in rows),
        "wait_fcfs_s": _spread(r["fcfs"]["wait_mean_s"] for r in rows),
        "wait_shared_s": _spread(r["shared"]["wait_mean_s"] for r in rows),
        "transfer_fcfs_s": _spread(r["fcfs"]["transfer_mean_s"] for r in rows),
        "transfer_shared_s": _spread(r["shared"]["transfer_mean_s"] for r in rows),
        "ratio_measured": _spread(r["ratio_measured"] for r in rows),
        "ratio_predicted": _spread(r["ratio_predicted"] for r in rows),
        "agreement": _spread(r["ratio_measured"] / r["ratio_predicted"] for r in rows),
        "fcfs_fit": _spread(r["fcfs_fit"] for r in rows),
        "sharing_fit": _spread(r["sharing_fit"] for r in rows),
        "fcfs_wait_fit": _spread(r["fcfs_wait_fit"] for r in rows),
    }  # fmt: skip


def format_comparison(c: dict) -> str:
    def line(label, key, unit="s"):
        v = c[key]
        return f"{label:<52} {v['median']:8.3f} {unit} (min {v['min']:.3f}, max {v['max']:.3f})"

    n = c["clients"]
    return "\n".join([
        f"{n} clients, medians over {c['repeats']} repeats (min and max in brackets):",
        line("total, 1 worker (wall time of the run)", "total_fcfs_s"),
        line(f"total, {n} workers", "total_shared_s"),
        line("mean time per client, 1 worker", "mean_fcfs_s"),
        line("   of which waiting for the worker", "wait_fcfs_s"),
        line("   of which transferring", "transfer_fcfs_s"),
        line(f"mean time per client, {n} workers", "mean_shared_s"),
        line("   of which waiting", "wait_shared_s"),
        line("   of which transferring", "transfer_shared_s"),
        line("mean / FCFS prediction (N+1)/2N x total, 1 worker", "fcfs_fit", "x"),
        line("wait / ((N-1)/2 x transfer), 1 worker", "fcfs_wait_fit", "x"),
        line(f"mean / sharing prediction (total), {n} workers", "sharing_fit", "x"),
        line(f"ratio of means, {n} workers / 1 worker: measured", "ratio_measured", "x"),
        line("                                 predicted", "ratio_predicted", "x"),
    ])  # fmt: skip


def plot_fcfs_vs_sharing(c: dict, title: str = ""):
    """Per repeat: mean time per client (bars: waiting + transferring) beside each run's total (a line),
    and the FCFS prediction (a tick): the 1-worker mean sits near half the total, the N-worker mean near all of it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 3.4), layout="constrained")
    ax = fig.subplots()
    n = c["clients"]
    x, labels = [], []
    for i, row in enumerate(c["rows"]):
        for j, key in enumerate(("fcfs", "shared")):
            f = row[key]
            pos = i * 3 + j
            x.append(pos)
            labels.append(f"#{i + 1}\n{'1 worker' if key == 'fcfs' else f'{n} workers'}")
            ax.bar(pos, f["wait_mean_s"], color="#c7c7c7", label="waiting (mean)" if pos == 0 else None)
            ax.bar(pos, f["transfer_mean_s"], bottom=f["wait_mean_s"], color="#4c72b0",
                   label="transferring (mean)" if pos == 0 else None)  # fmt: skip
            ax.hlines(f["total_s"], pos - 0.4, pos + 0.4, color="k", label="run's total" if pos == 0 else None)
            if key == "fcfs":
                ax.hlines(f["fcfs_prediction_s"], pos - 0.4, pos + 0.4, color="#c44e52", linestyles="--",
                          label="FCFS prediction (N+1)/2N x total" if pos == 0 else None)  # fmt: skip
    ax.set_xticks(x, labels, fontsize="small")
    ax.set_ylabel("seconds")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or f"{n} clients: mean time per client against the run's total")
    return fig


# ---------------------------------------------------------------------------
# The listen backlog (the measuring helper is lessons_course's)
# ---------------------------------------------------------------------------


def burst_against_backlogs(backlogs=(1, 128), clients: int = 50, repeats: int = 3, timeout: float = 2.5,
                           progress=None) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """``clients`` simultaneous connects (each one ``LIST``) against the course-shaped server listening with
    each backlog, ``repeats`` times: ``(rows, summary)`` from ``lessons_course.measure_backlog`` /
    ``backlog_summary`` (``slow``: replies after more than ``lessons_course.SLOW_CONNECT`` s)."""
    rows = lessons_course.measure_backlog(backlogs, clients=clients, repeats=repeats, timeout=timeout,
                                          progress=progress)  # fmt: skip
    return rows, lessons_course.backlog_summary(rows)


def format_backlogs(summary: list[dict]) -> str:
    out = [f"{'backlog':>7} {'runs':>4} {'clients':>7} {'slow or no reply per run':>24} {'median reply':>12} "
           f"{'p95 reply':>9}"]  # fmt: skip
    for s in summary:
        med = "-" if s["median_s"] is None else f"{s['median_s'] * 1000:.0f} ms"
        p95 = "-" if s["p95_s"] is None else f"{s['p95_s'] * 1000:.0f} ms"
        out.append(f"{s['backlog']:>7} {s['runs']:>4} {s['clients']:>7} "
                   f"{', '.join(map(str, s['slow_or_missing_per_run'])):>24} {med:>12} {p95:>9}")  # fmt: skip
    return "\n".join(out)
