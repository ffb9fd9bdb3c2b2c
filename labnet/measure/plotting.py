"""Plots of the ETS matrix with matplotlib: returned as figures, saved as PNG.

>>> fig = plot_throughput(result.rows)     # a matplotlib Figure; a notebook shows it
>>> figures, paths = save_all(result.rows, "results/ets")

Input rows are the typed row dicts of :mod:`labnet.measure.matrix_run` (``rows``
of a ``MatrixResult`` or the values of ``read_rows``).  Only rows with
status ``ok``/``failed`` and a measured value are drawn; skipped rows are not.
Every plot is split by server model, thread and process side by side, and
says MB = 10^6 bytes where MB appears.

Agg-safe: figures are ``matplotlib.figure.Figure`` objects built without
pyplot, so no GUI backend, no global figure list to leak, and it works the
same in a terminal, under pytest and in JupyterLab (display the figure).

Must not import pyplot, sockets or labnet's network modules.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from labnet.config import MB, SERVER_MODELS

PLOT_OPS = ("download", "upload")  # the order of the panels
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v")
DONE = ("ok", "failed")


def _select(rows, client_pool: str | None):
    rows = [r for r in rows if r.get("status") in DONE]
    if client_pool is None and rows:
        pools = sorted({r["client_pool"] for r in rows})
        client_pool = "thread" if "thread" in pools else pools[0]
    return [r for r in rows if r["client_pool"] == client_pool], client_pool


def _grid(rows, height=3.2, width=5.0):
    models = [m for m in SERVER_MODELS if any(r["server_model"] == m for r in rows)] or list(SERVER_MODELS)
    ops = [o for o in PLOT_OPS if any(r["op"] == o for r in rows)] or list(PLOT_OPS)
    fig = Figure(figsize=(width * len(models), height * len(ops) + 0.8), layout="constrained")
    axes = fig.subplots(len(ops), len(models), squeeze=False, sharex=True, sharey="row")
    return fig, axes, ops, models


def _log_x(ax, xs) -> None:
    xs = sorted(set(xs))
    if not xs:
        return
    if max(xs) / min(xs) >= 5:
        ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.minorticks_off()


def _volume_label(volume: int) -> str:
    return f"{volume / MB:g} MB"


def _series(rows) -> tuple[list, list, dict]:
    """The volumes and server pool sizes present, and a colour per volume."""
    volumes = sorted({r["volume_bytes"] for r in rows})
    servers = sorted({r["server_workers"] for r in rows})
    return volumes, servers, {v: f"C{i}" for i, v in enumerate(volumes)}


def _panel(ax, rows, title: str, ylabel: str, bottom: bool, left: bool) -> None:
    """What every panel of the grid shares: log-x client workers, title, grid, outer labels."""
    _log_x(ax, [r["client_workers"] for r in rows])
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if bottom:
        ax.set_xlabel("client workers")
    if left:
        ax.set_ylabel(ylabel)


def _empty(fig: Figure, title: str) -> Figure:
    fig.suptitle(title)
    fig.text(0.5, 0.5, "no finished rows to plot", ha="center", va="center")
    return fig


def plot_throughput(rows, client_pool: str | None = None) -> Figure:
    """Throughput per client (MB/s) against client workers: a line per volume (colour) and
    server pool size (line style); operations in rows, server models side by side."""
    rows, pool = _select(rows, client_pool)
    fig, axes, ops, models = _grid(rows)
    title = f"Throughput per client vs client workers ({pool} client pool; MB = 10^6 bytes)"
    if not rows:
        return _empty(fig, title)
    volumes, servers, colors = _series(rows)
    for i, op in enumerate(ops):
        for j, model in enumerate(models):
            ax = axes[i][j]
            sub = [r for r in rows if r["op"] == op and r["server_model"] == model]
            for v in volumes:
                for k, sw in enumerate(servers):
                    pts = sorted((r["client_workers"], r["throughput_mean_Bps"] / MB) for r in sub
                                 if r["volume_bytes"] == v and r["server_workers"] == sw
                                 and r.get("throughput_mean_Bps") is not None)  # fmt: skip
                    if pts:
                        ax.plot(*zip(*pts, strict=True), color=colors[v], linestyle=LINESTYLES[k % len(LINESTYLES)],
                                marker=MARKERS[k % len(MARKERS)],
                                label=f"{_volume_label(v)}, server pool {sw}")  # fmt: skip
            _panel(ax, rows, f"{op}, {model} server", "throughput per client (MB/s)", bottom=i == len(ops) - 1, left=j == 0)
    _legend(fig, axes)
    fig.suptitle(title)
    return fig


def plot_time(rows, client_pool: str | None = None) -> Figure:
    """Total time per client against client workers: p50 as the marker, a bar up to p95;
    a colour per volume, a marker per server pool size; server models side by side."""
    rows, pool = _select(rows, client_pool)
    fig, axes, ops, models = _grid(rows)
    title = f"Time per client: p50 (marker) to p95 (bar top) ({pool} client pool)"
    if not rows:
        return _empty(fig, title)
    volumes, servers, colors = _series(rows)
    nshift = len(volumes) * len(servers)
    for i, op in enumerate(ops):
        for j, model in enumerate(models):
            ax = axes[i][j]
            sub = [r for r in rows if r["op"] == op and r["server_model"] == model and r.get("time_p50_s") is not None]
            for a, v in enumerate(volumes):
                for k, sw in enumerate(servers):
                    pts = sorted((r["client_workers"], r["time_p50_s"], r["time_p95_s"]) for r in sub
                                 if r["volume_bytes"] == v and r["server_workers"] == sw)  # fmt: skip
                    if not pts:
                        continue
                    shift = 1 + 0.05 * ((a * len(servers) + k) - (nshift - 1) / 2)  # spread overlapping points
                    xs = [x * shift for x, _, _ in pts]
                    p50 = [p for _, p, _ in pts]
                    p95 = [q for _, _, q in pts]
                    ax.errorbar(xs, p50, yerr=[[0] * len(p50), [max(q - p, 0) for p, q in zip(p50, p95, strict=True)]],
                                fmt=MARKERS[k % len(MARKERS)], color=colors[v], capsize=3, linestyle="none",
                                label=f"{_volume_label(v)}, server pool {sw}")  # fmt: skip
            _panel(ax, rows, f"{op}, {model} server", "total time per client (s)", bottom=i == len(ops) - 1, left=j == 0)
    times = [r["time_p50_s"] for r in rows if r.get("time_p50_s")]
    if times and max(times) / min(times) > 50:  # 1 x 10 MB next to 50 x 100 MB: log scale shows both
        for row in axes:
            for ax in row:
                ax.set_yscale("log")
    _legend(fig, axes)
    fig.suptitle(title)
    return fig


def plot_counts(rows, client_pool: str | None = None) -> Figure:
    """Succeeded / failed counts per row (``Nomor``): client workers on top, the server's own
    counts (STATS before/after, BUSY refusals apart) below; server models side by side."""
    rows, pool = _select(rows, client_pool)
    models = [m for m in SERVER_MODELS if any(r["server_model"] == m for r in rows)] or list(SERVER_MODELS)
    fig = Figure(figsize=(max(6.0, 0.25 * max((len(rows) // len(models)), 1) + 3) * len(models), 6.5),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(2, len(models), squeeze=False)
    title = f"Succeeded and failed workers per row ({pool} client pool)"
    if not rows:
        return _empty(fig, title)
    for j, model in enumerate(models):
        sub = sorted((r for r in rows if r["server_model"] == model), key=lambda r: r["number"])
        x = list(range(len(sub)))
        labels = [str(r["number"]) for r in sub]
        ok = [r.get("clients_ok") or 0 for r in sub]
        bad = [r.get("clients_failed") or 0 for r in sub]
        ax = axes[0][j]
        ax.bar(x, ok, color="tab:green", label="succeeded")
        ax.bar(x, bad, bottom=ok, color="tab:red", label="failed")
        ax.set_title(f"client workers, {model} server")
        ax.set_ylabel("client workers")
        s_ok = [r.get("server_ok") or 0 for r in sub]
        s_bad = [r.get("server_failed") or 0 for r in sub]
        s_busy = [r.get("server_busy") or 0 for r in sub]
        ax2 = axes[1][j]
        ax2.bar(x, s_ok, color="tab:green", label="succeeded")
        ax2.bar(x, s_bad, bottom=s_ok, color="tab:red", label="failed")
        ax2.bar(x, s_busy, bottom=[a + b for a, b in zip(s_ok, s_bad, strict=True)], color="tab:orange",
                label="refused BUSY")  # fmt: skip
        unmeasured = [i for i, r in enumerate(sub) if not r.get("server_measured")]
        if unmeasured:
            ax2.plot(unmeasured, [0] * len(unmeasured), "kx", label="not measured")
        ax2.set_title(f"server's own counts (STATS), {model} server")
        ax2.set_ylabel("requests")
        for a in (ax, ax2):
            a.yaxis.set_major_locator(MaxNLocator(integer=True))
            a.set_xticks(x)
            a.set_xticklabels(labels, fontsize=7, rotation=90 if len(x) > 20 else 0)
            a.set_xlabel("Nomor (row)")
            a.grid(True, axis="y", alpha=0.3)
            a.legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    return fig


def _legend(fig: Figure, axes) -> None:
    handles, labels = {}, []
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncol=min(len(labels), 3), fontsize=8)  # fmt: skip


PLOTS = {"throughput": plot_throughput, "time": plot_time, "counts": plot_counts}


def save_all(rows, out_dir, dpi: int = 100) -> tuple[dict, dict]:
    """Draw every plot for every client pool kind present and save ``out_dir/ets_<plot>[_<pool>-clients].png``.

    Returns ``(figures, paths)``, both keyed by plot name (``"throughput"``,
    or ``"throughput_process-clients"`` for a process client pool).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pools = sorted({r["client_pool"] for r in rows if r.get("status") in DONE})
    figures, paths = {}, {}
    for pool in pools or ["thread"]:
        suffix = "" if pool == "thread" else f"_{pool}-clients"
        for name, plot in PLOTS.items():
            fig = plot(rows, client_pool=pool)
            path = out_dir / f"ets_{name}{suffix}.png"
            fig.savefig(path, dpi=dpi)
            figures[name + suffix] = fig
            paths[name + suffix] = path
    return figures, paths
