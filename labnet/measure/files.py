"""The lab's test files and folders (sizes: ``labnet.config``, where ``10MB`` means 10 * 10**6 bytes).

``make_test_file`` writes pseudo-random content fast (a 1 MiB random block
repeated with a changing 8-byte counter stamped in, so every MiB differs
and a mix-up of chunks is caught by the digest) -- 160 MB in about a second
on page cache.  Existing files of the right size are kept.

Must not import sockets, threads or other labnet modules except ``errors`` and ``config``.
"""

from __future__ import annotations

import os
from pathlib import Path

from labnet.config import parse_size, size_label
from labnet.errors import UsageError

DEFAULT_SIZES = ("10MB", "50MB", "100MB")


def test_file_name(size: int) -> str:
    """The file name used for a size: ``10MB.bin``."""
    return f"{size_label(size)}.bin"


def make_test_file(dest, size: int, seed: int = 0) -> Path:
    """Write (or keep, if already the right size) ``dest/<label>.bin`` of ``size`` bytes."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / test_file_name(size)
    if path.is_file() and path.stat().st_size == size:
        return path
    block_size = 1 << 20
    rng = __import__("random").Random(seed * 1_000_003 + size)
    block = bytearray(rng.randbytes(block_size))
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as f:
        left, i = size, 0
        while left > 0:
            block[:8] = i.to_bytes(8, "little")
            n = min(left, block_size)
            f.write(block if n == block_size else block[:n])
            left -= n
            i += 1
    os.replace(tmp, path)
    return path


def make_test_files(dest="client_files", sizes=DEFAULT_SIZES) -> list[Path]:
    return [make_test_file(dest, parse_size(s)) for s in sizes]


def project_dir(start=None) -> Path:
    """The labnet project folder: the nearest of ``start`` (default: cwd) and its parents that
    holds ``server_files/`` and ``client_files/``.  Notebooks run in ``notebooks/``, the CLI
    at the top: both find the same data folders.  Falls back to ``start`` itself."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "server_files").is_dir() and (folder / "client_files").is_dir():
            return folder
    return here


def data_dir(kind: str, start=None) -> Path:
    """``server_files``, ``client_files`` or ``client_downloads`` of the project (created if missing)."""
    if kind not in ("server_files", "client_files", "client_downloads"):
        raise UsageError(f"unknown data folder {kind!r}")
    path = project_dir(start) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
