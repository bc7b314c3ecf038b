"""Dependencies point one way: ponderlife (torch + numpy) <- strategies <- experiments."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE_ALLOWED = {"torch", "numpy", "ponderlife"} | set(sys.stdlib_module_names)


def imported_roots(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_core_imports_only_torch_numpy_and_the_standard_library():
    outside = {k: v for k, v in imported_roots("ponderlife").items() if k not in CORE_ALLOWED}
    assert outside == {}


def test_strategies_never_import_experiments_or_sacred():
    roots = imported_roots("strategies")
    assert "experiments" not in roots
    assert "sacred" not in roots
