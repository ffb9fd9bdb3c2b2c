"""labnet.measure.plotting: figures from synthetic rows, without a display and without pyplot."""

from __future__ import annotations

import ast
from pathlib import Path

from matplotlib.figure import Figure

from labnet.measure import matrix_plan as plan
from labnet.measure import matrix_run as ex
from labnet.measure import plotting


def rows(statuses=("ok",)):
    out = []
    for cell in plan.plan_cells(quick=False, volumes="10MB,100MB", server_workers="1,5"):
        row = ex.base_row(cell, "b64")
        t = cell.volume / 50e6 * cell.clients / cell.server_workers
        row.update(status=statuses[cell.number % len(statuses)], clients_ok=cell.clients - 1, clients_failed=1,
                   server_measured=cell.number % 3 != 0, server_ok=cell.clients - 1, server_failed=1,
                   server_busy=cell.number % 2, time_mean_s=t, time_p50_s=t, time_p95_s=1.5 * t,
                   throughput_mean_Bps=cell.volume / t)  # fmt: skip
        out.append(ex.finish_row(row))
    return out


def titles(fig: Figure) -> str:
    return fig.get_suptitle() + " ".join(ax.get_title() + ax.get_ylabel() for ax in fig.axes)


def test_plots_are_figures_split_by_model_with_units():
    data = rows()
    for name, plot in plotting.PLOTS.items():
        fig = plot(data)
        assert isinstance(fig, Figure)
        text = titles(fig)
        assert "thread server" in text and "process server" in text, name
    assert "MB = 10^6 bytes" in plotting.plot_throughput(data).get_suptitle()
    assert "p50" in plotting.plot_time(data).get_suptitle() and "p95" in plotting.plot_time(data).get_suptitle()
    counts = titles(plotting.plot_counts(data))
    assert "client workers" in counts and "server's own counts" in counts
    # 2 ops x 2 models, one line per (volume, server pool) in each panel
    fig = plotting.plot_throughput(data)
    assert len(fig.axes) == 4 and all(len(ax.get_lines()) == 4 for ax in fig.axes)
    tree = ast.parse(Path(plotting.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "matplotlib.pyplot" not in imported | modules and "pyplot" not in imported  # Agg-safe, no GUI state


def test_skipped_rows_and_empty_input(tmp_path):
    data = rows(statuses=("ok", "skipped"))
    fig = plotting.plot_throughput(data)
    assert sum(len(ax.get_lines()) for ax in fig.axes) > 0
    empty = plotting.plot_time([])
    assert isinstance(empty, Figure)
    figures, paths = plotting.save_all([], tmp_path)
    assert set(paths) == {"throughput", "time", "counts"} and all(p.stat().st_size > 0 for p in paths.values())


def test_save_all_writes_png_per_client_pool(tmp_path):
    data = rows()
    data += [{**r, "client_pool": "process"} for r in data[:6]]
    figures, paths = plotting.save_all(data, tmp_path)
    assert set(paths) == {"throughput", "time", "counts", "throughput_process-clients", "time_process-clients",
                          "counts_process-clients"}  # fmt: skip
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(isinstance(f, Figure) for f in figures.values())
