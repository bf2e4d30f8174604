"""Build small notebooks for tests: a valid minimal one, and variants with one defect each."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import nbformat

MINIMAL = {
    "requirements": "%pip install -q torch>=2.4\n",
    "config": 'CONFIG = {"num_rounds": 2, "local_epochs": 1, "batch_size": 16, "lr": 0.01, "seed": 0}\n',
    "helpers": "import torch\nfrom torch import nn\n",
    "data": (
        "def load_data(data_dir: str, config: dict):\n"
        "    g = torch.Generator().manual_seed(len(data_dir))\n"
        "    x = torch.randn(64, 4, generator=g)\n"
        "    y = (x[:, 0] > 0).long()\n"
        "    ds = torch.utils.data.TensorDataset(x, y)\n"
        "    return ds, ds\n"
    ),
    "model": "def build_model(config: dict) -> nn.Module:\n    return nn.Linear(4, 2)\n",
    "train": (
        "def train(model, dataset, config: dict, device: str) -> dict:\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=config['lr'])\n"
        "    loss = torch.tensor(0.0)\n"
        "    for x, y in torch.utils.data.DataLoader(dataset, batch_size=config['batch_size']):\n"
        "        opt.zero_grad()\n"
        "        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))\n"
        "        loss.backward()\n"
        "        opt.step()\n"
        "    return {'loss': float(loss)}\n"
    ),
    "evaluate": (
        "def evaluate(model, dataset, config: dict, device: str) -> dict:\n"
        "    x, y = dataset.tensors\n"
        "    with torch.no_grad():\n"
        "        pred = model(x.to(device)).argmax(1).cpu()\n"
        "    tp = int(((pred == 1) & (y == 1)).sum()); tn = int(((pred == 0) & (y == 0)).sum())\n"
        "    fp = int(((pred == 1) & (y == 0)).sum()); fn = int(((pred == 0) & (y == 1)).sum())\n"
        "    return {'accuracy': (tp + tn) / len(y), 'tp': tp, 'fp': fp, 'tn': tn, 'fn': fn}\n"
    ),
}


def write_notebook(path: Path, cells: list[tuple[str | None, str]]) -> Path:
    """Write a notebook whose code cells are (tag or None, source), after a markdown title."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# test notebook", id="md-0"))
    for i, (tag, source) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, id=f"cell-{i}")
        if tag:
            cell.metadata["tags"] = [tag]
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def minimal_cells(**replace: str | None) -> list[tuple[str | None, str]]:
    """MINIMAL's cells in order; `replace` swaps (or with None drops) a tag's source."""
    cells = []
    for tag, source in MINIMAL.items():
        if tag in replace:
            if replace[tag] is None:
                continue
            source = replace[tag]
        cells.append((tag, source))
    return cells


@contextmanager
def generated_module(root: Path, module: str) -> Iterator[ModuleType]:
    """A module (server_app, client_app, ...) of the Flower app generated from the minimal notebook."""
    from nbfed.convert import convert

    app = convert(write_notebook(root / "study.ipynb", minimal_cells()), root / "app")
    sys.path.insert(0, str(app.root))
    try:
        yield importlib.import_module(f"{app.package}.{module}")
    finally:
        sys.path.remove(str(app.root))
