"""The file-name rule (labnet.protocol.names): what a flat, safe namespace accepts and refuses,
and that names which look alike (NFC/NFD, invisible or direction-control characters) cannot coexist."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labnet.errors import Code, PeerError
from labnet.protocol.names import MAX_NAME_BYTES, check_name, is_canonical, name_problem

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
    "surrogate\ud800": "surrogate",
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


# --------------------------------------------------------------------------
# Names that look alike: one NFC spelling, nothing invisible (issue 10, family 3)
# --------------------------------------------------------------------------

CAFE_NFC = "caf\u00e9.txt"  # é as one code point
CAFE_NFD = "cafe\u0301.txt"  # e + COMBINING ACUTE ACCENT: looks the same
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
# Characters the issue names as blank-looking, plus every space: none of them is something you see.
NOT_VISIBLE = set("\u115f\u1160\u3164\uffa0\u2800\U0001d159")


def visible(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNPS" and ch not in NOT_VISIBLE


def outcome(name: str):
    """What ``check_name`` makes of ``name``: the name it returns, or ``"refused"``."""
    try:
        return check_name(name)
    except PeerError as exc:
        assert exc.code is Code.BAD_NAME
        return "refused"


def test_composed_and_decomposed_spellings_are_one_name():
    assert CAFE_NFC != CAFE_NFD and unicodedata.normalize("NFC", CAFE_NFD) == CAFE_NFC
    assert check_name(CAFE_NFD) == CAFE_NFC
    assert check_name(CAFE_NFC) == CAFE_NFC
    assert name_problem(CAFE_NFD) is None  # accepted (as its NFC form), not refused
    assert is_canonical(CAFE_NFC) and not is_canonical(CAFE_NFD)  # on disk, only the NFC spelling is served
    assert check_name("\u212b.txt") == "\u00c5.txt"  # ANGSTROM SIGN is canonically the letter Å


@pytest.mark.parametrize(
    "name,why",
    [
        ("photo\u202egpj.exe", "format"),  # RIGHT-TO-LEFT OVERRIDE: shows as photoexe.jpg
        ("\u202egpj.exe", "format"),
        ("zero\u200bwidth", "format"),  # ZERO WIDTH SPACE
        ("a\u200db", "format"),  # ZERO WIDTH JOINER
        ("\ufeffbom.txt", "format"),  # BYTE ORDER MARK
        ("soft\u00adhyphen", "format"),
        ("lrm\u200e", "format"),
        ("isolate\u2066x", "format"),
        ("tag\U000e0041", "format"),
        ("\u3164", "blank-looking"),  # HANGUL FILLER alone: an "empty" name
        ("\u115f", "blank-looking"),
        ("\u1160", "blank-looking"),
        ("\uffa0", "blank-looking"),
        ("\u2800", "blank-looking"),  # BRAILLE PATTERN BLANK
        ("\U0001d159", "blank-looking"),
        ("two\u3164words", "blank-looking"),  # a space in disguise
        ("\u0301", "combining mark"),  # a combining mark alone shows nothing
        ("\u0301\u0302\u0303", "combining mark"),
        ("\u034f", "combining mark"),  # COMBINING GRAPHEME JOINER: invisible
        ("\ufe0f", "combining mark"),  # VARIATION SELECTOR-16 alone
        ("\u0301abc", "combining mark"),  # would draw on whatever precedes the name
        ("\ue000.txt", "private-use"),
        ("\U000f0000", "private-use"),
        ("\u0378x", "unassigned"),
        ("\uffff", "unassigned"),  # a noncharacter
        ("\u3000ideographic", "whitespace"),
        ("ogham\u1680", "whitespace"),
        ("para\u2029", "whitespace"),
        ("bytes-\udcff.bin", "surrogate"),  # how os.listdir spells a byte that is not UTF-8
    ],
    ids=lambda n: ascii(n)[:30],
)
def test_invisible_and_misleading_names_are_refused(name, why):
    problem = name_problem(name)
    assert problem is not None and why in problem, problem
    with pytest.raises(PeerError) as info:
        check_name(name)
    assert info.value.code is Code.BAD_NAME
    assert len(info.value.message) <= 200


@pytest.mark.parametrize("name", ["e\u0301", "Å\u0308x", "\u0915\u093f.txt", "\uac00", "\u1100\u1161", "a\ufe0f", "😀.png"],
                         ids=ascii)  # fmt: skip
def test_marks_after_a_visible_character_are_fine(name):
    out = check_name(name)
    assert out == unicodedata.normalize("NFC", name)
    assert check_name(out) == out


def test_length_is_counted_on_the_nfc_form():
    # 127 decomposed é: 381 bytes as typed, 254 bytes once composed -- the form that is stored.
    assert check_name("e\u0301" * 127) == "\u00e9" * 127
    assert name_problem("e\u0301" * 128) is not None


# Any text at all, surrogates included (they are what undecodable file-name bytes become), mixed
# with the characters this rule is about, so that both outcomes are common.
tricky = st.sampled_from("ae.-_é\u0301\u0308\u0302ÅΩ가\u1100\u1161 \t\n\u202e\u200b\u3164\u2800\ue000\u0378/\\\x00")
any_char = st.characters(exclude_categories=())


@settings(max_examples=500, deadline=None)
@given(name=st.text(st.one_of(any_char, tricky), max_size=20))
def test_property_check_name_refuses_or_returns_a_clean_fixed_point(name):
    try:
        out = check_name(name)
    except PeerError as exc:
        assert exc.code is Code.BAD_NAME
        assert name_problem(name) is not None
        return
    assert name_problem(name) is None
    assert out == unicodedata.normalize("NFC", name) and unicodedata.is_normalized("NFC", out)
    assert check_name(out) == out  # idempotent: what is stored is accepted unchanged
    assert is_canonical(out)
    assert not {unicodedata.category(ch) for ch in out} & REFUSED_CATEGORIES
    assert not any(ch.isspace() or ch in "/\\" for ch in out)
    assert any(visible(ch) for ch in out) and visible(out[0])
    assert 1 <= len(out.encode("utf-8")) <= MAX_NAME_BYTES  # strict UTF-8: no surrogate left
    assert not out.startswith(".")


@settings(max_examples=500, deadline=None)
@given(name=st.text(st.one_of(any_char, tricky), min_size=1, max_size=20))
def test_property_every_spelling_of_a_name_gets_the_same_answer(name):
    nfc, nfd = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assert outcome(name) == outcome(nfc) == outcome(nfd)
