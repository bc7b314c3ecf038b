"""Running an analysis notebook as Jupyter would, for the notebook tests."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "analysis" / "notebooks"


def execute_notebook(name: str, runs: Path, figures: Path, monkeypatch) -> list[dict]:
    """Execute ``analysis/notebooks/<name>.py`` (a jupytext script) in a Python kernel
    started in the notebooks' folder, reading ``runs`` and writing figures to ``figures``;
    returns the outputs of all its cells. Skips when jupytext or nbclient is missing."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    monkeypatch.setenv("PONDERLIFE_RUNS_DIR", str(runs))
    monkeypatch.setenv("PONDERLIFE_FIGURES_DIR", str(figures))
    client = nbclient.NotebookClient(
        notebook,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]
