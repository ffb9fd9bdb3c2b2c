"""The codec backend as a runtime choice (``labnet.protocol.codec.use_backend``): pybase64 and binascii
write the same wire bytes and read each other's, the choice is process-wide and restorable."""

from __future__ import annotations

import base64
import random

import pytest

import labnet.protocol.codec as codec
from labnet.errors import PeerError, UsageError


@pytest.fixture(autouse=True)
def _keep_backend():
    before = codec.BACKEND
    yield
    codec.use_backend(before)


def encode_stream(data: bytes, cuts: list[int]) -> bytes:
    enc = codec.Encoder("b64")
    bounds = [0, *cuts, len(data)]
    return b"".join(enc.encode(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)) + enc.finish()


def decode_stream(wire: bytes, piece: int) -> bytes:
    dec = codec.Decoder("b64")
    out = [dec.decode(wire[i : i + piece]) for i in range(0, len(wire), piece)]
    return b"".join(out) + dec.finish()


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 1000, 65537, 300_001])
def test_both_backends_write_identical_streams_and_read_each_other(size):
    rng = random.Random(size)
    data = rng.randbytes(size)
    cuts = sorted(rng.sample(range(size + 1), min(size + 1, 5)))
    wires = {}
    for name in codec.BACKENDS:
        assert codec.use_backend(name) == name == codec.BACKEND
        wires[name] = encode_stream(data, cuts)
    assert wires["pybase64"] == wires["binascii"] == base64.b64encode(data)
    for reader in codec.BACKENDS:
        codec.use_backend(reader)
        for writer, wire in wires.items():
            assert decode_stream(wire, 4099) == data, (reader, writer)


@pytest.mark.parametrize("name", codec.BACKENDS)
def test_each_backend_refuses_bad_base64_the_same_way(name):
    codec.use_backend(name)
    with pytest.raises(PeerError):
        decode_stream(b"QUJD" + b"!!!!" + b"QUJD", 12)
    with pytest.raises(PeerError):
        decode_stream(b"QQ==QUJD", 8)  # padding in the middle: the seed's silent truncation


def test_backend_context_restores_and_unknown_names_are_usage_errors():
    codec.use_backend("pybase64")
    with codec.backend("binascii") as inside:
        assert inside == codec.BACKEND == "binascii"
    assert codec.BACKEND == "pybase64"
    with codec.backend(None) as inside:  # no choice: keep the current one
        assert inside == "pybase64"
    with pytest.raises(UsageError):
        codec.use_backend("turbo64")
    assert codec.BACKEND == "pybase64"


def test_default_follows_the_environment(monkeypatch):
    monkeypatch.setenv("LABNET_BASE64", "binascii")
    assert codec.default_backend() == "binascii" and codec.use_backend(None) == "binascii"
    monkeypatch.setenv("LABNET_BASE64", "pybase64")
    assert codec.default_backend() == "pybase64"
