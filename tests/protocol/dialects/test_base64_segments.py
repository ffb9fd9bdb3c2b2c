"""The streaming segment decoder (labnet.protocol.dialects.base64_segments): block-by-block base64 decodes whole."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys

import pytest
from dialect_drive import pieces
from hypothesis import given, settings
from hypothesis import strategies as st

from labnet.errors import Code, PeerError
from labnet.protocol.dialects.base64_segments import SegmentDecoder

KiB, MiB = 1024, 1024 * 1024


def decode_all(parts, check_held=True):
    dec = SegmentDecoder()
    out = []
    for part in parts:
        out.append(dec.feed(part))
        if check_held:
            assert dec.buffered < 4
    out.append(dec.finish())
    return b"".join(out), dec.findings()


def block_encoded(data: bytes, block: int) -> bytes:
    """What a block-by-block encoder sends: each block encoded on its own, padding and all."""
    return b"".join(base64.b64encode(data[i : i + block]) for i in range(0, len(data), block))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 100, 3 * KiB + 1])
@pytest.mark.parametrize("how", ["whole", "bytes", 3, 4, 5, 4097])
def test_a_continuous_string_decodes_as_one_segment(size, how):
    data = random.Random(size).randbytes(size)
    wire = base64.b64encode(data)
    if how == "bytes" and size > 100:
        how = 7
    got, found = decode_all(pieces(wire, how))
    assert got == data
    assert found.segments == (1 if size else 0)
    assert not found.padded_midstream
    assert found.decoded == size and found.characters == len(wire)
    assert found.describe() == ""


# 1, 5 and 10 MiB blocks, scaled down to KiB (the "+1"/"+2" keeps each block's length off a multiple of 3:
# that is what puts "=" padding in the middle of the stream).
@pytest.mark.parametrize("block", [3 * KiB + 1, 5 * KiB + 2, 10 * KiB + 1])
@pytest.mark.parametrize("how", ["whole", 1000, 4096, "random"])
def test_block_by_block_base64_decodes_whole_and_is_flagged(block, how):
    data = random.Random(block).randbytes(7 * block + 123)
    wire = block_encoded(data, block)
    assert base64.b64decode(wire) == data[:block]  # the silent truncation the students ship
    got, found = decode_all(pieces(wire, random.Random(3) if how == "random" else how))
    assert got == data
    assert found.segments == 8 and found.padded_midstream
    assert found.decoded == len(data)
    assert "padding in the middle" in found.describe()


def test_block_padding_byte_by_byte():
    data = os.urandom(50)
    wire = block_encoded(data, 7)
    got, found = decode_all(pieces(wire, "bytes"))
    assert got == data and found.segments == 8


def test_thirty_mebibyte_blocks_decode_whole():
    """30 blocks of 1 MiB, each encoded separately (the seed's client), fed in 64 KiB reads: every byte back."""
    block = os.urandom(MiB)
    wire = base64.b64encode(block) * 30  # 1 MiB is not a multiple of 3: every block ends in padding
    dec = SegmentDecoder()
    total = 0
    for i in range(0, len(wire), 64 * KiB):
        out = dec.feed(wire[i : i + 64 * KiB])
        if total // MiB == (total + len(out)) // MiB:  # spot-check one decoded piece per block
            assert out == block[total % MiB : total % MiB + len(out)]
        total += len(out)
    total += len(dec.finish())
    found = dec.findings()
    assert total == 30 * MiB == found.decoded
    assert found.segments == 30 and found.padded_midstream


def test_whitespace_is_tolerated_and_counted():
    data = os.urandom(1000)
    wire = base64.encodebytes(data)  # a newline every 76 characters, and one at the end
    got, found = decode_all(pieces(wire, 50))
    assert got == data
    assert found.whitespace == wire.count(b"\n") and found.segments == 1
    assert "whitespace" in found.describe()
    got, found = decode_all([b" QUJD \r\n", b"\tRA", b"==\n"])
    assert got == b"ABCD" and found.whitespace == 6


def test_a_last_group_without_padding_is_decoded_and_flagged():
    got, found = decode_all([b"QUJDRA"])
    assert got == b"ABCD" and found.unpadded_end
    got, found = decode_all([b"QUJDREU"])
    assert got == b"ABCDE" and found.unpadded_end


@pytest.mark.parametrize(
    "parts, words",
    [
        ([b"QUJD!EFG"], ["b'!'", "offset 4"]),
        ([b"QUJD", b"RE\xffG"], ["b'\\xff'", "offset 6"]),
        ([b"QU\nJD", b"RE-G"], ["b'-'", "offset 7"]),
        ([b"QUJDQ=A="], ["misplaced", "after 4 characters"]),
        ([b"Q===QUJD"], ["misplaced"]),
        ([b"QU", b"=Q"], ["misplaced"]),
        ([b"===="], ["misplaced"]),
    ],
)
def test_bad_base64_is_a_peer_error_naming_where(parts, words):
    dec = SegmentDecoder()
    with pytest.raises(PeerError) as err:
        for part in parts:
            dec.feed(part)
        dec.finish()
    assert err.value.code == Code.INTEGRITY
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("tail", [b"Q", b"QU=", b"QUJDQ"])
def test_a_stream_that_stops_inside_a_group_is_refused(tail):
    dec = SegmentDecoder()
    dec.feed(tail)
    with pytest.raises(PeerError, match="middle of a group"):
        dec.finish()


@settings(max_examples=150, deadline=None)
@given(
    blocks=st.lists(st.binary(max_size=40), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=10),
    wrap=st.booleans(),
)
def test_any_split_of_any_block_stream_gives_the_same_bytes(blocks, cuts, wrap):
    wire = b"".join(base64.encodebytes(b) if wrap else base64.b64encode(b) for b in blocks)
    bounds = sorted({0, len(wire), *(c for c in cuts if c <= len(wire))})
    parts = [wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    got, found = decode_all(parts)
    assert got == b"".join(blocks)
    padded = [b for b in blocks if len(b) % 3]
    assert found.segments >= len(padded)


def test_the_binascii_backend_decodes_blocks_too():
    code = (
        "import base64, os\n"
        "from labnet.protocol.codec import BACKEND\n"
        "from labnet.protocol.dialects.base64_segments import SegmentDecoder\n"
        "data = os.urandom(10000)\n"
        "wire = b''.join(base64.b64encode(data[i:i+1001]) for i in range(0, 10000, 1001))\n"
        "d = SegmentDecoder(); out = b''.join(d.feed(wire[i:i+333]) for i in range(0, len(wire), 333)) + d.finish()\n"
        "assert BACKEND == 'binascii' and out == data and d.segments == 10, (BACKEND, len(out), d.segments)\n"
    )
    env = dict(os.environ, LABNET_BASE64="binascii")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
