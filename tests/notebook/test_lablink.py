"""labnet.notebook.lablink: the rate-limited veth link of notebook 07.  Reading the rows is pure; building
the link needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2, and those tests skip otherwise."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from labnet.measure import netns
from labnet.notebook import lablink


def row(clients, encoding, repeat, wall, tput, wire, digest_ok=True):
    return {"clients": clients, "encoding": encoding, "repeat": repeat, "wall_s": wall, "time_mean_s": wall * 0.9,
            "throughput_mean": tput, "wire_rate": wire, "ok": clients, "failed": 0, "digest_ok": digest_ok}


def test_summarize_medians_and_ratios_per_repeat():
    rows = []
    for rep, slow in enumerate((1.0, 1.1, 3.0)):  # the third repeat: a hiccup the medians must ignore
        rows += [row(1, "raw", rep, 0.1 * slow, 5e6, 5e6), row(1, "b64", rep, 0.133 * slow, 3.75e6, 5e6),
                 row(4, "raw", rep, 0.4 * slow, 1.25e6, 5e6), row(4, "b64", rep, 0.533 * slow, 0.94e6, 5e6)]
    s = lablink.summarize(rows, rate_bytes=5e6)
    assert s["runs"] == 12 and s["all_ok"] and s["most_clients"] == 4
    assert s["table"][(1, "raw")]["link_use"] == pytest.approx(1.0)
    assert s["table"][(4, "raw")]["wall_s"] == pytest.approx(0.44)
    assert s["share"]["median"] == pytest.approx(1.0, abs=0.005) and s["share"]["n"] == 6
    assert s["b64_over_raw"]["median"] == pytest.approx(1.331, abs=0.002)
    assert not lablink.summarize(rows[:-1] + [row(4, "b64", 2, 1.6, 0.3e6, 5e6, digest_ok=False)], 5e6)["all_ok"]
    assert "4/3" in lablink.format_summary(s, 40, 500_000)


def test_recorded_figures_are_rows_the_notebook_can_read():
    rec = lablink.RECORDED
    s = lablink.summarize(rec["rows"], rec["rate_mbit"] * 1e6 / 8)
    assert s["all_ok"] and s["runs"] == len(rec["rows"]) >= 8 and rec["when"]


def test_remove_stale_only_touches_its_own_prefix_of_dead_owners():
    assert lablink.PREFIX != netns.PREFIX  # the grader's namespaces are not ours to delete
    assert netns.owner_pid(f"{lablink.PREFIX}123-4", lablink.PREFIX) == 123
    assert netns.owner_pid(f"{netns.PREFIX}123-4", lablink.PREFIX) is None


def _linkable() -> tuple[bool, str]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "needs root for network namespaces, veth and tc"
    return lablink.can_link()


LINKABLE, WHY = _linkable()
needs_link = pytest.mark.skipif(not LINKABLE, reason=WHY)


@needs_link
@pytest.mark.timeout(60)
def test_a_stale_link_namespace_is_removed_with_its_veth():
    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID that is gone: the owner of a "killed kernel's" namespace
    name = f"{lablink.PREFIX}{dead.pid}-1"
    netns.create(name)
    try:
        subprocess.run(["ip", "link", "add", "lkstaletest", "type", "veth", "peer", "name", "lkstalepeer", "netns", name],
                       check=True, capture_output=True)  # fmt: skip
        assert name in lablink.remove_stale()
        assert name not in netns.list_names(lablink.PREFIX)
        # the kernel dismantles a deleted namespace's interfaces a moment later (a work queue): poll, bounded
        end = time.monotonic() + 20
        while subprocess.run(["ip", "link", "show", "lkstaletest"], capture_output=True).returncode == 0:
            assert time.monotonic() < end, "the veth of a removed namespace is still in this one"
            time.sleep(0.05)
    finally:
        netns.delete(name)
        subprocess.run(["ip", "link", "delete", "lkstaletest"], capture_output=True)


@needs_link
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_measurement_across_the_link_is_limited_by_its_rate():
    with lablink.Link(rate_mbit=16) as link:  # 2 MB/s
        name = link.ns
        rows = link.measure(200_000, clients=(1, 2), encodings=("raw",), repeats=1)
    assert name not in netns.list_names(lablink.PREFIX)
    s = lablink.summarize(rows, link.rate_bytes)
    assert s["all_ok"] and len(rows) == 2
    # the wire never beats the limit by much (tbf's burst is 32 KB of 200 KB), and a lone client gets most of it
    assert 0.5 <= s["table"][(1, "raw")]["link_use"] <= 1.2, s["table"]
