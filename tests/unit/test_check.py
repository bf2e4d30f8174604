"""Every contract violation is reported at once, naming the cell and what to write instead."""

from pathlib import Path

import pytest
from notebooks import MINIMAL, minimal_cells, write_notebook

from nbfed.check import check
from nbfed.notebook import NotebookError, read_notebook


def problems(tmp_path: Path, cells) -> list[str]:
    return [str(v) for v in check(read_notebook(write_notebook(tmp_path / "nb.ipynb", cells)))]


def test_minimal_notebook_is_clean(tmp_path):
    assert problems(tmp_path, minimal_cells()) == []


def test_missing_required_tag_is_named(tmp_path):
    [msg] = problems(tmp_path, minimal_cells(model=None))
    assert msg.startswith("notebook: no code cell is tagged 'model'")
    assert "def build_model(config: dict) -> torch.nn.Module" in msg


def test_missing_required_function_names_the_cell(tmp_path):
    [msg] = problems(tmp_path, minimal_cells(train="def fit(model, dataset, config, device):\n    return {}\n"))
    assert msg.startswith("cell 7 [train]: the 'train' cells define no function 'train'")
    assert "def train(model, dataset, config: dict, device: str)" in msg


def test_function_in_the_wrong_cell_says_where_it_is(tmp_path):
    helpers = MINIMAL["helpers"] + MINIMAL["model"]
    [msg] = problems(tmp_path, minimal_cells(helpers=helpers, model="MODEL_NOTE = 1\n"))
    assert "cell 6 [model]" in msg and "defined in cell 4 [helpers]; move it" in msg


def test_wrong_signature(tmp_path):
    [msg] = problems(tmp_path, minimal_cells(model="def build_model():\n    return None\n"))
    assert msg.startswith("cell 6 [model]: line 1: 'build_model()' takes 0 argument(s); the toolkit passes 1")


def test_signature_with_extra_defaults_is_accepted(tmp_path):
    assert problems(tmp_path, minimal_cells(model="def build_model(config, width=8):\n    return None\n")) == []


def test_non_literal_config(tmp_path):
    first, second = problems(tmp_path, minimal_cells(config="EPOCHS = 3\nCONFIG = {'num_rounds': EPOCHS}\n"))
    assert first.startswith("cell 3 [config]: line 1: the 'config' cell holds more than the CONFIG assignment")
    assert second.startswith("cell 3 [config]: CONFIG is not a literal: 'EPOCHS' at line 2 is computed")
    [msg] = problems(tmp_path, minimal_cells(config="CONFIG = {'num_rounds': 2, 'lr': 10 ** -3 * EPOCHS}\n"))
    assert (
        msg.startswith("cell 3 [config]: CONFIG is not a literal: '10 ** (-3) * EPOCHS' at line 1")
        and "literal values only" in msg
    )


def test_config_values_must_fit_flower_run_config(tmp_path):
    msgs = problems(
        tmp_path,
        minimal_cells(config="CONFIG = {'num_rounds': 0, 'sizes': [1, 2], 'opt': {'beta': None}, 'nbfed': 1}\n"),
    )
    text = "\n".join(msgs)
    assert "CONFIG['num_rounds'] must be a positive int (found 0)" in text
    assert "CONFIG['sizes'] is a list" in text and "comma-separated string" in text
    assert "CONFIG['opt']['beta'] is a NoneType" in text
    assert "the key 'nbfed' is reserved" in text
    assert all(m.startswith("cell 3 [config]") for m in msgs)


def test_syntax_error_gives_the_line_inside_the_cell(tmp_path):
    [msg] = problems(tmp_path, minimal_cells(data="def load_data(data_dir, config):\n    return (\n\nx = 1\n"))
    assert msg.startswith("cell 5 [data]: syntax error at line 2")


def test_magics_and_shell_lines_are_rejected(tmp_path):
    msgs = problems(
        tmp_path, minimal_cells(helpers="%matplotlib inline\nimport torch\n!nvidia-smi\nfrom torch import nn\n")
    )
    assert msgs[0].startswith("cell 4 [helpers]: line 1 is an IPython magic ('%matplotlib inline')")
    assert msgs[1].startswith("cell 4 [helpers]: line 3 is a shell line ('!nvidia-smi')")


def test_pip_magic_is_fine_in_requirements_but_flwr_is_ours(tmp_path):
    assert problems(tmp_path, minimal_cells(requirements="%pip install -q numpy torch\n")) == []
    flwr, bad = problems(tmp_path, minimal_cells(requirements="flwr==1.20\nnot a requirement!\n"))
    assert flwr.startswith("cell 2 [requirements]: 'flwr==1.20': the toolkit provides Flower itself (flwr==1.41.0)")
    assert bad.startswith("cell 2 [requirements]: 'not a requirement!' is not a pip requirement")


def test_duplicate_definitions_across_cells(tmp_path):
    [msg] = problems(tmp_path, minimal_cells(helpers=MINIMAL["helpers"] + "def train(m, d, c, dev):\n    return {}\n"))
    assert msg.startswith("cell 7 [train]: line 1: 'train' is already defined in cell 4 [helpers]")


def test_misspelled_tag(tmp_path):
    cells = [(("modle" if t == "model" else t), s) for t, s in minimal_cells()]
    msgs = problems(tmp_path, cells)
    assert any(m.startswith("cell 6 [modle]: unknown tag 'modle', spelled like the contract's 'model'") for m in msgs)
    assert any(m.startswith("notebook: no code cell is tagged 'model'") for m in msgs)


def test_unrelated_tags_are_ignored(tmp_path):
    assert problems(tmp_path, [*minimal_cells(), ("parameters", "x = 1\n")]) == []


def test_all_violations_reported_together_in_cell_order(tmp_path):
    msgs = problems(
        tmp_path,
        minimal_cells(
            config="CONFIG = {}\n",
            model="def build_model():\n    pass\n",
            evaluate="def evaluate(model, dataset, config, device)\n",
        ),
    )
    assert [m.split(":")[0] for m in msgs] == ["cell 3 [config]", "cell 6 [model]", "cell 8 [evaluate]"]


def test_not_a_notebook(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(NotebookError, match="not a Jupyter notebook"):
        read_notebook(bad)
    with pytest.raises(NotebookError, match="cannot read"):
        read_notebook(tmp_path / "missing.ipynb")
