"""Multi-host (issue 5): the server reachable from another host when bound to its address, and
clients there working unchanged.

Two network namespaces joined by a veth pair stand for two machines on a lab network:
the server runs in one (``ip netns exec <a> python -m labnet server --host 10.77.0.1``),
the clients -- the CLI and a script with concurrent transfers -- run in the other, and
every transfer is verified by digest.  A server on the default loopback address is not
reachable from the other host.  Skipped, with the reason, where namespaces cannot be
made (not root, no iproute2, no permission); namespaces and processes are always removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from faultproxy import folder_state, stop_servers

from labnet.measure.launcher import BackgroundServer

pytestmark = [pytest.mark.timeout(120), pytest.mark.netns]

SERVER_IP, CLIENT_IP = "10.77.0.1", "10.77.0.2"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts():
    """Two namespaces ``(server_ns, client_ns)`` joined by a veth pair; always deleted afterwards."""
    if sys.platform != "linux":
        pytest.skip("network namespaces are a Linux feature")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces (ip netns) needs root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (the ip command) is not installed")
    tag = f"{os.getpid() % 10000}{secrets.token_hex(2)}"  # unique: other test runs may share the machine
    names = (f"lnt{tag}s", f"lnt{tag}c")
    created = []
    try:
        for ns in names:
            r = _ip("netns", "add", ns)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {r.stderr.strip()}")
            created.append(ns)
        steps = [
            ("link", "add", "lnv0", "netns", names[0], "type", "veth", "peer", "name", "lnv1", "netns", names[1]),
            ("-n", names[0], "addr", "add", f"{SERVER_IP}/24", "dev", "lnv0"),
            ("-n", names[1], "addr", "add", f"{CLIENT_IP}/24", "dev", "lnv1"),
            ("-n", names[0], "link", "set", "lnv0", "up"),
            ("-n", names[1], "link", "set", "lnv1", "up"),
            ("-n", names[0], "link", "set", "lo", "up"),
            ("-n", names[1], "link", "set", "lo", "up"),
        ]
        for step in steps:
            r = _ip(*step)
            if r.returncode != 0:
                pytest.skip(f"cannot set up a veth pair here (ip {' '.join(step)}): {r.stderr.strip()}")
        yield names
    finally:
        for ns in created:
            _ip("netns", "del", ns)  # also removes the veth pair
        left = set(_ip("netns", "list").stdout.split()) & set(created)
        assert not left, f"network namespaces left behind: {left}"


class NetnsServer(BackgroundServer):
    """A background server started inside a network namespace (``ip netns exec`` execs: same PID)."""

    def __init__(self, netns: str, *args, **kw):
        super().__init__(*args, **kw)
        self.netns = netns

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *super().command()]

    def _connect_once(self) -> None:
        pass  # not reachable from this namespace; the ready line (printed after listen) suffices


@pytest.fixture
def netns_servers():
    started: list[NetnsServer] = []

    def start(netns, model, **kw) -> NetnsServer:
        srv = NetnsServer(netns, model, **kw)
        started.append(srv)
        return srv.start()

    yield start
    stop_servers(started)


def _in_ns(ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    project = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")])))
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


CONCURRENT_CLIENTS = textwrap.dedent(
    """
    import concurrent.futures, hashlib, json, sys
    from labnet.client import Client
    host, port, src, dest, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
    def roundtrip(name):
        with Client(host, port, timeout=20) as c:
            up = c.upload(f"{src}/{name}", name="copy-" + name)
            down = c.download("copy-" + name, dest)
        return name, up.sha256, down.sha256
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(roundtrip, names))
    with Client(host, port, timeout=20) as c:
        listing = c.list()
    print(json.dumps({"results": results, "list": listing}))
    """
)


def test_server_on_one_host_clients_on_another(two_hosts, netns_servers, model, tmp_path):
    server_ns, client_ns = two_hosts
    root, src, dest = tmp_path / "server_files", tmp_path / "client_files", tmp_path / "client_downloads"
    for d in (root, src, dest):
        d.mkdir()
    blobs = {f"f{i}.bin": os.urandom(n) for i, n in enumerate((0, 1, 70_000, 2_500_000))}
    for name, data in blobs.items():
        (src / name).write_bytes(data)

    srv = netns_servers(server_ns, model, workers=3, host=SERVER_IP, root=root)
    assert "WARNING: listening on 10.77.0.1" in srv.log()
    port = str(srv.port)

    # The command-line client, unchanged, from the other host.
    up = _in_ns(client_ns, "-m", "labnet", "upload", str(src / "f3.bin"), "--host", SERVER_IP, "--port", port,
                "--json")  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["sha256"] == hashlib.sha256(blobs["f3.bin"]).hexdigest()
    down = _in_ns(client_ns, "-m", "labnet", "download", "f3.bin", "--dest", str(dest), "--host", SERVER_IP,
                  "--port", port, "--encoding", "raw", "--json")  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert (dest / "f3.bin").read_bytes() == blobs["f3.bin"]

    # Concurrent library clients from the other host.
    run = _in_ns(client_ns, "-c", CONCURRENT_CLIENTS, SERVER_IP, port, str(src), str(dest), *blobs)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    for name, up_digest, down_digest in out["results"]:
        assert up_digest == down_digest == hashlib.sha256(blobs[name]).hexdigest()
        assert (dest / f"copy-{name}").read_bytes() == blobs[name]

    expected = {"f3.bin": blobs["f3.bin"], **{f"copy-{n}": b for n, b in blobs.items()}}
    assert folder_state(root) == expected
    listing = _in_ns(client_ns, "-m", "labnet", "list", "--host", SERVER_IP, "--port", port, "--json")
    assert listing.returncode == 0, listing.stderr
    assert {f["name"]: f["size"] for f in json.loads(listing.stdout)["files"]} == {n: len(b) for n, b in expected.items()}


def test_loopback_server_is_not_reachable_from_another_host(two_hosts, netns_servers, tmp_path):
    server_ns, client_ns = two_hosts
    root = tmp_path / "server_files"
    root.mkdir()
    srv = netns_servers(server_ns, "thread", workers=1, root=root)  # default host: 127.0.0.1
    assert "WARNING" not in srv.log()
    r = _in_ns(client_ns, "-m", "labnet", "list", "--host", SERVER_IP, "--port", str(srv.port), "--timeout", "5")
    assert r.returncode == 1
    assert "refused" in r.stderr, r.stderr
    # ... while on its own host it serves.
    r = _in_ns(server_ns, "-m", "labnet", "list", "--port", str(srv.port), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"files": []}, r.stderr
    assert folder_state(root) == {}
