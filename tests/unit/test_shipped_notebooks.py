"""The shipped notebooks (notebook/template.ipynb, notebook/pathology.ipynb), read: format,
tags, the tagged cells against the notebook contract (docs/architecture.md), and the
contract's functions called on a tiny dataset with only the tagged cells loaded, as the
converter exports them. tests/integration/test_notebooks.py runs each notebook top to bottom
in a Jupyter kernel, as a user would.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import io
import math
import shlex
from pathlib import Path

import nbformat
import pytest
from shipped_notebooks import CONFUSION_KEYS, NOTEBOOKS, read, small_dataset, tagged

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
PIP_PREFIX = "%pip install"

params = pytest.mark.parametrize("name", sorted(NOTEBOOKS))


# --- helpers -----------------------------------------------------------------------------


def requirement_specs(source: str) -> list[str]:
    specs: list[str] = []
    for line in source.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert line.startswith(PIP_PREFIX), f"requirements line {line!r} is neither a comment nor '{PIP_PREFIX} ...'"
        specs += shlex.split(line[len(PIP_PREFIX) :], comments=True)
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


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A small synthetic dataset for three sites."""
    return small_dataset(tmp_path_factory.mktemp("notebook-data") / "synthetic")


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
