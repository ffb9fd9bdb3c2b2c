"""Plots of the ETS matrix with matplotlib: returned as figures, saved as PNG.

>>> fig = plot_throughput(result.rows)     # a matplotlib Figure; a notebook shows it
>>> figures, paths = save_all(result.rows, "results/ets")

Input rows are the typed row dicts of :mod:`labnet.measure.matrix_run` (``rows``
of a ``MatrixResult`` or the values of ``read_rows``).  Only rows with
status ``ok``/``failed`` and a measured value are drawn; skipped rows are not.
Every plot is split by server model, thread and process side by side (a
server run by hand whose model is ``unknown`` gets its own column), and
says MB = 10^6 bytes where MB appears.

Several servers in one CSV (``label``: ``labnet``, ``student``...): each plot
takes ``label=`` to draw one of them, and :func:`plot_by_label` draws their
throughput side by side, cell by cell; :func:`save_all` does both when more
than one label is present.

Agg-safe: figures are ``matplotlib.figure.Figure`` objects built without
pyplot, so no GUI backend, no global figure list to leak, and it works the
same in a terminal, under pytest and in JupyterLab (display the figure).

Must not import pyplot, sockets or labnet's network modules.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from labnet.config import MB, SERVER_MODELS

PLOT_OPS = ("download", "upload")  # the order of the panels
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v")
DONE = ("ok", "failed")


def label_of(row) -> str:
    """A row's label (rows of an older CSV: ``labnet``)."""
    return row.get("label") or "labnet"


def _select(rows, client_pool: str | None, label: str | None = None):
    rows = [r for r in rows if r.get("status") in DONE and (label is None or label_of(r) == label)]
    if client_pool is None and rows:
        pools = sorted({r["client_pool"] for r in rows})
        client_pool = "thread" if "thread" in pools else pools[0]
    return [r for r in rows if r["client_pool"] == client_pool], client_pool


def _models(rows) -> list:
    """The server models present: thread, process, then any other (``unknown``)."""
    present = {r["server_model"] for r in rows}
    return [m for m in SERVER_MODELS if m in present] + sorted(present - set(SERVER_MODELS))


def _titled(title: str, label: str | None) -> str:
    return title if label is None else f"{label}: {title}"


def _grid(rows, height=3.2, width=5.0):
    models = _models(rows) or list(SERVER_MODELS)
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


def plot_throughput(rows, client_pool: str | None = None, label: str | None = None) -> Figure:
    """Throughput per client (MB/s) against client workers: a line per volume (colour) and
    server pool size (line style); operations in rows, server models side by side.
    ``label``: only that server's rows (see the module docstring)."""
    rows, pool = _select(rows, client_pool, label)
    fig, axes, ops, models = _grid(rows)
    title = _titled(f"Throughput per client vs client workers ({pool} client pool; MB = 10^6 bytes)", label)
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


def plot_time(rows, client_pool: str | None = None, label: str | None = None) -> Figure:
    """Total time per client against client workers: p50 as the marker, a bar up to p95;
    a colour per volume, a marker per server pool size; server models side by side."""
    rows, pool = _select(rows, client_pool, label)
    fig, axes, ops, models = _grid(rows)
    title = _titled(f"Time per client: p50 (marker) to p95 (bar top) ({pool} client pool)", label)
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


