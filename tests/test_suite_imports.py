"""No test module imports another: what tests share lives in ``tests/helpers.py``.

Read with ``ast`` (nothing is imported), imports inside functions included, and so are the scripts
that tests hand to a subprocess as a string (``python -c SCRIPT``).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_test_module(name: str) -> bool:
    return name.split(".")[-1].startswith("test_")


def _test_module_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if node.module and _is_test_module(node.module):
                found.append(module)
            else:  # ``from . import test_gmd``, ``from tests import test_gmd``
                found += [f"{module}.{alias.name}".replace("..", ".") for alias in node.names
                          if _is_test_module(alias.name)]
    return found


def _embedded_scripts(tree: ast.AST) -> list[ast.AST]:
    """String constants that are Python code with an import (subprocess scripts)."""
    scripts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            try:
                scripts.append(ast.parse(node.value))
            except SyntaxError:
                continue
    return scripts


def imports_of_test_modules(paths: list[Path]) -> list[str]:
    """``<file>: <imported test module>`` for every import of a test module in ``paths``."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for code in [tree, *_embedded_scripts(tree)]:
            found += [f"{path.name}: {module}" for module in _test_module_imports(code)]
    return found


def test_no_test_module_imports_another() -> None:
    sources = sorted(TESTS.glob("*.py"))
    assert any(path.name == "helpers.py" for path in sources)
    assert imports_of_test_modules(sources) == []


def test_a_planted_import_of_a_test_module_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "test_planted.py"
    # Spelled TEST_ here, so that this module's own strings import no test module.
    planted.write_text((
        "import TEST_gmd\n"
        "from .TEST_gmd import tiny_ds\n"
        "from tests.TEST_networks import make_ds\n"
        "from . import TEST_cggm, helpers\n"
        "from .helpers import tiny_batch\n"
        "def f():\n"
        "    from TEST_fusion import plan\n"
        "SCRIPT = '''\nimport sys\nfrom TEST_gmd import TASK\n'''\n").replace("TEST_", "test_"))
    assert sorted(imports_of_test_modules([planted])) == sorted([
        "test_planted.py: test_gmd", "test_planted.py: .test_gmd", "test_planted.py: tests.test_networks",
        "test_planted.py: .test_cggm", "test_planted.py: test_fusion", "test_planted.py: test_gmd"])
