"""The file-name rule of the flat namespace a labnet server serves: the one place names are checked.

The rule, as docs/protocol.md ("The name rule") states it for students:

    A name is taken in its Unicode NFC form (the composed form: ``café``
    typed with a ready-made ``é`` or with ``e`` + a combining accent is one
    and the same name, and the NFC form is what is stored, listed and
    compared).  That form must be 1 to 255 bytes of UTF-8, must not be
    ``.`` or ``..`` nor start with a dot, must not contain ``/`` or ``\\``,
    and every character must be an assigned letter, mark, number,
    punctuation or symbol (Unicode categories L, M, N, P, S): so no
    whitespace of any kind, no control or invisible format character (no
    text-direction override such as U+202E, no zero-width character), no
    private-use or unassigned code point, and no undecodable bytes.  The
    blank-looking fillers U+115F, U+1160, U+3164, U+FFA0, U+2800 and U+1D159
    are refused too (spaces in disguise), and a name may not start with a
    combining mark, so it always begins with a character you can see.

:func:`check_name` returns the NFC form, and every caller (request parser,
client, store) must use the *returned* value.  :func:`is_canonical` tells
whether a name found on disk may be served as it is: it follows the rule
*and* is already in NFC (a decomposed ``café`` written there by another
program is left alone, unlisted, so two look-alike names never both show).
Whether a name *resolves* to a regular file inside the root is the store's
business (``labnet.server.store``).

Look-alikes that are *different* characters (Latin ``a`` and Cyrillic
``а``, fullwidth letters, ``ﬁ`` and ``fi``) are not caught: NFC only merges
different spellings of the same text.  Names are case-sensitive.

Pure functions only: this module must not import sockets, threads or the
file system (``os``).
"""

from __future__ import annotations

import unicodedata

from labnet.errors import Code, PeerError

MAX_NAME_BYTES = 255

# Letters, marks, numbers, punctuation, symbols: the first letter of a Unicode category.
# Refused by omission: Z (every space, line and paragraph separator) and C (Cc controls,
# Cf format characters such as bidi overrides and zero-width ones, Cs surrogates -- how
# Python spells bytes of a file name that are not UTF-8 -- Co private use, Cn unassigned).
ALLOWED_CATEGORIES = frozenset("LMNPS")

# Characters of allowed categories that draw as blank space: a name containing them
# would read like one with a space, or like an empty name.
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\U0001d159")

_CATEGORY_PROBLEM = {  # category -> (what it is, why it matters)
    "Cc": ("control character", ""),
    "Cf": ("invisible format character", " (text direction or zero width)"),
    "Cs": ("surrogate", " (bytes that are not UTF-8)"),
    "Co": ("private-use character", ""),
    "Cn": ("unassigned code point", ""),
}


def nfc(name: str) -> str:
    """The NFC (composed) form of ``name``: the one spelling labnet stores and compares."""
    return unicodedata.normalize("NFC", name)


def _character_problem(ch: str) -> str | None:
    if ch in "/\\":
        return "name may not contain a path separator"
    if ch == "\x00":
        return "name may not contain NUL"
    # Whitespace first: NEL (U+0085) is both whitespace and a control, and "whitespace" is the clearer word.
    if ch.isspace():
        return "name may not contain whitespace"
    category = unicodedata.category(ch)
    if category[0] not in ALLOWED_CATEGORIES:
        what, why = _CATEGORY_PROBLEM.get(category, ("separator", ""))
        return f"name may not contain {what} U+{ord(ch):04X}{why}"
    if ch in BLANK_LOOKING:
        return f"name may not contain blank-looking character U+{ord(ch):04X}"
    return None


def name_problem(name: str) -> str | None:
    """Return why ``name`` is not acceptable, or ``None`` when it is (judged on its NFC form)."""
    if not name:
        return "name is empty"
    name = nfc(name)
    # surrogatepass: a surrogate must be reported as such below, not crash the length check.
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"name is longer than {MAX_NAME_BYTES} bytes"
    if name in (".", ".."):
        return "name may not be '.' or '..'"
    if name.startswith("."):
        return "name may not start with a dot"
    for ch in name:
        problem = _character_problem(ch)
        if problem is not None:
            return problem
    # A leading mark draws on whatever is printed before the name (the size in a LIST line),
    # and a name made only of marks shows nothing at all.
    if unicodedata.category(name[0])[0] == "M":
        return f"name may not start with a combining mark U+{ord(name[0]):04X}"
    return None


def check_name(name: str) -> str:
    """Return the NFC form of ``name`` if it follows the rule, else raise ``PeerError(BAD_NAME)``."""
    problem = name_problem(name)
    if problem is not None:
        raise PeerError(f"{problem}: {name!r}"[:200], Code.BAD_NAME)
    return nfc(name)


def is_canonical(name: str) -> bool:
    """True when ``name`` follows the rule and is already its own NFC form.

    Only such names are listed or served from disk: any other spelling of a
    name is a different directory entry that a request can never reach.
    """
    return name_problem(name) is None and nfc(name) == name
