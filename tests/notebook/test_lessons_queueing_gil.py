"""Notebook 03's helpers: the FCFS/sharing comparison (pure maths on stress results), the backlog table,
and the base64/GIL measurements' bookkeeping (no timing thresholds here: the notebook asserts those)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from labnet.notebook import lessons_gil, lessons_queueing
from labnet.protocol import codec


def fake_run(clients, workers, total, mean, wait, transfer):
    summary = {"clients": clients, "wall_seconds": total, "time_mean": mean, "wait_mean": wait,
               "transfer_mean": transfer, "queued": 0}  # fmt: skip
    return SimpleNamespace(summary=summary, config={"server_workers": workers})


def test_fcfs_mean_is_half_the_total_plus_one_job():
    assert lessons_queueing.fcfs_mean(10.0, 1) == 10.0
    assert lessons_queueing.fcfs_mean(10.0, 4) == pytest.approx(6.25)  # (1+2+3+4)/4 * 10/4
    assert lessons_queueing.fcfs_mean(50.0, 50) == pytest.approx(25.5)


def test_compare_predicts_the_ratio_from_the_measured_totals():
    # 4 clients; 1 worker: total 1.0 s, mean 0.625 (exactly FCFS); 4 workers: total 1.5 s, mean 1.2
    pairs = [(fake_run(4, 1, 1.0, 0.625, 0.47, 0.155), fake_run(4, 4, 1.5, 1.2, 0.01, 1.19))] * 3
    c = lessons_queueing.compare(pairs)
    assert c["repeats"] == 3 and c["clients"] == 4
    assert c["fcfs_fit"]["median"] == pytest.approx(1.0)
    assert c["sharing_fit"]["median"] == pytest.approx(0.8)
    assert c["ratio_predicted"]["median"] == pytest.approx(1.5 / 0.625)  # not 2N/(N+1): the totals differ
    assert c["ratio_measured"]["median"] == pytest.approx(1.2 / 0.625)
    assert c["agreement"]["median"] == pytest.approx(0.8)
    assert c["fcfs_wait_fit"]["median"] == pytest.approx(0.47 / (1.5 * 0.155))
    text = lessons_queueing.format_comparison(c)
    assert "4 workers" in text and "predicted" in text


def test_backlog_table_shows_each_runs_count():
    summary = [{"backlog": 1, "runs": 3, "clients": 150, "slow_or_missing_per_run": [30, 22, 37], "median_s": 1.0,
                "p95_s": 2.0}, {"backlog": 128, "runs": 3, "clients": 150, "slow_or_missing_per_run": [0, 0, 0],
                                "median_s": 0.01, "p95_s": None}]  # fmt: skip
    text = lessons_queueing.format_backlogs(summary)
    assert "30, 22, 37" in text and "1000 ms" in text and text.splitlines()[2].rstrip().endswith("-")


def test_encode_in_threads_restores_the_backend_and_does_the_work():
    before = codec.BACKEND
    for backend in codec.BACKENDS:
        wall, cpu = lessons_gil.encode_in_threads(backend, 2, 3, b"x" * 3000)
        assert wall > 0 and cpu >= 0
    assert codec.BACKEND == before


def test_lockout_and_thread_rows_and_their_summaries():
    rows = lessons_gil.gil_lockout(repeats=2, size=300_000)
    assert [r["backend"] for r in rows] == list(codec.BACKENDS) * 2
    assert all(r["call_s"] > 0 and 0 <= r["locked_fraction"] <= 1 for r in rows)
    s = lessons_gil.lockout_summary(rows)
    assert set(s) == set(codec.BACKENDS) and s["binascii"]["repeats"] == 2
    assert "binascii" in lessons_gil.format_lockout(s)
    rows = lessons_gil.base64_threads(repeats=1, target_s=0.005, size=30_000)
    s = lessons_gil.base64_summary(rows)
    assert {r["backend"] for r in rows} == set(codec.BACKENDS) and all(r["ratio"] > 0 for r in rows)
    assert s["pybase64"]["MBps"]["median"] > 0 and "MB/s" in lessons_gil.format_base64_summary(s)
