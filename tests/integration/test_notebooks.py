"""The shipped notebooks (notebook/template.ipynb, notebook/pathology.ipynb).

Fast tests read the notebooks: format, tags, the tagged cells against the notebook
contract (docs/architecture.md), and the contract's functions called on a tiny dataset
with only the tagged cells loaded, as the converter exports them. Slow tests run each
notebook top to bottom in a Jupyter kernel of this interpreter, as a user would.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import io
import math
import shlex
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = {name: ROOT / "notebook" / f"{name}.ipynb" for name in ("template", "pathology")}

# The notebook contract (docs/architecture.md), written out here so that the test states the public interface.
CONTRACT_TAGS = {"requirements", "config", "helpers", "data", "model", "train", "evaluate", "strategy"}
REQUIRED_TAGS = {"config", "data", "model", "train", "evaluate"}
SIGNATURES = {
    "load_data": ("data_dir", "config"),
    "build_model": ("config",),
    "train": ("model", "dataset", "config", "device"),
    "evaluate": ("model", "dataset", "config", "device"),
    "build_strategy": ("config",),
}
CONFUSION_KEYS = ("tp", "fp", "tn", "fn")
TABLE2_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")
PIP_PREFIX = "%pip install"

params = pytest.mark.parametrize("name", sorted(NOTEBOOKS))


# --- helpers -----------------------------------------------------------------------------


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS[name], as_version=4)


def tagged(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(tag, source) of every tagged code cell, in notebook order."""
    return [
        (cell.metadata["tags"][0], cell.source)
        for cell in nb.cells
        if cell.cell_type == "code" and cell.metadata.get("tags")
    ]


def requirement_specs(source: str) -> list[str]:
    specs: list[str] = []
    for line in source.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert line.startswith(PIP_PREFIX), f"requirements line {line!r} is neither a comment nor '{PIP_PREFIX} ...'"
        specs += shlex.split(line[len(PIP_PREFIX):], comments=True)
    return specs


