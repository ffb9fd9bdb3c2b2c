"""pyproject.toml (pip) and environment.yml (conda/mamba) must install the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# conda-forge names that differ from the PyPI name (PyPI name -> conda name); none needed so far.
CONDA_NAME = {}
NOT_PACKAGES = {"python", "pip"}


def normalize(name: str) -> str:
    """PEP 503 normalization: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """``"pybase64>=1.3"``, ``"foo[bar]==1; python_version<'3.11'"``, ``"tqdm 4.66.*"`` -> the bare name."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    assert m, f"cannot read a package name from {spec!r}"
    return normalize(m.group(1))


def pyproject_packages() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {requirement_name(s): "dependencies" for s in project.get("dependencies", [])}
    for extra, specs in project.get("optional-dependencies", {}).items():
        for s in specs:
            out.setdefault(requirement_name(s), f"extra {extra}")
    return out


def parse_environment_yml(text: str) -> tuple[list[str], list[str]]:
    """A minimal reader for environment.yml: (conda dependencies, pip: entries).

    Handles what such files contain: a top-level ``dependencies:`` block
    list, with an optional nested ``- pip:`` block list; comments and blank
    lines are skipped.  No PyYAML needed.
    """
    conda, pip = [], []
    in_deps, in_pip, pip_indent = False, False, -1
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()  # a YAML comment starts at '#' after a space
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_deps = line.strip() == "dependencies:"
            in_pip = False
            continue
        if not in_deps:
            continue
        item = line.strip()
        if in_pip and indent > pip_indent:
            assert item.startswith("- "), f"unexpected line in pip: section: {raw!r}"
            pip.append(item[2:].strip().strip("'\""))
            continue
        in_pip = False
        assert item.startswith("- "), f"unexpected line in dependencies: {raw!r}"
        value = item[2:].strip().strip("'\"")
        if value.rstrip(":").strip() == "pip" and value.endswith(":"):
            in_pip, pip_indent = True, indent
            continue
        conda.append(value)
    return conda, pip


def environment_packages() -> tuple[dict[str, str], list[str], list[str]]:
    conda, pip = parse_environment_yml((ROOT / "environment.yml").read_text())
    names = {requirement_name(s): s for s in conda}
    return {n: s for n, s in names.items() if n not in NOT_PACKAGES}, conda, pip


def test_minimal_parser_on_a_sample():
    sample = """
name: x   # comment
channels:
  - conda-forge
dependencies:
  # runtime
  - python>=3.10
  - pip
  - tqdm >=4.66   # trailing comment
  - "pybase64>=1.3"
  - pip:
      - -e .
      - somepkg==1.0
variables:
  - not-a-dep
"""
    conda, pip = parse_environment_yml(sample)
    assert conda == ["python>=3.10", "pip", "tqdm >=4.66", "pybase64>=1.3"]
    assert pip == ["-e .", "somepkg==1.0"]


def test_minimal_parser_agrees_with_pyyaml_when_installed():
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in data["dependencies"] if isinstance(d, str)]
    pip = [x for d in data["dependencies"] if isinstance(d, dict) for x in d.get("pip", [])]
    assert parse_environment_yml((ROOT / "environment.yml").read_text()) == (conda, pip)


def test_pyproject_and_environment_list_the_same_packages():
    pypi = {CONDA_NAME.get(n, n): where for n, where in pyproject_packages().items()}
    conda, _, _ = environment_packages()
    only_pip = sorted(f"{n} ({where})" for n, where in pypi.items() if n not in conda)
    only_conda = sorted(n for n in conda if n not in pypi)
    assert not only_pip, f"in pyproject.toml but not in environment.yml: {only_pip}"
    assert not only_conda, f"in environment.yml but not in pyproject.toml: {only_conda}"


def test_runtime_dependencies_are_small_and_include_the_base64_backend():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {requirement_name(s) for s in project["dependencies"]}
    assert {"tqdm", "pybase64"} <= names
    assert len(names) <= 5


def test_environment_installs_labnet_itself_and_pins_the_same_python():
    _, conda, pip = environment_packages()
    assert "-e ." in pip, "environment.yml should pip-install labnet itself (pip: [-e .])"
    assert "pip" in conda
    python = [s for s in conda if requirement_name(s) == "python"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python and python[0].replace(" ", "") == "python" + requires.replace(" ", "")


def test_the_wheel_holds_every_module_and_each_imports_from_it(tmp_path):
    """``pip wheel . --no-deps``: its file list is ``labnet/**/*.py``; installed alone, every module imports."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # Built from a clean copy: setuptools would also pack stale files left in an in-tree build/.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "labnet", src / "labnet", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w",
                          str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("labnet-*.whl")
    with zipfile.ZipFile(wheel) as z:
        in_wheel = {n for n in z.namelist() if n.startswith("labnet/") and n.endswith(".py")}
        z.extractall(tmp_path / "site")
    in_repo = {p.relative_to(ROOT).as_posix() for p in (ROOT / "labnet").rglob("*.py")}
    assert in_wheel == in_repo, f"missing: {sorted(in_repo - in_wheel)}; extra: {sorted(in_wheel - in_repo)}"
    names = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in in_wheel)
    site = tmp_path / "site"
    probe = (f"import importlib, sys; sys.path.insert(0, {str(site)!r})\n"
             "for n in sys.argv[1:]:\n"
             f"    m = importlib.import_module(n); assert m.__file__.startswith({str(site)!r}), m.__file__\n"
             "print('ok', len(sys.argv) - 1)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"ok {len(names)}"
