"""Profiles (labnet.protocol.dialects.profile) and the registry (labnet.protocol.dialects): built-ins, TOML, checks."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

import labnet.protocol.dialects.profile as profile_module
from labnet.errors import UsageError
from labnet.protocol.dialects import DIALECTS, PROFILES, Profile, get_profile, load_profile


def docstring_examples() -> list[str]:
    """The TOML examples of the module docstring (the README copies them): each must load."""
    parts = profile_module.__doc__.split("::\n")[1:]
    examples = []
    for part in parts:
        lines = []
        for line in part.splitlines()[1:]:
            if line and not line.startswith("    "):
                break
            lines.append(line)
        examples.append(textwrap.dedent("\n".join(lines)))
    return examples


def test_the_built_in_profiles():
    assert {"course", "course-line", "course-reference", "sentinel"} <= set(PROFILES)
    course = PROFILES["course"]
    assert (course.dialect, course.upload_layout, course.download_verb, course.terminator_bytes, course.content_key) \
        == ("course", "inline", "GET", b"\r\n\r\n", "data_file")  # fmt: skip
    assert PROFILES["course-line"].terminator_bytes == b"\n"
    ref = PROFILES["course-reference"]
    assert ref.verbs() == {"list": "LIST", "download": "GET"} and ref.terminator_bytes == b""
    sentinel = PROFILES["sentinel"]
    assert sentinel.verbs() == {"list": "LIST", "upload": "UPLOAD", "download": "DOWNLOAD"}
    assert (sentinel.prompt, sentinel.marker, sentinel.per_connection) == ("READY", "__END__", "one")


def test_the_registry():
    assert DIALECTS == ("labnet", "course", "sentinel")
    assert get_profile("course") is PROFILES["course"]
    assert get_profile("sentinel").name == "sentinel"
    assert get_profile("course", "course-line").terminator == "lf"
    assert get_profile("labnet") is None
    mine = dataclasses.replace(PROFILES["course"], name="mine", download_verb="DOWNLOAD")
    assert get_profile("course", mine) is mine
    assert get_profile("course", 'dialect = "course"\n[verbs]\nupload = "PUT"\n').upload_verb == "PUT"
    with pytest.raises(UsageError, match="unknown dialect 'http'"):
        get_profile("http")
    with pytest.raises(UsageError, match="sentinel dialect, not course"):
        get_profile("course", "sentinel")
    with pytest.raises(UsageError, match="takes no profile"):
        get_profile("labnet", "course")


def test_the_docstring_examples_load():
    first, second = (load_profile(text) for text in docstring_examples())
    assert (first.name, first.upload_verb, first.download_verb, first.delete_verb) == \
        ("kelompok-3", "POST", "DOWNLOAD", None)  # fmt: skip
    assert (first.upload_layout, first.json_requests, first.params_key, first.request_content_key) == \
        ("json", "all", "", "file_content")  # fmt: skip
    assert (first.content_key, first.list_key, first.message_key) == ("file_data", "files", "message")
    assert (second.dialect, second.upload_verb, second.prompt, second.marker) == \
        ("sentinel", "STORE", "READY_FOR_DATA", "__COMPLETE__")  # fmt: skip


def test_load_from_a_path_and_from_bytes(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text('extends = "course-line"\nname = "line"\n[reply]\ncontent_key = "file_data"\n')
    for source in (path, str(path), path.read_bytes()):
        p = load_profile(source)
        assert (p.name, p.terminator, p.content_key) == ("line", "lf", "file_data")
    with pytest.raises(UsageError, match="missing.toml: cannot read"):
        load_profile(tmp_path / "missing.toml")
    path.write_text('dialect = "course"\n[upload]\nlayout = "blob"\n')
    with pytest.raises(UsageError, match=r"server.toml: profile key 'upload.layout' is 'blob'"):
        load_profile(path)


BAD = [
    ('dialect = "ftp"', "'dialect' is 'ftp'; allowed: course, sentinel"),
    ('name = "x"', "needs 'dialect'"),
    ('extends = "nope"', "no built-in profile 'nope'"),
    ('extends = "course"\ndialect = "sentinel"', "'dialect' is 'sentinel' but 'extends'"),
    ('dialect = "course"\ncolour = "blue"', "unknown key 'colour'"),
    ('dialect = "course"\n[extra]\na = 1', "unknown section [extra]"),
    ('dialect = "course"\nverbs = "LIST"', "'verbs' must be a section"),
    ('dialect = "course"\n[verbs]\nlist = 3', "'verbs.list' must be a string, not 3"),
    ('dialect = "course"\n[verbs]\nlist = ""', "'verbs.list' may not be empty"),
    ('dialect = "course"\n[verbs]\ndownload = "GET FILE"', "'verbs.download' must be one word"),
    ('dialect = "course"\n[verbs]\nupload = "get"', "'verbs.download' is 'GET', the same word as 'verbs.upload'"),
    ('dialect = "course"\n[verbs]\nuplaod = "PUT"', "unknown key 'verbs.uplaod' (allowed in [verbs]: list, upload"),
    (
        'dialect = "course"\n[request]\nterminator = "crlf"',
        "'request.terminator' is 'crlf'; allowed: crlfcrlf, lf, none",
    ),
    ('dialect = "course"\n[request]\nper_connection = 2', "'request.per_connection' is 2; allowed: one, many"),
    ('dialect = "course"\n[request]\ncase_sensitive = "yes"', "'request.case_sensitive' must be true or false"),
    ('dialect = "course"\n[upload]\nlayout = "multipart"', "'upload.layout' is 'multipart'; allowed: inline, "),
    ('dialect = "course"\n[upload]\nready = true', "'upload.ready' needs upload.layout = \"header_body\""),
    ('dialect = "course"\n[upload]\nlength = "chars"', "'upload.length' is 'chars'; allowed: file, base64"),
    ('dialect = "course"\n[upload]\nlayout = "header_body"\n[request]\nterminator = "lf"', "'upload.layout'"),
    ('dialect = "course"\n[upload]\nlayout = "json"\njson_requests = "all"\ncommand_key = ""', "'upload.command_key'"),
    ('dialect = "course"\n[upload]\nname_key = ""', "'upload.name_key' must be non-empty"),
    ('dialect = "course"\n[reply]\ncontent_key = 1', "'reply.content_key' must be a string"),
    (
        'dialect = "course"\n[reply]\ncontnet_key = "x"',
        "unknown key 'reply.contnet_key' (allowed in [reply]: content_key",
    ),
    ('dialect = "course"\n[sentinel]\nmarker = "__X__"', "[sentinel] applies to dialect 'sentinel' only"),
    ('dialect = "sentinel"\n[upload]\nlayout = "inline"', "[upload] applies to dialect 'course' only"),
    ('dialect = "sentinel"\n[reply]\nlist_key = "files"', "[reply] applies to dialect 'course' only"),
    ('dialect = "sentinel"\n[request]\nterminator = "lf"', "'request.terminator' applies to dialect 'course' only"),
    ('dialect = "sentinel"\n[verbs]\ndelete = "DEL"', "'verbs.delete' must be empty"),
    ('dialect = "sentinel"\n[sentinel]\nmarker = "ENDE"', "'sentinel.marker' 'ENDE' could appear inside base64"),
    ('dialect = "sentinel"\n[sentinel]\nmarker = "__ END__"', "'sentinel.marker' must be one word"),
    ('dialect = "sentinel"\n[sentinel]\nprompt = ""', "'sentinel.prompt' must be non-empty"),
    ('dialect = "course"\n[verbs', "not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m[:40] for _, m in BAD])
def test_each_bad_key_is_named(text, message):
    with pytest.raises(UsageError) as err:
        load_profile(text)
    assert message in str(err.value)


def test_direct_construction_is_checked_too():
    with pytest.raises(UsageError, match="'upload.layout' is 'inline2'"):
        Profile(upload_layout="inline2")
    with pytest.raises(UsageError, match="'reply.list_key'"):
        dataclasses.replace(PROFILES["course"], list_key="")


def test_verbs_as_written_or_in_upper_case_unless_case_insensitive():
    p = dataclasses.replace(PROFILES["course"], download_verb="get")
    assert p.op_of("get") == p.op_of("GET") == "download"
    assert p.op_of("Get") == "unknown"
    assert PROFILES["course"].op_of("upload") == "unknown"
    loose = dataclasses.replace(PROFILES["course"], case_sensitive=False)
    assert loose.op_of("upload") == loose.op_of("Upload") == "upload"
    assert PROFILES["course"].op_of("POST") == "unknown"
    with pytest.raises(UsageError, match="no upload request"):
        PROFILES["course-reference"].verb_for("upload")


def test_the_readme_profile_examples_load():
    """The two TOML examples students copy from the README stay valid profiles."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S)
              if "[student]" not in b]  # a grading manifest (tests/measure/test_grade.py reads that one)
    assert len(blocks) == 2
    loaded = [load_profile(b) for b in blocks]
    assert [(p.name, p.dialect) for p in loaded] == [("kelompok-3", "course"), ("store-fetch", "sentinel")]
