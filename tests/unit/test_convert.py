"""The generated app has Flower's quickstart layout, is deterministic, and `flwr build` accepts it."""

import filecmp
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from notebooks import minimal_cells, write_notebook

from nbfed.check import CheckFailed
from nbfed.convert import convert


@pytest.fixture
def notebook(tmp_path) -> Path:
    return write_notebook(tmp_path / "My Study.ipynb", minimal_cells())


def test_layout_and_pyproject(notebook, tmp_path):
    app = convert(notebook, tmp_path / "app")
    assert (app.name, app.package) == ("my-study", "my_study_app")
    files = sorted(p.name for p in (tmp_path / "app" / "my_study_app").iterdir())
    assert files == [
        "__init__.py",
        "client_app.py",
        "fedavg.py",
        "global_model.py",
        "metrics.py",
        "participation.py",
        "recorder.py",
        "recording.py",
        "replies.py",
        "server_app.py",
        "settings.py",
        "task.py",
        "wrappers.py",
    ]
    project = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
    flwr_app = project["tool"]["flwr"]["app"]
    assert flwr_app["components"] == {
        "serverapp": "my_study_app.server_app:app",
        "clientapp": "my_study_app.client_app:app",
    }
    assert flwr_app["config"]["num_rounds"] == 2 and flwr_app["config"]["lr"] == 0.01
    assert flwr_app["config"]["nbfed"]["min-sites"] == 2
    assert project["project"]["dependencies"] == ["flwr==1.41.0", "torch>=2.4"]


def test_task_module_keeps_cell_order_and_names_the_notebook(notebook, tmp_path):
    app = convert(notebook, tmp_path / "app")
    task = (tmp_path / "app" / "my_study_app" / "task.py").read_text()
    assert f"from My Study.ipynb (sha256 {app.notebook.sha256})" in task
    markers = [line for line in task.splitlines() if line.startswith("# --- cell")]
    assert [m.split("[")[1].split("]")[0] for m in markers] == [
        "config",
        "helpers",
        "data",
        "model",
        "train",
        "evaluate",
    ]
    assert "%pip" not in task
    compile(task, "task.py", "exec")


def test_conversion_is_byte_identical(notebook, tmp_path):
    convert(notebook, tmp_path / "one")
    convert(notebook, tmp_path / "two")
    cmp = filecmp.dircmp(tmp_path / "one", tmp_path / "two")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    assert not filecmp.dircmp(tmp_path / "one" / "my_study_app", tmp_path / "two" / "my_study_app").diff_files


def test_broken_notebook_is_not_converted(tmp_path):
    nb = write_notebook(tmp_path / "broken.ipynb", minimal_cells(model=None))
    with pytest.raises(CheckFailed, match="no code cell is tagged 'model'"):
        convert(nb, tmp_path / "app")
    assert not (tmp_path / "app").exists()


def test_flwr_build_accepts_the_app(notebook, tmp_path):
    convert(notebook, tmp_path / "app")
    flwr = Path(sys.executable).parent / "flwr"
    done = subprocess.run(
        [str(flwr), "build", "--app", str(tmp_path / "app")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    fabs = list(tmp_path.rglob("*.fab"))
    assert len(fabs) == 1 and fabs[0].name.startswith("nbfed.my-study.1-0-0")
