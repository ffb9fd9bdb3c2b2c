"""Helpers for the dialect tests: feed a sans-IO parser in pieces and collect its events, Data merged."""

from __future__ import annotations

import random

from labnet.protocol.receiver import CLOSED, NEED_DATA, Data


def pieces(data: bytes, how) -> list[bytes]:
    """Cut ``data``: ``"whole"``, ``"bytes"`` (one byte at a time), an int (that size), or a Random (random cuts)."""
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    if isinstance(how, int):
        return [data[i : i + how] for i in range(0, len(data), how)]
    cuts = sorted(how.sample(range(1, max(2, len(data))), min(len(data) - 1, how.randint(1, 12)))) if data else []
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def merge(events: list) -> list:
    """Adjacent Data events joined into one (how they are cut depends on the reads, not on the stream)."""
    out: list = []
    for ev in events:
        if isinstance(ev, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + ev.data)
        elif not (isinstance(ev, Data) and not ev.data):
            out.append(ev)
    return out


def drain(parser, events: list, watch=None) -> bool:
    """Pull events until NEED_DATA or CLOSED; True when CLOSED came.  ``watch(parser)`` after each event."""
    while True:
        ev = parser.next_event()
        if ev is NEED_DATA:
            return False
        if ev is CLOSED:
            return True
        events.append(ev)
        if watch:
            watch(parser)


def drive(parser, data: bytes, how="whole", close=True, silence=False, watch=None) -> list:
    """Feed ``data`` cut ``how``, draining after each piece; then a silence and/or the close. Merged events."""
    events: list = []
    for piece in pieces(data, how):
        parser.receive_data(piece)
        drain(parser, events, watch)
    if silence:
        parser.end_of_request()
        drain(parser, events, watch)
    if close:
        parser.receive_data(b"")
        drain(parser, events, watch)
    return merge(events)


def data_of(events: list) -> bytes:
    return b"".join(ev.data for ev in events if isinstance(ev, Data))


def without_data(events: list) -> list:
    return [ev for ev in events if not isinstance(ev, Data)]


def rng(seed: int = 1234) -> random.Random:
    return random.Random(seed)