def exported_module(name: str) -> dict:
    """The tagged code cells run alone, in order, in one namespace: what the app imports."""
    namespace: dict = {"__name__": f"{name}_task"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for tag, source in tagged(read(name)):
            if tag != "requirements":
                exec(compile(source, f"{name}.ipynb [{tag}]", "exec"), namespace)
    assert printed.getvalue() == "", "tagged cells must only define things, not print at import"
    return namespace


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


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A small synthetic dataset for three sites: nbfed.synth when available, else random patches."""
    out = tmp_path_factory.mktemp("notebook-data") / "synthetic"
    try:
        from nbfed.synth import generate
    except ImportError:
        write_tiny_dataset(out)
    else:
        generate(out, scale=0.01, size=32, seed=0)
    return out


def class_labels(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


# --- the notebooks as files ----------------------------------------------------------------


@params
def test_notebook_is_stored_clean(name):
    nb = read(name)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    ids = [cell.id for cell in nb.cells]
    assert ids == [f"cell-{i:02d}" for i in range(1, len(nb.cells) + 1)], "cell ids are stable: cell-01, cell-02, ..."
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{cell.id}: store with outputs cleared"


@params
def test_tags_are_the_contracts(name):
    nb = read(name)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        assert set(tags) <= CONTRACT_TAGS, f"{cell.id}: tags {tags} outside the contract"
        assert len(tags) <= 1, f"{cell.id}: one contract tag per cell"
        if tags:
            assert cell.cell_type == "code", f"{cell.id}: only code cells carry tags"
    used = [tag for tag, _ in tagged(nb)]
    assert len(used) == len(set(used)), "one cell per tag"
    assert REQUIRED_TAGS <= set(used)
    assert {"requirements", "helpers"} <= set(used)
    assert ("strategy" in used) == (name == "pathology")
    assert used[0] == "requirements" and used[1] == "config"
    # guidance: a markdown cell right above every tagged cell
    for index, cell in enumerate(nb.cells):
        if cell.metadata.get("tags"):
            assert nb.cells[index - 1].cell_type == "markdown", f"{cell.id}: explain it in a markdown cell above"


@params
def test_tagged_cells_compile_without_magics(name):
    for tag, source in tagged(read(name)):
        if tag == "requirements":
            continue
        for line in source.splitlines():
            assert not line.lstrip().startswith(("%", "!")), f"[{tag}] magic or shell line: {line!r}"
        compile(source, f"{name}.ipynb [{tag}]", "exec")


@params
def test_requirements_are_pip_requirements(name):
    from packaging.requirements import Requirement

    (source,) = [s for tag, s in tagged(read(name)) if tag == "requirements"]
    names = {Requirement(spec).name.lower() for spec in requirement_specs(source)}
    assert names == {"torch", "numpy", "pillow"}, "list what the tagged cells import; the toolkit provides flwr"
    assert str(Requirement([s for s in requirement_specs(source) if s.startswith("torch")][0]).specifier) == ">=2.4"


@params
def test_config_is_a_flat_literal_run_config(name):
    (source,) = [s for tag, s in tagged(read(name)) if tag == "config"]
    tree = ast.parse(source)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign)
    assert [t.id for t in tree.body[0].targets] == ["CONFIG"]
    config = ast.literal_eval(tree.body[0].value)
    assert isinstance(config["num_rounds"], int) and config["num_rounds"] >= 1
    for key, value in config.items():
        assert isinstance(value, (bool, int, float, str)), f"CONFIG[{key!r}] must be a Flower run-config scalar"
    assert {"local_epochs", "batch_size", "lr", "seed"} <= set(config)
    if name == "pathology":
        assert config["model"] == "cnn" and config["undersample"] is True and config["pretrained"] is False


@params
def test_nbfed_check_accepts_the_notebook(name):
    from nbfed.check import check
    from nbfed.notebook import read_notebook

    assert check(read_notebook(NOTEBOOKS[name])) == []


# --- the exported functions -------------------------------------------------------------------


@params
def test_tagged_cells_alone_define_the_contract(name):
    module = exported_module(name)
    for function, params_ in SIGNATURES.items():
        if function == "build_strategy" and name == "template":
            assert function not in module
            continue
        assert tuple(inspect.signature(module[function]).parameters) == params_, function
    assert isinstance(module["CONFIG"], dict)


@params
def test_functions_train_and_evaluate_a_site(name, data_root):
    import torch

    module = exported_module(name)
    config = dict(module["CONFIG"], local_epochs=1)
    train_set, test_set = module["load_data"](str(data_root / "site-a"), config)
    assert len(train_set) > 0 and len(test_set) > 0
    image, label = train_set[0]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 32, 32) and label in (0, 1)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0

    model = module["build_model"](config)
    assert isinstance(model, torch.nn.Module)
    with contextlib.redirect_stdout(io.StringIO()):
        trained = module["train"](model, train_set, config, "cpu")
    assert math.isfinite(trained["loss"]) and all(isinstance(v, (int, float)) for v in trained.values())

    metrics = module["evaluate"](model, test_set, config, "cpu")
    assert {"loss", "accuracy", *CONFUSION_KEYS} <= set(metrics)
    assert all(isinstance(metrics[k], int) and metrics[k] >= 0 for k in CONFUSION_KEYS)
    assert sum(metrics[k] for k in CONFUSION_KEYS) == len(test_set)
    labels = class_labels(test_set)
    assert metrics["tp"] + metrics["fn"] == labels.count(1)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])

    # the same architecture and initial weights from the same config, at every site
    first, second = module["build_model"](config).state_dict(), module["build_model"](config).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), "build_model is seeded by CONFIG['seed']"


@params
def test_compact_cnn_takes_any_patch_size(name):
    import torch

    module = exported_module(name)
    model = module["build_model"](module["CONFIG"]).eval()
    with torch.no_grad():
        for size in (16, 32, 48, 224):
            assert model(torch.rand(2, 3, size, size)).shape == (2, 2)


def test_pathology_undersamples_training_split_only(data_root):
    module = exported_module("pathology")
    config = dict(module["CONFIG"])
    site = str(data_root / "site-a")
    full_train, full_test = module["load_data"](site, dict(config, undersample=False))
    train_set, test_set = module["load_data"](site, config)
    before, after = class_labels(full_train), class_labels(train_set)
    assert before.count(0) != before.count(1), "the test data should be unbalanced"
    assert after.count(0) == after.count(1) == min(before.count(0), before.count(1))
    assert class_labels(test_set) == class_labels(full_test), "the test split is never resampled"
    again, _ = module["load_data"](site, config)
    assert again.indices == train_set.indices, "undersampling is seeded"
    other, _ = module["load_data"](site, dict(config, seed=1))
    assert other.indices != train_set.indices


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_pathology_vgg16_without_torchvision_says_what_to_do():
    module = exported_module("pathology")
    with pytest.raises(ImportError, match="requirements cell") as err:
        module["build_model"](dict(module["CONFIG"], model="vgg16"))
    assert "224" in str(err.value)
    with pytest.raises(ValueError, match="cnn"):
        module["build_model"](dict(module["CONFIG"], model="resnet"))


def test_pathology_strategy_is_fedavg_over_min_sites():
    pytest.importorskip("flwr")
    from flwr.serverapp.strategy import FedAvg

    module = exported_module("pathology")
    strategy = module["build_strategy"](dict(module["CONFIG"], min_sites=3))
    assert isinstance(strategy, FedAvg)
    assert strategy.fraction_train == strategy.fraction_evaluate == 1.0
    assert strategy.min_available_nodes == strategy.min_train_nodes == strategy.min_evaluate_nodes == 3
    assert module["build_strategy"](module["CONFIG"]).min_train_nodes == module["CONFIG"]["min_sites"]


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
