"""Container images without a Docker Engine: requirements, content tags, tools images, what
the aggregator drops, and the message when no engine answers. Building and running the images
is tests/integration/test_images.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nbfed import images


@pytest.mark.parametrize(
    ("keep", "kept"), [("sympy", {"sympy", "mpmath"}), ("networkx", {"networkx"}), ("mpmath", {"mpmath"})]
)
def test_the_aggregator_keeps_the_torch_dependencies_a_notebook_names(keep, kept):
    # images/aggregator/unneeded.py against this venv's real package metadata (torch requires all three)
    def unneeded(names: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, str(images.images_dir() / "aggregator" / "unneeded.py")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "NBFED_KEEP": names},
        )
        return set(done.stdout.split())

    dropped = unneeded("")
    assert dropped <= set(images.AGGREGATOR_OPTIONAL) and "sympy" in dropped  # nothing else here requires sympy
    assert unneeded(keep) == dropped - kept


def test_no_engine_says_how_to_start_one(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(images.ImagesError, match=r"\.ci/docker-engine"):
        images.docker_client()


def test_requirements_always_pin_flwr():
    reqs = images.normalise_requirements(["numpy  # arrays", "flwr[simulation]>=1.20", "flwr-datasets", "numpy", ""])
    assert reqs == ["flwr-datasets", "numpy", "flwr==1.41.0", images.TORCH_RANGE]
    with pytest.raises(images.ImagesError, match="NBFED_TORCH_INDEX_URL"):
        images.normalise_requirements(["--extra-index-url https://example.invalid/simple"])


def test_content_tag_changes_with_each_input():
    base = {"base_image_digest": "sha256:1", "context_files": {"Dockerfile": b"FROM x"}, "lock": "a", "flavour": "cpu"}
    tag = images.content_tag(**base)
    assert len(tag) == 12 and tag == images.content_tag(**base)
    for change in (
        {"base_image_digest": "sha256:2"},
        {"tools_image_digest": "sha256:3"},
        {"context_files": {"Dockerfile": b"FROM y"}},
        {"lock": "b"},
        {"flavour": "cuda"},
        {"flwr_version": "1.42.0"},
    ):
        assert images.content_tag(**{**base, **change}) != tag, change


def test_each_base_image_has_its_tools_image():
    assert images.default_tools_image("python:3.11-slim-bookworm") == "python:3.11-bookworm"
    assert images.default_tools_image("python:3.11.9-slim-bookworm") == "python:3.11.9-bookworm"
    assert images.default_tools_image(images.BOOTSTRAP_BASE_IMAGE) == "nbfed/base:bookworm-tools"


def test_the_site_and_aggregator_builder_stages_are_the_same_so_the_images_share_their_layers():
    """The legacy builder has no way to share a stage between Dockerfiles: both write it out,
    and the aggregator's only adds steps after the site's."""

    def builder(kind: str) -> list[str]:
        lines = (images.images_dir() / kind / "Dockerfile").read_text().splitlines()
        start = lines.index("FROM ${BASE_IMAGE} AS builder")
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("FROM "))
        return [line for line in lines[start:end] if line and not line.startswith("#")]

    site, aggregator = builder("site"), builder("aggregator")
    assert len(site) > 10 and aggregator[: len(site)] == site
