"""The layers of labnet, as the module docstrings state them, checked.

Each package may import only the layers listed for it in :data:`ALLOWED`
(read as the import graph of every ``import`` statement in ``labnet/``,
function bodies included); the graph of module-level imports has no cycle;
no private name crosses a module boundary; and, in a fresh interpreter,
importing one layer loads only what it is allowed to (``sys.modules``).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "labnet"

# layer -> the layers its modules may import (besides themselves)
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "procutil": set(),
    "protocol": {"errors", "config"},
    "transport": {"errors", "config", "procutil", "protocol"},
    "server": {"errors", "config", "procutil", "protocol", "transport", "version"},
    "client": {"errors", "config", "procutil", "protocol", "transport"},
    "measure": {"errors", "config", "procutil", "protocol", "transport", "client"},
    "notebook": {"errors", "config", "procutil", "protocol", "transport", "client", "measure", "version"},
    "cli": {"errors", "config", "procutil", "protocol", "transport", "client", "measure", "server"},
    "__main__": {"cli"},
    "__init__": set(),  # loads its public names lazily (PEP 562), never at import time
}

# Imports inside a function that are allowed, each for a reason other than dodging a cycle.
LAZY_OK = {
    ("labnet.measure.stress_pools", "labnet.measure.progress"),  # tqdm stays out of spawned workers
    ("labnet.measure.matrix_run", "labnet.measure.plotting"),  # matplotlib only when plots are asked for
}
HEAVY = ("ipywidgets", "IPython", "matplotlib")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def imports_of(path: Path):
    """``(imported labnet module, at module level?, line)`` for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    known = modules()
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks count as not imported at run time
            continue
        if isinstance(node, ast.Try):
            top_level.update(id(n) for n in ast.walk(node))
        top_level.add(id(node))
    type_checking = {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (labnet uses absolute imports)"
            base = node.module or ""
            for a in node.names:
                full = f"{base}.{a.name}"
                targets.append(full if full in known else base)
        for t in targets:
            if id(node) in type_checking:
                continue
            if t == "labnet" or t.startswith("labnet."):
                yield t, id(node) in top_level, node.lineno
            elif t.split(".")[0] in HEAVY:
                yield t, id(node) in top_level, node.lineno


def test_every_import_respects_the_layers():
    problems = []
    for name, path in modules().items():
        mine = layer_of(name)
        for target, _, line in imports_of(path):
            if not target.startswith("labnet"):
                continue
            theirs = "version" if target == "labnet" else layer_of(target)
            if theirs == mine:
                continue
            if theirs not in ALLOWED[mine]:
                problems.append(f"{name}:{line} imports {target} ({mine} may import {sorted(ALLOWED[mine])})")
    assert not problems, "\n".join(problems)


def test_no_import_inside_a_function_except_the_documented_ones():
    problems = []
    for name, path in modules().items():
        for target, top, line in imports_of(path):
            if top or target.split(".")[0] in HEAVY:
                continue
            if (name, target) not in LAZY_OK:
                problems.append(f"{name}:{line} imports {target} inside a function")
    assert not problems, "\n".join(problems)


def test_heavy_optional_libraries_only_in_the_notebook_package_and_plotting():
    problems = []
    for name, path in modules().items():
        for target, _top, line in imports_of(path):
            if target.split(".")[0] not in HEAVY or layer_of(name) == "notebook":
                continue
            if name == "labnet.measure.plotting" and target.startswith("matplotlib"):
                continue
            problems.append(f"{name}:{line} imports {target}")
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    graph = {name: set() for name in modules()}
    for name, path in modules().items():
        for target, top, _ in imports_of(path):
            if top and target in graph and target != name:
                graph[name].add(target)
    # A submodule that imported its own package's __init__ would see it half-initialised.
    for name, targets in graph.items():
        parents = {".".join(name.split(".")[:i]) for i in range(2, len(name.split(".")))}
        assert not targets & parents, f"{name} imports its own package's __init__: {targets & parents}"
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_no_private_name_crosses_a_module():
    problems = []
    for name, path in list(modules().items()) + [(p.stem, p) for p in (ROOT / "bench").glob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labnet"):
                for a in node.names:
                    if a.name.startswith("_") and a.name != "__version__":
                        problems.append(f"{name}:{node.lineno} imports {node.module}.{a.name}")
    assert not problems, "\n".join(problems)


def test_every_module_has_a_docstring_and_stays_small():
    problems = []
    for name, path in modules().items():
        text = path.read_text()
        if not ast.get_docstring(ast.parse(text)) and name not in ("labnet.__main__",):
            problems.append(f"{name}: no module docstring")
        lines = text.count("\n")
        if lines > 500:
            problems.append(f"{name}: {lines} lines (at most 500)")
    assert not problems, "\n".join(problems)


def test_the_top_level_stays_small():
    entries = [p.name for p in PKG.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 12, sorted(entries)


# -- what importing a layer really loads, in a fresh interpreter -------------------------

PROBE = (
    "import json, sys\n"
    "before = set(sys.modules)\n"
    "import {module}\n"
    "print(json.dumps(sorted(set(sys.modules) - before)))\n"
)


def loaded_by(module: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def labnet_modules(loaded):
    return {m for m in loaded if m == "labnet" or m.startswith("labnet.")}


@pytest.mark.parametrize("module", ["labnet.protocol", "labnet.protocol.receiver", "labnet.protocol.messages",
                                    "labnet.protocol.console", "labnet.protocol.dialects"])  # fmt: skip
def test_the_protocol_loads_only_itself_errors_and_config(module):
    loaded = loaded_by(module)
    extra = {m for m in labnet_modules(loaded) if not m.startswith("labnet.protocol")} - {
        "labnet", "labnet.errors", "labnet.config"}  # fmt: skip
    assert not extra, extra
    assert not {"socket", "threading", "multiprocessing"} & set(loaded) - set(sys.builtin_module_names), \
        [m for m in ("socket", "threading", "multiprocessing") if m in loaded]


def test_transport_loads_no_server_or_client():
    loaded = labnet_modules(loaded_by("labnet.transport.transfer"))
    assert not {m for m in loaded if m.startswith(("labnet.server", "labnet.client", "labnet.measure",
                                                   "labnet.notebook", "labnet.cli"))}  # fmt: skip


def test_server_loads_nothing_of_the_lab_tools_or_notebooks():
    loaded = labnet_modules(loaded_by("labnet.server"))
    assert not {m for m in loaded if m.startswith(("labnet.client", "labnet.measure", "labnet.notebook",
                                                   "labnet.cli"))}  # fmt: skip


def test_the_matrix_table_loads_no_socket_code():
    loaded = loaded_by("labnet.measure.matrix_table")
    assert "socket" not in loaded
    assert labnet_modules(loaded) <= {"labnet", "labnet.errors", "labnet.config", "labnet.measure",
                                      "labnet.measure.matrix_table"}  # fmt: skip


@pytest.mark.parametrize("module", ["labnet.cli", "labnet.measure.matrix_run", "labnet.measure.launcher",
                                    "labnet.measure.stress", "labnet.server", "labnet.client"])  # fmt: skip
def test_nothing_outside_the_notebook_package_loads_widgets_or_plots_at_import(module):
    loaded = loaded_by(module)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith("labnet.notebook")]


# What module docstrings say a module must not import (the standard library side; the labnet
# side is ALLOWED above).  Checked on the module's own import statements.
MUST_NOT_IMPORT = {
    "labnet.protocol.*": {"socket", "threading", "multiprocessing"},
    "labnet.config": {"socket", "threading", "multiprocessing"},
    "labnet.transport.channel": {"threading", "multiprocessing"},
    "labnet.transport.transfer": {"threading", "multiprocessing"},
    "labnet.server.session": {"threading", "multiprocessing"},
    "labnet.server.thread_pool": {"multiprocessing"},
    "labnet.server.stats": {"socket"},
    "labnet.server.store": {"socket", "threading"},
    "labnet.client.*": {"threading", "multiprocessing"},
    "labnet.measure.matrix_table": {"socket", "threading", "multiprocessing"},
    "labnet.measure.matrix_plan": {"socket", "threading", "multiprocessing"},
    "labnet.measure.stress_report": {"socket", "threading", "multiprocessing", "tqdm", "matplotlib", "IPython"},
}


def stdlib_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("pattern", sorted(MUST_NOT_IMPORT))
def test_what_a_docstring_forbids_is_not_imported(pattern):
    mods = modules()
    chosen = [n for n in mods if n == pattern or (pattern.endswith(".*") and n.startswith(pattern[:-1]))]
    assert chosen, f"no module matches {pattern}"
    for name in chosen:
        bad = stdlib_imports(mods[name]) & MUST_NOT_IMPORT[pattern]
        assert not bad, f"{name} imports {sorted(bad)}"
        doc = " ".join((ast.get_docstring(ast.parse(mods[name].read_text())) or "").split())
        assert "must not import" in doc.lower() or "imports nothing" in doc.lower() or name.endswith(
            "__init__") or "." in pattern and pattern.endswith(".*"), f"{name}: the rule is not in its docstring"
