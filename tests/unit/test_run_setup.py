"""What run-local and submit check before starting anything."""

import pytest
from notebooks import minimal_cells, write_notebook

from nbfed.flower_app.settings import nested_config
from nbfed.local import find_sites
from nbfed.submit import prepare_run


def test_missing_data_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data directory {tmp_path / 'nope'} does not exist.*nbfed synth-data"):
        find_sites(tmp_path / "nope")
    (tmp_path / "empty" / "site-a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no site directories"):
        find_sites(tmp_path / "empty")


def test_sites_are_the_subdirectories_with_train_and_test(tmp_path):
    for site in ("b", "a"):
        (tmp_path / site / "train").mkdir(parents=True)
        (tmp_path / site / "test").mkdir()
    (tmp_path / "notes").mkdir()
    assert list(find_sites(tmp_path)) == ["a", "b"]


def test_prepare_run_writes_overrides_and_refuses_unknown_keys(tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb", minimal_cells())
    run = prepare_run(nb, tmp_path / "results", {"num_rounds": 5, "nbfed.min-sites": 3})
    assert run.num_rounds == 5 and (run.app_dir / "pyproject.toml").is_file()
    text = run.overrides.read_text()
    assert '"num_rounds" = 5' in text and '"nbfed.min-sites" = 3' in text and "nbfed.results-dir" in text
    with pytest.raises(KeyError, match="unknown run config key.*epochs"):
        prepare_run(nb, tmp_path / "other", {"epochs": 2})
    (run.results / "run.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds a run"):
        prepare_run(nb, run.results, {})


def test_flat_run_config_back_to_the_notebooks_nested_config():
    flat = {"num_rounds": 3, "optim.lr": 0.1, "optim.betas.b1": 0.9, "nbfed.min-sites": 2}
    assert nested_config(flat) == {"num_rounds": 3, "optim": {"lr": 0.1, "betas": {"b1": 0.9}}}
