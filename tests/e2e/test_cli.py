"""``python -m labnet ...``: every client subcommand with --json, and one-line errors for bad arguments."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def labnet(*args, cwd, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("LABNET_PARENT_PID", None)
    return subprocess.run([sys.executable, "-m", "labnet", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def one_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    assert "Traceback" not in proc.stderr
    return json.loads(lines[0])


def one_line_error(proc: subprocess.CompletedProcess, status: int, *fragments: str) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("labnet")
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def srv(start_server, tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    return start_server("thread", workers=2, root=root)


def test_client_commands_with_json(srv, tmp_path):
    port = srv.address[1]
    src = tmp_path / "in.bin"
    data = os.urandom(300_001)
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    cwd = tmp_path

    assert one_json(labnet("list", "--port", port, "--json", cwd=cwd)) == {"files": []}

    up = one_json(labnet("upload", src, "--port", port, "--json", cwd=cwd))
    assert (up["op"], up["name"], up["bytes"], up["sha256"], up["encoding"]) == (
        "upload",
        "in.bin",
        len(data),
        digest,
        "b64",
    )
    assert up["wire_bytes"] == 4 * ((len(data) + 2) // 3) and up["seconds"] > 0 and up["throughput"] > 0

    up = one_json(labnet("upload", src, "--name", "raw.bin", "--encoding", "raw", "--port", port, "--json", cwd=cwd))
    assert (up["name"], up["encoding"], up["wire_bytes"]) == ("raw.bin", "raw", len(data))

    listing = one_json(labnet("list", "--port", port, "--json", cwd=cwd))
    assert listing == {"files": [{"name": "in.bin", "size": len(data)}, {"name": "raw.bin", "size": len(data)}]}

    dest = tmp_path / "dl"
    down = one_json(
        labnet("download", "raw.bin", "--dest", dest, "--encoding", "raw", "--port", port, "--json", cwd=cwd)
    )
    assert (down["op"], down["bytes"], down["sha256"]) == ("download", len(data), digest)
    assert (dest / "raw.bin").read_bytes() == data and Path(down["path"]) == dest / "raw.bin"

    assert one_json(labnet("delete", "in.bin", "--port", port, "--json", cwd=cwd)) == {"deleted": "in.bin"}

    stats = one_json(labnet("stats", "--port", port, "--json", cwd=cwd))
    assert stats["verbs"]["UPLOAD"] == {"ok": 2, "failed": 0}
    assert stats["verbs"]["DOWNLOAD"] == {"ok": 1, "failed": 0}
    assert stats["verbs"]["DELETE"] == {"ok": 1, "failed": 0}
    assert stats["verbs"]["LIST"] == {"ok": 2, "failed": 0}
    assert stats["model"] == "thread"
    assert sorted(p.name for p in srv.root.iterdir()) == ["raw.bin"]


def test_human_output(srv, tmp_path):
    port = srv.address[1]
    (tmp_path / "h.txt").write_bytes(b"hi")
    assert labnet("list", "--port", port, cwd=tmp_path).stdout.strip() == "(no files)"
    out = labnet("upload", tmp_path / "h.txt", "--port", port, cwd=tmp_path)
    assert out.returncode == 0 and "upload h.txt: 2 bytes" in out.stdout and "verified" in out.stdout
    out = labnet("list", "--port", port, cwd=tmp_path)
    assert out.stdout.split() == ["2", "h.txt"]
    out = labnet("download", "h.txt", "--port", port, cwd=tmp_path)  # default --dest client_downloads
    assert out.returncode == 0 and (tmp_path / "client_downloads" / "h.txt").read_bytes() == b"hi"


def test_make_files(tmp_path):
    out = labnet("make-files", "--sizes", "1KB,2000,0.5MB", "--dest", tmp_path / "files", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "files").iterdir()}
    assert sizes == {"1KB.bin": 1000, "2KB.bin": 2000, "500KB.bin": 500_000}
    assert len(out.stdout.strip().splitlines()) == 3
    first = (tmp_path / "files" / "500KB.bin").read_bytes()
    assert len(set(first[i : i + 4096] for i in range(0, len(first), 4096))) > 100  # not a constant fill


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["list", "--port", "70000"], ["port must be 0..65535"]),
        (["list", "--port", "abc"], ["not a port number"]),
        (["stats", "--port", "-1"], ["port"]),
        (["server", "--model", "fork"], ["invalid choice", "fork"]),
        (["server", "--workers", "0"], ["at least 1"]),
        (["server", "--workers", "many"], ["not a whole number"]),
        (["server", "--status-every", "-5"], ["must not be negative"]),
        (["make-files", "--sizes", "10XB"], ["not a size"]),
        (["make-files", "--sizes=-3MB"], ["not a size"]),
        (["upload", "x", "--encoding", "hex"], ["invalid choice"]),
        (["download"], ["required"]),
        (["frobnicate"], ["invalid choice"]),
        ([], ["required"]),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(tmp_path, args, fragments):
    out = labnet(*args, cwd=tmp_path)
    one_line_error(out, 2, *fragments)
    assert out.stdout == ""
    assert sorted(os.listdir(tmp_path)) == []  # nothing was created


def test_server_with_a_bad_max_upload_or_taken_port(tmp_path):
    one_line_error(labnet("server", "--port", "0", "--max-upload", "lots", "--root", tmp_path / "r", cwd=tmp_path),
                   2, "not a size")  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = labnet("server", "--port", port, "--root", tmp_path / "r", "--status-every", "0", cwd=tmp_path)
    one_line_error(out, 2, "already in use")


def test_connection_refused_is_one_line_and_status_1(tmp_path):
    port = free_port()
    for args in (["list"], ["stats", "--json"], ["delete", "x"], ["download", "x"]):
        one_line_error(labnet(*args, "--port", port, cwd=tmp_path), 1, "connection refused", str(port))


def test_failures_reported_by_the_server(srv, tmp_path):
    port = srv.address[1]
    one_line_error(labnet("download", "missing.bin", "--dest", tmp_path / "d", "--port", port, cwd=tmp_path),
                   1, "NOT_FOUND", "missing.bin")  # fmt: skip
    assert not (tmp_path / "d").exists() or list((tmp_path / "d").iterdir()) == []  # no file, no temp file
    one_line_error(labnet("delete", "missing.bin", "--port", port, cwd=tmp_path), 1, "NOT_FOUND")
    one_line_error(labnet("upload", tmp_path / "nope.bin", "--port", port, cwd=tmp_path), 2, "cannot read", "nope.bin")
    (tmp_path / "ok.bin").write_bytes(b"x")
    one_line_error(labnet("upload", tmp_path / "ok.bin", "--name", "../evil", "--port", port, cwd=tmp_path),
                   1, "BAD_NAME")  # fmt: skip
    one_line_error(labnet("delete", "a/b", "--port", port, cwd=tmp_path), 1, "BAD_NAME")
    assert list(srv.root.iterdir()) == []
