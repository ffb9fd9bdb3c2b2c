"""Streamed base64 (labnet.protocol.codec), with both backends: pybase64 and the binascii fallback."""

from __future__ import annotations

import base64
import importlib
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labnet.protocol.codec as codec
from labnet.errors import Code, PeerError

SIZES = sorted({0, 1, 2, 3, 4, 5, 6, 7} | {3 * k + d for k in (10, 341, 21845) for d in (-1, 0, 1)})
BACKENDS = ("pybase64", "binascii")


def _reload(monkeypatch, backend: str):
    if backend == "binascii":
        monkeypatch.setenv("LABNET_BASE64", "binascii")
    else:
        monkeypatch.delenv("LABNET_BASE64", raising=False)
    importlib.reload(codec)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Run a test under each backend; the environment and the module are restored afterwards."""
    _reload(monkeypatch, request.param)
    assert codec.BACKEND == request.param
    yield request.param
    monkeypatch.undo()
    importlib.reload(codec)


@pytest.fixture(autouse=True, scope="module")
def _restore_backend():
    """Whatever happened here, leave the backend the session started with (LABNET_BASE64 as it was)."""
    before = codec.BACKEND
    yield
    importlib.reload(codec)
    assert codec.BACKEND == before


def chunkings(data: bytes, rng: random.Random):
    """A few ways to cut ``data``: whole, byte by byte (small data), random cuts."""
    yield [data]
    if len(data) <= 64:
        yield [data[i : i + 1] for i in range(len(data))]
    for _ in range(3):
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 8))))
        bounds = [0, *cuts, len(data)]
        yield [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def encode_all(chunks, encoding: str) -> bytes:
    enc = codec.Encoder(encoding)
    return b"".join(enc.encode(c) for c in chunks) + enc.finish()


def decode_all(chunks, encoding: str) -> bytes:
    dec = codec.Decoder(encoding)
    out = [dec.decode(c) for c in chunks[:-1]]
    out.append(dec.decode(chunks[-1] if chunks else b"", final=True))
    return b"".join(out)


# --------------------------------------------------------------------------


@pytest.mark.parametrize("size,wire", [(0, 0), (1, 4), (2, 4), (3, 4), (4, 8), (5, 8), (6, 8), (7, 12),
                                       (100_000_000, 133_333_336)])  # fmt: skip
def test_wire_length(size, wire):
    assert codec.wire_length(size, "b64") == wire
    if size < 100:
        assert len(base64.b64encode(b"x" * size)) == wire
    assert codec.wire_length(size, "raw") == size


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_every_size_and_chunking(backend, size):
    rng = random.Random(size)
    data = rng.randbytes(size)
    expected = base64.b64encode(data)
    for chunks in chunkings(data, rng):
        wire = encode_all(chunks, "b64")
        assert wire == expected  # one continuous base64 string, padding only at the end
        assert len(wire) == codec.wire_length(size, "b64")
        for wire_chunks in chunkings(wire, rng):
            assert decode_all(wire_chunks, "b64") == data
        assert encode_all(chunks, "raw") == data
        assert decode_all(chunks, "raw") == data


def test_encoder_accepts_memoryview_and_bytearray(backend):
    data = bytes(range(256)) * 3 + b"xy"
    enc = codec.Encoder("b64")
    wire = enc.encode(memoryview(data)[:100]) + enc.encode(bytearray(data[100:])) + enc.finish()
    assert wire == base64.b64encode(data)
    assert codec.Encoder("raw").encode(memoryview(b"abc")) == b"abc"


def test_encoder_holds_back_only_an_incomplete_group(backend):
    enc = codec.Encoder("b64")
    assert enc.encode(b"ab") == b""
    assert enc.encode(b"c") == b"YWJj"
    assert enc.encode(b"defg") == b"ZGVm"
    assert enc.finish() == b"Zw=="
    assert enc.finish() == b""


def test_decoder_finish_and_held_back_padding(backend):
    dec = codec.Decoder("b64")
    assert dec.decode(b"QUJDQQ==") == b"ABC"  # the padded group may be the end: held back
    assert dec.finish() == b"A"
    dec = codec.Decoder("b64")
    assert dec.decode(b"QUJDQQ==") == b"ABC"
    with pytest.raises(PeerError):  # ...but it was not the end
        dec.decode(b"QUJD")
    dec = codec.Decoder("b64")
    assert dec.decode(b"QUJ") == b""
    with pytest.raises(PeerError):  # an incomplete group at the end
        dec.finish()
    assert codec.Decoder("raw").finish() == b""


def test_seed_bug_is_refused_not_truncated(backend):
    """Each chunk encoded on its own (the seed): padding mid-body must be an error, never a short file."""
    chunks = [b"x" * 1000, b"y" * 1000]  # 1000 % 3 != 0: each has its own '='
    wire = b"".join(base64.b64encode(c) for c in chunks)
    with pytest.raises(PeerError) as info:
        decode_all([wire], "b64")
    assert info.value.code is Code.INTEGRITY


@pytest.mark.parametrize(
    "wire_chunks",
    [
        [b"QQ==QUJD"],  # padding then more data, in one final chunk
        [b"QQ==", b"QUJD"],  # padding in a non-final chunk
        [b"QQ=A"],  # '=' followed by a character
        [b"Q==="],  # too much padding
        [b"=AAA"],
        [b"QUJ*"],  # not in the alphabet
        [b"QU\nJD"],  # whitespace is not tolerated
        [b"QUJD QUJD"],
        [b"QUJD", b"\x00\x01\x02\x03"],
        [b"QUJDQ"],  # final length not a multiple of 4
        ["QUJDé".encode()],
    ],
)
def test_invalid_base64_is_an_integrity_error(backend, wire_chunks):
    with pytest.raises(PeerError) as info:
        decode_all(wire_chunks, "b64")
    assert info.value.code is Code.INTEGRITY


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError):
        codec.Encoder("hex")
    with pytest.raises(ValueError):
        codec.Decoder("base64")


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0, max_value=4100), max_size=12))
def test_property_any_chunking_round_trips(data, cuts):
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    wire = encode_all(chunks, "b64")
    assert wire == base64.b64encode(data)
    wbounds = [0, *sorted(c for c in cuts if c <= len(wire)), len(wire)]
    wire_chunks = [wire[a:b] for a, b in zip(wbounds, wbounds[1:], strict=False)]
    assert decode_all(wire_chunks, "b64") == data


@settings(max_examples=150, deadline=None)
@given(junk=st.binary(min_size=1, max_size=64), cut=st.integers(min_value=0, max_value=64))
def test_property_garbage_raises_only_peer_error(junk, cut):
    cut = min(cut, len(junk))
    try:
        decode_all([junk[:cut], junk[cut:]], "b64")
    except PeerError as exc:
        assert exc.code is Code.INTEGRITY


# -- backend selection ---------------------------------------------------------


def test_env_selects_binascii_at_import_in_a_fresh_interpreter():
    code = (
        "import base64, labnet.protocol.codec as c, labnet.protocol.receiver as p\n"
        "data = bytes(range(256)) * 41\n"
        "s = p.BodySender(len(data), 'b64'); wire = s.encode(data[:1000]) + s.encode(data[1000:]) + s.finish()\n"
        "r = p.Receiver(); r.start_body(len(data), 'b64'); r.receive_data(wire)\n"
        "out = b''\n"
        "while True:\n"
        "    e = r.next_event()\n"
        "    if isinstance(e, p.Data): out += e.data\n"
        "    else: break\n"
        "assert isinstance(e, p.BodyEnd) and out == data, e\n"
        "print(c.BACKEND)\n"
    )
    env = dict(os.environ, LABNET_BASE64="binascii")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "binascii"
    env.pop("LABNET_BASE64")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pybase64"


def test_falls_back_to_binascii_when_pybase64_is_missing(monkeypatch):
    monkeypatch.delenv("LABNET_BASE64", raising=False)
    monkeypatch.setitem(sys.modules, "pybase64", None)  # makes "import pybase64" fail
    importlib.reload(codec)
    try:
        assert codec.BACKEND == "binascii"
        assert encode_all([b"hello"], "b64") == b"aGVsbG8="
        assert decode_all([b"aGVs", b"bG8="], "b64") == b"hello"
    finally:
        monkeypatch.undo()
        importlib.reload(codec)
    assert codec.BACKEND == ("binascii" if os.environ.get("LABNET_BASE64", "").lower() == "binascii" else "pybase64")
