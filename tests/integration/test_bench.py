"""Smoke runs of the benchmarks in bench/: they keep working; they measure nothing here.
(bench/deploy.py's runs in test_deploy, on that module's running deployment.)"""

from __future__ import annotations

import pytest
from conftest import smoke


@pytest.mark.docker
def test_images_benchmark_reports_every_image_and_a_build_that_built_nothing(
    built_images, base_image, tmp_path
) -> None:
    results = smoke("images.py", tmp_path / "images.json", "--base-image", base_image)
    assert set(results["sizes_bytes"]) == {image.ref for image in built_images.values()}
    assert all(size > 50_000_000 for size in results["sizes_bytes"].values())
    assert results["builds_s"]["warm build"]["median"] > 0


@pytest.mark.slow
def test_round_overhead_benchmark_times_nbfed_rounds(tmp_path) -> None:
    """Local processes only (no Docker); raw Flower (bench/raw_flower) runs beside nbfed."""
    out = tmp_path / "round_overhead.json"
    results = smoke("round_overhead.py", out, timeout=300)
    nbfed = [run for run in results["runs"] if run["app"] == "nbfed"]
    assert nbfed and all(seconds > 0 for run in nbfed for seconds in run["rounds_s"])
    assert all(row["round_1_s"]["median"] > 0 for row in results["summary"])
    assert out.with_suffix(".md").is_file()


@pytest.mark.slow
def test_template_rounds_benchmark_splits_a_round_into_site_work_and_overhead(tmp_path) -> None:
    results = smoke("template_rounds.py", tmp_path / "template_rounds.json")
    [[round_]] = results["runs"]
    assert 0 < round_["slowest_train_s"] + round_["slowest_evaluate_s"] < round_["duration_s"]
    assert 0 < round_["overhead_s"] < round_["duration_s"]
    assert round_["bytes_moved"] == 9 * round_["model_bytes"] > 0  # 3 sites: down, up, down
