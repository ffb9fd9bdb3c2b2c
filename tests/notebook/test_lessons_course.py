"""lessons_course: the course's reference-shaped server (recv(32) per request, listen backlog) on real sockets.

Every test that starts ``course_recv32_server`` stops it (the helpers do, in ``finally``) and checks
that none of its processes is left.
"""

from __future__ import annotations

import sys

import pytest

from labnet.notebook import lessons_course, own_server


def _no_student_left():
    assert not own_server.stop_all()


@pytest.mark.timeout(60)
def test_recv32_server_answers_one_upload_with_many_replies_and_stores_a_wrong_file():
    content = lessons_course.demo_content(300)
    got = lessons_course.recv32_upload_demo("note.txt", content)
    assert got["request_bytes"] == len(lessons_course.upload_bytes("note.txt", content))
    # every 32-byte piece was answered as a request of its own
    assert got["replies"] > 1 and got["error_replies"] >= got["replies"] - 1
    assert not got["stored_matches"] and (got["stored_bytes"] or 0) < len(content)
    _no_student_left()


@pytest.mark.timeout(60)
def test_recv32_server_serves_what_fits_in_32_bytes():
    with lessons_course.reference_like(workers=2) as started:
        address = (started.host, started.port)
        (started.root / "a.txt").write_bytes(b"abc")
        replies = lessons_course.split_replies(lessons_course._exchange(address, b"LIST\r\n\r\n"))
        assert replies == [{"status": "OK", "data": ["a.txt"]}]
        got = lessons_course.recv32_upload_demo("b.txt", b"", started=started)  # UPLOAD b.txt \r\n\r\n: 16 bytes
        assert got["replies"] == 1
    _no_student_left()


@pytest.mark.parametrize("size", [1, 32, 4096])
def test_the_course_parser_reads_one_request_however_it_is_split(size):
    content = lessons_course.demo_content(1000)
    got = lessons_course.correct_reader_demo("note.txt", content, size=size)
    assert got["requests"] == 1 and got["ops"] == ["upload"] and got["name"] == "note.txt"
    assert got["ended_by"] == ["terminator"] and got["content_matches"] and got["content_bytes"] == 1000
    assert got["reads"] >= -(-len(lessons_course.upload_bytes("note.txt", content)) // size)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the backlog + 1 rule is Linux's")
def test_a_listener_that_never_accepts_completes_backlog_plus_one_connects():
    assert [lessons_course.queue_capacity(b) for b in (1, 4)] == [2, 5]


def test_backlog_summary_counts():
    rows = [{"backlog": 1, "repeat": 0, "clients": 4, "times": [0.01, 1.2, None, 0.02]},
            {"backlog": 1, "repeat": 1, "clients": 4, "times": [0.01, 0.01, 0.02, 1.1]},
            {"backlog": 128, "repeat": 0, "clients": 4, "times": [0.01, 0.02, 0.01, 0.03]}]
    one, wide = lessons_course.backlog_summary(rows)
    assert (one["backlog"], one["runs"], one["clients"], one["slow"], one["no_reply"]) == (1, 2, 8, 2, 1)
    assert one["slow_or_missing_per_run"] == [2, 1] and one["median_s"] == 0.02
    assert (wide["slow"], wide["no_reply"], wide["slow_or_missing_per_run"]) == (0, 0, [0])
    assert len(lessons_course.plot_backlog(rows).axes) == 2


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_fifty_simultaneous_connects_wait_for_syn_retries_with_backlog_1_not_128():
    """Counts over two runs of 50 clients each, not one timing: with listen(1) some connects are dropped and
    retried after a second (or not served within the limit); with listen(128) none."""
    rows = lessons_course.measure_backlog((1, 128), clients=50, repeats=2, timeout=2.5)
    narrow, wide = lessons_course.backlog_summary(rows)
    late_narrow = narrow["slow"] + narrow["no_reply"]
    late_wide = wide["slow"] + wide["no_reply"]
    assert narrow["clients"] == wide["clients"] == 100
    assert late_narrow > late_wide, (narrow, wide)
    assert wide["no_reply"] == 0, wide
    _no_student_left()
