"""Every module imports, the package's import graph has no circle (issue 19), and every tool's
--help explains its options.

The graph is read with `ast`: every `import` / `from ... import` anywhere in a module (in a
function too, as it runs sooner or later), plus the packages an import initialises on the
way (importing `a.b.c` runs `a/b/__init__.py` first) unless they are the importer's own.
"""

from __future__ import annotations

import ast
import graphlib
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skelact"

# skelact.data's folders: which of them a module in each may import from
DATA_FOLDERS = {
    "formats": {"formats"},  # the bottom: schema, store, writer, pickles
    "sources": {"sources", "formats"},
    "prep": {"prep"},
    "media": {"media", "prep", "formats"},
}


def module_names(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every .py under the package folder `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, package: str) -> list[str]:
    """The dotted names one import statement may load (a module, or a name in it)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: climb from the importer's package
        up = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(up + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: modules of the package it imports, directly or as a package on the way}."""
    modules = module_names(root)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, package):
                parts = target.split(".")
                on_the_way = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
                deps |= {m for m in on_the_way if m in modules} - own
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (its modules, the first repeated at the end), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        return list(err.args[1])
    return None


def test_every_module_imports():
    names = module_names(PACKAGE)
    assert len(names) > 50 and "skelact.data.formats.schema" in names
    for name in names:
        importlib.import_module(name)


def test_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "skelact.data.formats.store" in graph["skelact.data.formats.store_write"]
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_data_folders_import_one_way():
    """formats is the bottom; sources and media use it, never the reverse (folder rules above)."""
    bad = []
    for name, deps in import_graph(PACKAGE).items():
        parts = name.split(".")
        if len(parts) < 4 or parts[1] != "data" or parts[2] not in DATA_FOLDERS:
            continue
        for dep in deps:
            dparts = dep.split(".")
            if dparts[:2] == ["skelact", "data"] and len(dparts) > 2:
                if dparts[2] not in DATA_FOLDERS[parts[2]]:
                    bad.append(f"{name} -> {dep}")
    assert not bad, "imports against the folder order:\n" + "\n".join(sorted(bad))


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(text)
    return tmp_path / "pkg"


@pytest.mark.parametrize(
    "files, circle",
    [
        # a function-level import closing the circle counts
        (
            {"a.py": "import pkg.b\n", "b.py": "def f():\n    from pkg import a\n"},
            {"pkg.a", "pkg.b"},
        ),
        # a relative import, and a package whose __init__ imports its importer back
        (
            {"a.py": "from .sub import x\n", "sub/__init__.py": "from pkg import a\n"},
            {"pkg.a", "pkg.sub"},
        ),
    ],
)
def test_cycle_finder_sees_planted_circles(tmp_path, files, circle):
    files = {"__init__.py": "", **files}
    graph = import_graph(_package(tmp_path, files))
    assert set(find_cycle(graph)) == circle
    files["a.py"] = "import os\n"  # the circle cut: none left
    assert find_cycle(import_graph(_package(tmp_path, files))) is None


def test_package_init_reexporting_its_modules_is_no_circle(tmp_path):
    files = {"__init__.py": "", "sub/__init__.py": "from pkg.sub.m import f\n"}
    files["sub/m.py"] = "from pkg.sub.n import g\n"
    files["sub/n.py"] = "g = 1\n"
    graph = import_graph(_package(tmp_path, files))
    assert graph["pkg.sub.m"] == {"pkg.sub.n"} and find_cycle(graph) is None


def test_every_tool_option_explains_itself():
    """Each tools/ script's --help: every option and argument has a help text, and the
    defaults are shown (show_defaults); checked in the source, as running 15 scripts would
    import torch 15 times."""
    missing, plain = [], []
    for path in sorted((PACKAGE.parent / "tools").glob("*.py")):
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        called = {getattr(c.func, "attr", getattr(c.func, "id", None)) for c in calls}
        if "ArgumentParser" not in called:
            continue
        if "show_defaults" not in called:
            plain.append(path.name)
        for c in calls:
            if getattr(c.func, "attr", None) == "add_argument" and not any(
                k.arg == "help" for k in c.keywords
            ):
                missing.append(f"{path.name}: {ast.literal_eval(c.args[0])}")
    assert not missing, f"options without a help text: {missing}"
    assert not plain, f"--help without the defaults: {plain}"
