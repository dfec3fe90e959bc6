"""The package graph has no cycles: no two packages of mmseg_robust import each other.

Read from the source with ``ast`` (nothing is imported), so the test also sees imports inside
functions. A package is a folder of ``mmseg_robust`` (the stage folders ``planners``,
``preprocessing`` and ``inference`` install as ``mmseg_robust.<stage>``); a module directly in
``mmseg_robust/`` is its own node.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE_FOLDERS = ("planners", "preprocessing", "inference")
PACKAGE = "mmseg_robust"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] in STAGE_FOLDERS:
        parts.insert(0, PACKAGE)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _node(module: str) -> str | None:
    """The graph node of a module: ``mmseg_robust.<package or core module>``, or None outside."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return ".".join(parts[:2])


def _imported_modules(path: Path, module: str) -> set[str]:
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # ``from mmseg_robust import training`` names a package, not an attribute.
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, dict[str, set[str]]]:
    """{importing node: {imported node: {files that import it}}} over the installed sources."""
    sources = [p for p in (REPO / PACKAGE).rglob("*.py")]
    for stage in STAGE_FOLDERS:
        sources += list((REPO / stage).rglob("*.py"))
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    known = {_node(_module_name(p)) for p in sources}
    for path in sources:
        module = _module_name(path)
        source_node = _node(module)
        for imported in _imported_modules(path, module):
            target = _node(imported)
            if target in known and target != source_node:
                graph[source_node][target].add(str(path.relative_to(REPO)))
    return graph


def test_graph_sees_known_edges() -> None:
    graph = package_graph()
    # A reader that found nothing would pass the cycle test vacuously.
    assert "mmseg_robust.data" in graph["mmseg_robust.planners"]
    assert "mmseg_robust.training" in graph["mmseg_robust.cli"]


def test_no_two_packages_import_each_other() -> None:
    graph = package_graph()
    cycles = []
    for source, targets in graph.items():
        for target, files in targets.items():
            if source < target and source in graph.get(target, {}):
                back = sorted(graph[target][source])
                cycles.append(f"{source} <-> {target}: {sorted(files)} / {back}")
    assert not cycles, "package cycles:\n" + "\n".join(cycles)
