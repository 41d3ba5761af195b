"""The package's layout holds to docs/architecture.md: the folders' import rules (read from the
document's table), no import circle between files or folders, and nothing importing the
package's face. Imports are read from the source with ``ast``; nothing is imported or run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "netspec"
DOCUMENT = ROOT / "docs" / "architecture.md"
FACE = "__init__"  # the room of netspec/__init__.py and __main__.py


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The netspec modules ``path`` imports, anywhere in it (functions and TYPE_CHECKING
    blocks included: they are dependencies of the design all the same)."""
    me = module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (node.module or "").split(".") if node.module else []
            if node.level:
                base = package[: len(package) - node.level + 1] + base
            base_name = ".".join(part for part in base if part)
            names = [base_name] + [f"{base_name}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name != "netspec" and not name.startswith("netspec."):
                continue
            while name and name not in modules:  # a name from a module, not a module
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def import_graph() -> nx.DiGraph:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in files}
    graph = nx.DiGraph()
    for path in files:
        graph.add_node(module_name(path))
        graph.add_edges_from((module_name(path), dep) for dep in module_imports(path, modules))
    return graph


def room(module: str) -> str:
    """A module's folder (first-level package), or the face for top-level modules."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and not (PACKAGE / parts[1]).is_dir()):
        return FACE
    return parts[1]


def documented_rules(text: str) -> dict[str, set[str]]:
    """The "folder | may import" table of docs/architecture.md."""
    rules = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\|\s*([a-z_]+)\s*\|\s*([^|]*)\|", line.strip())
        if match and match.group(1) != "folder":
            allowed = match.group(2).strip()
            rules[match.group(1)] = (set() if allowed.startswith("(nothing)")
                                     else {part.strip() for part in allowed.split(",")})
    return rules


def violations(graph: nx.DiGraph, rules: dict[str, set[str]]) -> list[str]:
    """Every import the rules forbid, every circle, and every import of the package's face."""
    found = []
    for module, dep in sorted(graph.edges):
        source, target = room(module), room(dep)
        if target == FACE and source != FACE:
            found.append(f"{module} imports the package's face ({dep})")
        elif source not in (FACE, target) and target not in rules.get(source, set()):
            found.append(f"{module} ({source}/) imports {dep} ({target}/), which "
                         f"docs/architecture.md does not allow")
    for group in nx.strongly_connected_components(graph):
        if len(group) > 1:
            found.append("file circle: " + " <-> ".join(sorted(group)))
    rooms = nx.DiGraph((room(a), room(b)) for a, b in graph.edges if room(a) != room(b))
    for circle in nx.simple_cycles(rooms):
        found.append("folder circle: " + " -> ".join([*circle, circle[0]]))
    return found


def test_every_folder_is_in_the_document_and_says_what_it_is() -> None:
    rules = documented_rules(DOCUMENT.read_text(encoding="utf-8"))
    folders = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert folders == set(rules), "docs/architecture.md's table and netspec/'s folders differ"
    for name in folders:
        first = (PACKAGE / name / "__init__.py").read_text(encoding="utf-8").lstrip()
        assert first.startswith('"""'), f"netspec/{name}/__init__.py says nothing of itself"
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []


def test_the_imports_keep_the_documented_rules() -> None:
    rules = documented_rules(DOCUMENT.read_text(encoding="utf-8"))
    assert violations(import_graph(), rules) == []


def test_a_forbidden_import_is_caught() -> None:
    """Negative control: the same check on the real graph with one import added that runs
    back up the flow (an op reaching the compiler), one that closes a circle, and one of the
    package's face."""
    rules = documented_rules(DOCUMENT.read_text(encoding="utf-8"))
    graph = import_graph()
    graph.add_edge("netspec.ops.core", "netspec.plan.compiler")
    graph.add_edge("netspec.data.idx", "netspec")
    found = violations(graph, rules)
    assert any("netspec.ops.core (ops/) imports netspec.plan.compiler (plan/)" in f
               for f in found)
    assert any(f.startswith("folder circle:") and "ops" in f and "plan" in f for f in found)
    assert any(f.startswith("file circle:") and "netspec.ops.core" in f for f in found)
    assert any("netspec.data.idx imports the package's face" in f for f in found)
