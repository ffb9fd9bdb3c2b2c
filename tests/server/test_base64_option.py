"""``--base64 pybase64|binascii``: the server says which codec backend its workers use (ready line,
counters listener, STATS answered by a worker), also for process workers started with spawn; the
stress client's workers use the one they are given, and the bytes still verify."""

from __future__ import annotations

import pytest

from labnet.measure import stress
from labnet.protocol import codec
from labnet.protocol.console import parse_ready_base64


def ready_line(srv) -> str:
    return next(line for line in srv.log().splitlines() if line.startswith("labnet server ready on"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("model", "start_method"), [("thread", None), ("process", "spawn")])
@pytest.mark.parametrize("backend", ["binascii", "pybase64"])
def test_server_reports_the_backend_its_workers_use(start_server, model, start_method, backend):
    srv = start_server(model, workers=1, base64=backend, start_method=start_method)
    assert parse_ready_base64(ready_line(srv)) == backend == srv.base64
    assert srv.counters()["base64"] == backend
    assert srv.stats()["base64"] == backend  # answered by a worker (a spawned process for the process model)


@pytest.mark.timeout(60)
def test_server_without_a_choice_follows_labnet_base64(start_server, monkeypatch):
    monkeypatch.setenv("LABNET_BASE64", "binascii")
    srv = start_server("thread", workers=1)
    assert parse_ready_base64(ready_line(srv)) == "binascii" and srv.stats()["base64"] == "binascii"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["thread", pytest.param("process", marks=pytest.mark.slow)])  # spawn: ~10 s
def test_stress_workers_use_the_backend_given_and_transfers_verify(start_server, client_dirs, pool):
    files, downloads = client_dirs
    before = codec.BACKEND
    seen = []  # the codec of this process while thread workers finish (on_record runs then)
    srv = start_server("thread", workers=2, base64="binascii")
    for backend in ("binascii", "pybase64"):
        for op in ("upload", "download"):
            res = stress.run(op, "300KB", 2, pool, *srv.address, base64=backend, files_dir=files,
                             downloads_dir=downloads, progress=False, keep_downloads=False,
                             on_record=lambda rec: seen.append(codec.BACKEND))  # fmt: skip
            assert res.ok and res.summary["base64"] == res.config["base64"] == backend, res.summary
            if pool == "thread":
                assert set(seen) == {backend}, seen
            seen.clear()
    assert codec.BACKEND == before  # the run's choice did not outlive it


def test_cli_offers_the_choice_on_server_stress_and_matrix():
    from labnet.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["server", "--base64", "binascii"]).base64 == "binascii"
    assert parser.parse_args(["stress", "upload", "1MB", "2", "--base64", "pybase64"]).base64 == "pybase64"
    assert parser.parse_args(["matrix", "--base64", "binascii"]).base64 == "binascii"
    assert parser.parse_args(["server"]).base64 is None
    with pytest.raises(SystemExit):
        parser.parse_args(["server", "--base64", "turbo"])


def test_matrix_gives_its_servers_the_backend_through_their_environment():
    from labnet.measure.matrix_run import server_env_with

    env = {"PATH": "/bin"}
    assert server_env_with(env, None) is env and server_env_with(None, None) is None
    assert server_env_with(env, "binascii") == {"PATH": "/bin", "LABNET_BASE64": "binascii"}
    assert env == {"PATH": "/bin"}  # the caller's environment is not changed
    assert server_env_with(None, "pybase64")["LABNET_BASE64"] == "pybase64"
