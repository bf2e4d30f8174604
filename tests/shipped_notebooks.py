"""The shipped notebooks (notebook/template.ipynb, notebook/pathology.ipynb), for the tests
that read them (tests/unit/test_shipped_notebooks.py) and run them in a kernel
(tests/integration/test_notebooks.py): where they are, how to read their tagged cells, and a
small dataset for three sites."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {name: ROOT / "notebook" / f"{name}.ipynb" for name in ("template", "pathology")}
CONFUSION_KEYS = ("tp", "fp", "tn", "fn")


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS[name], as_version=4)


def tagged(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(tag, source) of every tagged code cell, in notebook order."""
    return [
        (cell.metadata["tags"][0], cell.source)
        for cell in nb.cells
        if cell.cell_type == "code" and cell.metadata.get("tags")
    ]


def write_tiny_dataset(out: Path, size: int = 32) -> None:
    """Random RGB patches in the sites' layout; tumour ones darker, so there is a signal."""
    rng = np.random.default_rng(0)
    counts = {"train": {"normal": 24, "tumor": 8}, "test": {"normal": 8, "tumor": 4}}
    for site in ("site-a", "site-b", "site-c"):
        for split, per_class in counts.items():
            for cls, n in per_class.items():
                folder = out / site / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                base = 90 if cls == "tumor" else 170
                for i in range(n):
                    pixels = np.clip(rng.normal(base, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{cls}_{i:03d}.png")


def small_dataset(out: Path) -> Path:
    """A small synthetic dataset for three sites in `out`: nbfed.synth when available, else random patches."""
    try:
        from nbfed.synth import generate
    except ImportError:
        write_tiny_dataset(out)
    else:
        generate(out, scale=0.01, size=32, seed=0)
    return out
