"""Resuming a run from its results directory (nbfed.submit), without a SuperLink."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from nbfed.submit import finished_rounds, prepare_resume, prepare_run

ROOT = Path(__file__).resolve().parents[2]


def test_resume_reuses_the_app_and_settings_and_asks_to_resume(tmp_path) -> None:
    run = prepare_run(ROOT / "notebook" / "template.ipynb", tmp_path / "run", {"num_rounds": 4, "nbfed.min-sites": 2})
    (run.results / "run.json").write_text(json.dumps({"status": "failed"}))
    app = (run.app_dir / "pyproject.toml").read_text()

    resumed = prepare_resume(run.results)
    assert resumed.app_dir == run.app_dir and (run.app_dir / "pyproject.toml").read_text() == app
    assert resumed.num_rounds == 4
    with open(resumed.overrides, "rb") as f:
        settings = tomllib.load(f)
    assert settings == {
        "nbfed.results-dir": str(run.results),
        "num_rounds": 4,
        "nbfed.min-sites": 2,
        "nbfed.resume": True,
    }


def test_resume_needs_a_run(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no run to resume"):
        prepare_resume(tmp_path)


def test_finished_rounds_is_the_newest_checkpoint(tmp_path) -> None:
    assert finished_rounds(tmp_path) == 0
    (tmp_path / "checkpoints").mkdir()
    for name in ("round-2.pt", "round-10.pt", ".round-11.pt.tmp"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    assert finished_rounds(tmp_path) == 10
