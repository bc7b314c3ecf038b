"""Dependencies point one way: ponderlife (torch + numpy) <- strategies <- experiments."""

import ast
import os
import subprocess
import sys
import textwrap
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


def test_the_installed_packages_import_and_run_from_outside_the_repository(tmp_path):
    """Ray workers and users' scripts import experiments and analysis from any directory
    once the project is installed, not only from the repository root."""
    script = textwrap.dedent(
        """
        import runpy, sys
        import ponderlife, strategies, experiments.stream, experiments.sweep
        import analysis, analysis.report
        assert not any(p and Path(p).resolve() == ROOT for p in sys.path), sys.path
        sys.argv = ["experiments.parity", "print_config"]
        runpy.run_module("experiments.parity", run_name="__main__", alter_sys=True)
        """
    ).replace("ROOT", f"Path({str(ROOT)!r})")
    # One interpreter for both checks (`-m` is runpy.run_module with alter_sys): starting
    # one that imports torch costs seconds.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path\n" + script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch_size = " in done.stdout  # parity's config, printed by Sacred
    assert list(tmp_path.iterdir()) == []  # print_config writes no run folder
