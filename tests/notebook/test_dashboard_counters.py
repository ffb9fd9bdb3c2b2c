"""Counters that show what happened even when a run is shorter than one refresh or status interval,
and the dashboard's base64 control (the server and the clients get the backend chosen)."""

from __future__ import annotations

import re

import pytest

from labnet.measure import stress
from labnet.notebook.dashboard import Dashboard
from labnet.notebook.dashboard_view import LiveCounters


def shown_pair(html: str, row: str) -> tuple[int, int]:
    """The ``ok / failed`` numbers a counters table shows in ``row``."""
    m = re.search(re.escape(row) + r"</td><td[^>]*><b>(\d+) / (\d+)</b>", html)
    assert m, html
    return int(m.group(1)), int(m.group(2))


@pytest.mark.timeout(60)
def test_live_counters_show_a_run_shorter_than_every_interval(start_server, client_dirs):
    files, downloads = client_dirs
    # status line every 30 s, live refresh every 30 s: the run is over long before either
    srv = start_server("thread", workers=2, status_every=30)
    with LiveCounters(srv, every=30) as live:
        res = stress.run("download", "100KB", 3, "thread", *srv.address, files_dir=files, downloads_dir=downloads,
                         progress=False, keep_downloads=False)  # fmt: skip
        assert "reading the server" in live.widget.value  # nothing refreshed it during the run
    assert res.ok
    assert "[labnet] ok=" not in srv.log()  # no status line was ever printed
    assert live.final["verbs"]["DOWNLOAD"]["ok"] == 3
    assert "counters after the run" in live.widget.value
    assert shown_pair(live.widget.value, "download ok / failed") == (3, 0)


@pytest.mark.timeout(120)
def test_dashboard_counters_after_a_short_run_and_its_base64_control(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for d in ("server_files", "client_files", "client_downloads"):
        (tmp_path / d).mkdir()
    dash = Dashboard(root=tmp_path / "server_files", poll_every=60)  # no live poll can happen during the run
    try:
        res = dash.run_blocking(timeout=90, op="download", volume="100KB", clients=2, server_workers=1,
                                server_model="thread", client_pool="thread", encoding="b64", base64="binascii")  # fmt: skip
        assert res.ok and res.summary["base64"] == "binascii"
        assert dash.server.base64 == "binascii" and dash.server.counters()["base64"] == "binascii"
        assert "counters after the run" in dash.counters.value
        assert shown_pair(dash.counters.value, "download ok / failed") == (2, 0)
        assert "base64 with binascii" in dash.summary.value
        first = dash.server
        dash.run_blocking(timeout=90, base64="pybase64")  # another backend: a fresh server
        assert dash.server is not first and not first.running and dash.server.base64 == "pybase64"
        assert shown_pair(dash.counters.value, "download ok / failed") == (2, 0)
    finally:
        dash.shutdown()
    assert not dash.server.running
