"""The package graph follows the layer table (:data:`ALLOWED_IMPORTS`), has no cycles, and no
package imports another's private name.

Read from the source with ``ast`` (nothing is imported), so the test also sees imports inside
functions. A package is a folder of ``mmseg_robust`` (the stage folders ``planners``,
``preprocessing`` and ``inference`` install as ``mmseg_robust.<stage>``); a module directly in
``mmseg_robust/`` is its own node.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

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


#: Which packages (and top-level modules) each may import; anything else fails the test. The
#: layers, bottom up:
#:
#: 1. the foundation: errors, atomic writes, artifacts, vocabularies (``choices``), data folders
#:    (``paths``), devices, precision, random streams, the Dice, the strategy settings;
#: 2. the task-agnostic core, ``multimodal``: the model/task protocol, row assembly, fusions,
#:    modality subsets and the ``--subsets`` grammar;
#: 3. ``strategies`` (the core and the foundation only);
#: 4. the training ``engine``: epochs, steps, checkpoints, resume rules, run folder and lock;
#: 5. the segmentation stages (data, planners, preprocessing, networks, runs, training, inference,
#:    evaluation) and the sentiment application (the core, the engine and the foundation only);
#: 6. the command line.
ALLOWED_IMPORTS: dict[str, set[str]] = {
    "__main__": {"cli"},
    "artifacts": {"atomic", "errors"},
    "atomic": {"errors"},
    "choices": {"errors"},
    "devices": {"errors"},
    "dice": set(),
    "errors": set(),
    "paths": {"errors"},
    "precision": {"choices", "errors"},
    "random_streams": set(),
    "strategy_config": {"choices", "errors"},
    "multimodal": {"choices", "errors"},
    "strategies": {"choices", "errors", "multimodal", "precision", "random_streams", "strategy_config"},
    "engine": {"atomic", "choices", "errors", "multimodal", "precision", "strategies", "strategy_config"},
    "data": {"artifacts", "atomic", "choices", "errors", "multimodal"},
    "planners": {"artifacts", "choices", "data", "errors"},
    "preprocessing": {"artifacts", "atomic", "data", "errors", "planners"},
    "plan_and_preprocess": {"data", "errors", "paths", "planners", "preprocessing"},
    "networks": {"choices", "data", "errors", "multimodal"},
    "losses": set(),
    "segmentation_task": {"data", "dice", "losses"},
    "visualization": {"atomic", "data"},
    "runs": {"mmseg_robust", "artifacts", "atomic", "choices", "data", "engine", "errors", "paths", "planners",
             "strategy_config"},
    "training": {"atomic", "data", "devices", "dice", "engine", "errors", "multimodal", "networks", "planners",
                 "precision", "preprocessing", "runs", "segmentation_task"},
    "inference": {"atomic", "data", "devices", "engine", "errors", "networks", "planners", "precision",
                  "preprocessing", "runs", "visualization"},
    "evaluation": {"artifacts", "atomic", "data", "dice", "errors", "inference", "paths", "runs"},
    "run_statistics": set(),
    "sentiment": {"mmseg_robust", "artifacts", "atomic", "choices", "devices", "engine", "errors", "multimodal",
                  "paths", "precision", "strategies", "strategy_config"},
    "cli": {"mmseg_robust", "choices", "data", "engine", "errors", "evaluation", "inference", "paths",
            "plan_and_preprocess", "planners", "runs", "sentiment", "training", "visualization"},
}


def _short(node: str) -> str:
    return node.removeprefix(f"{PACKAGE}.") if node != PACKAGE else PACKAGE


def forbidden_imports(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """Every edge the table does not allow, with the files that make it (a package missing from
    the table may import nothing)."""
    found = []
    for source, targets in graph.items():
        allowed = ALLOWED_IMPORTS.get(_short(source), set())
        for target, files in targets.items():
            if _short(target) not in allowed:
                found.append(f"{_short(source)} -> {_short(target)}: {sorted(files)}")
    return found


def private_imports(sources: list[Path], root: Path = REPO) -> list[str]:
    """``from <another package> import _name``: a private name used across packages."""
    found = []
    for path in sources:
        module = _module_name(path) if root == REPO else path.stem
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                target = _node(node.module)
                if target is None or target == _node(module):
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.name}: from {node.module} import {alias.name}")
    return found


def _sources() -> list[Path]:
    sources = list((REPO / PACKAGE).rglob("*.py"))
    for stage in STAGE_FOLDERS:
        sources += list((REPO / stage).rglob("*.py"))
    return sources


def test_every_import_follows_the_layer_table() -> None:
    forbidden = forbidden_imports(package_graph())
    assert not forbidden, "imports the layer table does not allow:\n" + "\n".join(forbidden)


def test_a_planted_forbidden_import_is_caught() -> None:
    graph = package_graph()
    planted = {source: dict(targets) for source, targets in graph.items()}
    planted[f"{PACKAGE}.strategies"][f"{PACKAGE}.networks"] = {"mmseg_robust/strategies/plain.py"}
    planted.setdefault(f"{PACKAGE}.multimodal", {})[f"{PACKAGE}.training"] = {"mmseg_robust/multimodal/fusion.py"}
    planted[f"{PACKAGE}.sentiment"][f"{PACKAGE}.networks"] = {"mmseg_robust/sentiment/model.py"}
    assert sorted(forbidden_imports(planted)) == [
        "multimodal -> training: ['mmseg_robust/multimodal/fusion.py']",
        "sentiment -> networks: ['mmseg_robust/sentiment/model.py']",
        "strategies -> networks: ['mmseg_robust/strategies/plain.py']"]


def test_the_layer_table_has_no_cycle() -> None:
    # A graph that keeps to an acyclic table is acyclic, however many packages a cycle would pass
    # through; the pairwise test above only sees cycles of two.
    order = list(TopologicalSorter(ALLOWED_IMPORTS).static_order())
    assert set(order) >= set(ALLOWED_IMPORTS)
    planted = {**ALLOWED_IMPORTS, "multimodal": ALLOWED_IMPORTS["multimodal"] | {"engine"}}
    with pytest.raises(CycleError):
        list(TopologicalSorter(planted).static_order())


def test_no_package_imports_a_private_name_of_another(tmp_path) -> None:
    assert private_imports(_sources()) == []
    planted = tmp_path / "planted.py"
    planted.write_text("from mmseg_robust.networks.ds_unet import _hidden\nfrom mmseg_robust.errors import __all__\n")
    assert private_imports([planted], root=tmp_path) == [
        "planted.py: from mmseg_robust.networks.ds_unet import _hidden"]