def plot_counts(rows, client_pool: str | None = None, label: str | None = None) -> Figure:
    """Succeeded / failed counts per row (``Nomor``): client workers on top, the server's own
    counts (STATS before/after, BUSY refusals apart; a student's server: its log) below;
    server models side by side."""
    rows, pool = _select(rows, client_pool, label)
    models = _models(rows) or list(SERVER_MODELS)
    fig = Figure(figsize=(max(6.0, 0.25 * max((len(rows) // len(models)), 1) + 3) * len(models), 6.5),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(2, len(models), squeeze=False)
    title = _titled(f"Succeeded and failed workers per row ({pool} client pool)", label)
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
        source = "STATS" if all((r.get("dialect") or "labnet") == "labnet" for r in sub) else "STATS or its log"
        ax2.set_title(f"server's own counts ({source}), {model} server")
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


def plot_by_label(rows, client_pool: str | None = None) -> Figure:
    """Several servers side by side: throughput per client (MB/s) of every cell (``Nomor``), a bar
    per label next to each other; operations in rows, server models side by side.  A failed row's
    bar is hatched and its verdict written on it (``truncated``...); a cell a server has no
    finished row for has no bar."""
    rows, pool = _select(rows, client_pool)
    labels = sorted({label_of(r) for r in rows}, key=lambda lab: (lab != "labnet", lab))
    models = _models(rows) or list(SERVER_MODELS)
    ops = [o for o in PLOT_OPS if any(r["op"] == o for r in rows)] or list(PLOT_OPS)
    per_panel = max([len({r["number"] for r in rows if r["op"] == op}) for op in ops] + [1])
    fig = Figure(figsize=(max(6.0, 0.35 * per_panel * len(labels) + 2.5) * len(models), 3.4 * len(ops) + 1.0),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(len(ops), len(models), squeeze=False, sharey="row")
    title = f"Throughput per client by server (label), cell by cell\n({pool} client pool; MB = 10^6 bytes)"
    if not rows:
        return _empty(fig, title)
    width = 0.8 / max(len(labels), 1)
    for i, op in enumerate(ops):
        for j, model in enumerate(models):
            ax = axes[i][j]
            sub = [r for r in rows if r["op"] == op and r["server_model"] == model]
            numbers = sorted({r["number"] for r in sub})
            for k, lab in enumerate(labels):
                mine = {r["number"]: r for r in sub if label_of(r) == lab}
                xs = [n for n, x in enumerate(numbers) if x in mine]
                if not xs:
                    continue
                at = [x + (k - (len(labels) - 1) / 2) * width for x in xs]
                heights = [(mine[numbers[n]].get("throughput_mean_Bps") or 0) / MB for n in xs]
                bars = ax.bar(at, heights, width, color=f"C{k}", label=lab)
                for bar, x, n in zip(bars, at, xs, strict=True):
                    row = mine[numbers[n]]
                    if row["status"] != "ok":
                        bar.set_hatch("xx")
                        bar.set_edgecolor("black")
                        ax.annotate(row.get("verdict") or "failed", (x, 0), rotation=90, fontsize=7, ha="center",
                                    va="bottom", color=f"C{k}")  # fmt: skip
            ax.set_xticks(range(len(numbers)))
            ax.set_xticklabels([str(n) for n in numbers], fontsize=7, rotation=90 if len(numbers) > 20 else 0)
            ax.set_title(f"{op}, {model} server")
            ax.grid(True, axis="y", alpha=0.3)
            ax.set_xlabel("Nomor (row; hatched: failed)")
            if j == 0:
                ax.set_ylabel("throughput per client (MB/s)")
    _legend(fig, axes)
    fig.suptitle(title)
    return fig


PLOTS = {"throughput": plot_throughput, "time": plot_time, "counts": plot_counts}


def _file_part(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "label"


def save_all(rows, out_dir, dpi: int = 100) -> tuple[dict, dict]:
    """Draw every plot for every client pool kind present and save ``out_dir/ets_<plot>[_<pool>-clients].png``.

    Returns ``(figures, paths)``, both keyed by plot name (``"throughput"``,
    or ``"throughput_process-clients"`` for a process client pool).  With more
    than one label in ``rows``, each plot is drawn per label (``"throughput_student"``,
    ``ets_throughput_student.png``; an ``ets_throughput.png`` of an earlier one-label run is
    removed) and ``"by_label"`` (``ets_by_label.png``) puts them side by side.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if r.get("status") in DONE]
    pools = sorted({r["client_pool"] for r in done})
    labels = sorted({label_of(r) for r in done}, key=lambda lab: (lab != "labnet", lab))
    figures, paths = {}, {}

    def save(name: str, fig: Figure) -> None:
        path = out_dir / f"ets_{name}.png"
        fig.savefig(path, dpi=dpi)
        figures[name], paths[name] = fig, path

    for pool in pools or ["thread"]:
        suffix = "" if pool == "thread" else f"_{pool}-clients"
        if len(labels) <= 1:
            for name, plot in PLOTS.items():
                save(name + suffix, plot(rows, client_pool=pool))
            continue
        for name, plot in PLOTS.items():
            (out_dir / f"ets_{name}{suffix}.png").unlink(missing_ok=True)  # one label's, from an earlier run
            for label in labels:
                save(f"{name}_{_file_part(label)}{suffix}", plot(rows, client_pool=pool, label=label))
        save("by_label" + suffix, plot_by_label(rows, client_pool=pool))
    return figures, paths
