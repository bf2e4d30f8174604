"""The shipped notebooks (notebook/template.ipynb, notebook/pathology.ipynb), run top to bottom
in a Jupyter kernel of this interpreter, as a user would (slow: a kernel process). The tests
that only read them, and call the contract's functions, are tests/unit/test_shipped_notebooks.py.
"""

from __future__ import annotations

import ast
import contextlib
import math
import sys
import time
from pathlib import Path

import nbformat
import pytest
from shipped_notebooks import CONFUSION_KEYS, NOTEBOOKS, read, small_dataset

TABLE2_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")

params = pytest.mark.parametrize("name", sorted(NOTEBOOKS))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A small synthetic dataset for three sites."""
    return small_dataset(tmp_path_factory.mktemp("notebook-data") / "synthetic")


# --- top to bottom in a kernel ------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> tuple[str, Path]:
    """A kernelspec for this interpreter in a private prefix, so no other python3 kernel is picked."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("kernel")
    name = "nbfed-test-python"
    install(prefix=str(prefix), kernel_name=name, display_name="nbfed tests")
    return name, prefix / "share" / "jupyter"


def execute(name: str, data_root: Path, kernel, monkeypatch) -> tuple[nbformat.NotebookNode, float]:
    from nbclient import NotebookClient

    kernel_name, jupyter_path = kernel
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("NBFED_DATA", str(data_root))
    monkeypatch.setenv("NBFED_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = read(name)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL-PYTHON', sys.executable)"))
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOKS[name].parent)}},
        # Running `%pip install` would make the test reach the package index; the
        # requirements cell is checked statically by test_requirements_are_pip_requirements.
        skip_cells_with_tag="requirements",
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    elapsed = time.perf_counter() - started
    print(f"{name}.ipynb executed in {elapsed:.1f} s")
    return nb, elapsed


def results(nb: nbformat.NotebookNode) -> list[dict]:
    """Dicts displayed as cell results (the last expression of a cell)."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "execute_result" and "text/plain" in output.data:
                with contextlib.suppress(ValueError, SyntaxError):
                    value = ast.literal_eval(output.data["text/plain"])
                    if isinstance(value, dict):
                        found.append(value)
    return found


def stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output.output_type == "stream"
    )


def check_evaluation(metrics: dict) -> None:
    assert {"loss", "accuracy", *CONFUSION_KEYS} <= set(metrics)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert math.isfinite(metrics["loss"]) and metrics["loss"] >= 0
    total = sum(metrics[k] for k in CONFUSION_KEYS)
    assert total > 0 and metrics["accuracy"] == pytest.approx((metrics["tp"] + metrics["tn"]) / total)


@pytest.mark.slow
@params
def test_notebook_runs_top_to_bottom(name, data_root, kernel, monkeypatch):
    nb, _ = execute(name, data_root, kernel, monkeypatch)
    text = stdout(nb)
    assert f"KERNEL-PYTHON {sys.executable}" in text, "the kernel runs this interpreter"
    assert "epoch 1/1" in text, "NBFED_QUICK=1 trains one epoch"
    evaluations = [r for r in results(nb) if set(CONFUSION_KEYS) <= set(r)]
    assert len(evaluations) == 1
    check_evaluation(evaluations[0])
    if name == "pathology":
        assert "train after undersampling" in text
        assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])), "patch plot"
        (table2,) = [r for r in results(nb) if set(TABLE2_KEYS) <= set(r)]
        for key in TABLE2_KEYS:
            assert table2[key] is None or 0.0 <= table2[key] <= 1.0, key
        assert table2["accuracy"] == pytest.approx(evaluations[0]["accuracy"])
        assert table2["sensitivity"] is not None and table2["specificity"] is not None
