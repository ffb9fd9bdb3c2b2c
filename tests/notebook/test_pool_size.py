"""labnet.notebook.pool_size: plain-code pool-size measurement (no sockets, small sizes)."""

from labnet.notebook.pool_size import pool_size_cost, rows_text


def test_every_pool_size_does_the_whole_work_and_is_counted():
    rows = pool_size_cost(pools=(1, 4), units=4, unit_mb=0.3, chunk_kib=48)
    assert [r["threads"] for r in rows] == [1, 4]
    for r in rows:
        assert r["wall_s"] > 0 and r["cpu_s"] >= 0 and r["mb_per_s"] > 0
        assert min(r["voluntary"], r["involuntary"], r["minor_faults"]) >= 0
    table = rows_text(rows).splitlines()
    assert len(table) == 3 and table[0].split()[0] == "threads"


def test_no_rows_no_table():
    assert rows_text([]) == ""
