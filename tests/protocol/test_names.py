"""The file-name rule (labnet.protocol.names): what a flat, safe namespace accepts and refuses."""

from __future__ import annotations

import pytest

from labnet.errors import Code, PeerError
from labnet.protocol.names import MAX_NAME_BYTES, check_name, name_problem

GOOD = [
    "a",
    "report.pdf",
    "10MB.bin",
    "x" * MAX_NAME_BYTES,  # exactly 255 bytes
    "é" * (MAX_NAME_BYTES // 2),  # 254 bytes of 2-byte characters
    "data-2024_v1.tar.gz",
    "name.",  # a trailing dot is harmless on POSIX
    "a..b",  # dots inside a name are not a path
    "日本語.txt",
    "~tilde",
    "-dash",
]

BAD = {
    "": "empty",
    ".": "'.' or '..'",
    "..": "'.' or '..'",
    "../x": "dot",  # leading dot is found before the separator
    "x/../y": "separator",
    "/etc/passwd": "separator",
    "a/b": "separator",
    "a\\b": "separator",
    "..\\x": "dot",
    ".hidden": "dot",
    ".upload-abc.part": "dot",  # the store's temporary names
    "a\x00b": "NUL",
    "a\rb": "whitespace",
    "a\nb": "whitespace",
    "line\r\n": "whitespace",
    "tab\tname": "whitespace",
    "two words": "whitespace",
    " lead": "whitespace",
    "trail ": "whitespace",
    "nbsp\u00a0x": "whitespace",
    "ls\u2028x": "whitespace",
    "bell\x07": "control",
    "esc\x1b[0m": "control",
    "del\x7f": "control",
    "c1\x85x": "whitespace",  # NEL is both whitespace and C1 control
    "c1\x9bx": "control",
    "surrogate\ud800": "control",
    "x" * (MAX_NAME_BYTES + 1): "longer than 255 bytes",
    "é" * 128: "longer than 255 bytes",  # 128 characters, 256 bytes
}


@pytest.mark.parametrize("name", GOOD, ids=lambda n: repr(n)[:30])
def test_good_names_pass(name):
    assert name_problem(name) is None
    assert check_name(name) == name


@pytest.mark.parametrize("name,why", list(BAD.items()), ids=lambda n: repr(n)[:30])
def test_bad_names_are_refused_with_a_reason(name, why):
    problem = name_problem(name)
    assert problem is not None and why in problem
    with pytest.raises(PeerError) as info:
        check_name(name)
    assert info.value.code is Code.BAD_NAME
    assert len(info.value.message) <= 200


def test_255_bytes_is_the_limit_in_bytes_not_characters():
    assert check_name("€" * 85)  # 3 bytes each: 255 bytes
    assert name_problem("€" * 85 + "a") is not None  # 256 bytes


def test_every_control_character_is_refused():
    for cp in [*range(0x00, 0x20), *range(0x7F, 0xA0)]:
        assert name_problem(f"a{chr(cp)}b") is not None, hex(cp)
