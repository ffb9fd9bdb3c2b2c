"""lessons_ets: notebook 06's glossary, aggregate-vs-per-client rows, time estimate and row selection."""

from __future__ import annotations

import pytest

from labnet.measure import matrix_plan, matrix_table
from labnet.notebook import lessons_ets


def _row(number=1, status="ok", op="download", clients=4, workers=1, volume=100_000, mean=4e6, agg=2e6, **kw):
    row = {"number": number, "status": status, "op": op, "server_model": "thread", "client_pool": "thread",
           "volume_bytes": volume, "client_workers": clients, "server_workers": workers, "clients_ok": clients,
           "clients_failed": 0, "server_measured": True, "server_ok": clients, "server_failed": 0,
           "server_busy": 0, "time_mean_s": 0.1, "time_p50_s": 0.1, "time_p95_s": 0.2,
           "throughput_mean_Bps": mean, "throughput_aggregate_Bps": agg, "cell_seconds": 2.0, "note": ""}  # fmt: skip
    row.update(kw)
    return row


def test_glossary_is_the_tables_own_columns_and_the_words_its_cells_use():
    pairs = lessons_ets.glossary()
    assert [p[0] for p in pairs[: len(matrix_table.ETS_NAMES)]] == list(matrix_table.ETS_NAMES)
    assert all(english for _, english in pairs)
    shown = " ".join(
        " ".join(matrix_table.display_columns(r).values())
        for r in (_row(server_busy=2), _row(status="skipped", note="not enough memory"), _row(server_measured=False))
    )
    for indonesian, _ in lessons_ets.CELL_WORDS:
        assert indonesian in shown, f"{indonesian!r} is no longer written in the table's cells"
    md = lessons_ets.glossary_markdown()
    assert md.count("\n") == len(pairs) + 1 and "| Jumlah server worker pool | Server worker pool size |" in md


def test_aggregate_rows_compare_the_product_with_the_measured_aggregate():
    rows = [_row(1, clients=4, mean=4e6, agg=2e6), _row(2, clients=1, mean=3e6, agg=3e6),
            _row(3, status="skipped"), _row(4, clients=4, clients_ok=0)]  # fmt: skip
    got = lessons_ets.aggregate_rows(rows)
    assert [r["number"] for r in got] == [1, 2]
    assert got[0]["product"] == 16e6 and got[0]["aggregate"] == 2e6 and got[0]["overstated"] == 8.0
    assert got[1]["overstated"] == 1.0


def test_estimate_fits_the_measured_rows_and_predicts_the_rest(monkeypatch):
    monkeypatch.setenv("LABNET_QUICK", "1")
    full = dict(server_models=["thread"], client_pools=["thread"], ops=["download"])
    cells = matrix_plan.plan_cells(**full)
    small = min(c.volume for c in cells)
    # measured rows of the smallest volume: 1 s per row + 1 MB/s
    rows = [_row(c.number, clients=c.clients, workers=c.server_workers, volume=c.volume,
                 cell_seconds=1.0 + c.volume * c.clients / 1e6) for c in cells if c.volume == small]  # fmt: skip
    guess = lessons_ets.estimate(rows, full)
    assert guess["rows_fitted"] == len(rows) and guess["total_rows"] == len(cells)
    assert guess["fixed_s"] == pytest.approx(1.0) and guess["rate_Bps"] == pytest.approx(1e6)
    expected = sum(1.0 + c.volume * c.clients / 1e6 for c in cells if c.volume != small)
    assert guess["remaining_rows"] == len(cells) - len(rows)
    assert guess["remaining_s"] == pytest.approx(expected)


def test_selection_follows_the_switch_and_the_output_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LABNET_QUICK", "1")
    monkeypatch.setenv("LABNET_ETS_OUT", str(tmp_path))
    out, preset = lessons_ets.selection(full=False)
    _, everything = lessons_ets.selection(full=True)
    assert out == tmp_path
    assert len(matrix_plan.plan_cells(**preset)) < len(matrix_plan.plan_cells(**everything))
    assert {c.server_model for c in matrix_plan.plan_cells(**preset)} == {"thread", "process"}


def test_queued_row_is_the_most_crowded_single_worker_row():
    rows = [_row(1, clients=1), _row(2, clients=4), _row(3, clients=4, workers=2), _row(4, clients=4, op="upload")]
    assert lessons_ets.queued_row(rows)["number"] == 2
