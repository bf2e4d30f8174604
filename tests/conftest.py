"""Fixtures every tier shares: a Docker Engine, the base image.

Tests that take one of these fixtures are skipped, with the reason, when no Docker Engine
answers (start one as root with `.ci/docker-engine`). The base image and its tools image are
built once from Debian packages (`images/base/build.sh`) unless NBFED_TEST_BASE_IMAGE names
one that exists (`python:3.11-slim-bookworm`, with `python:3.11-bookworm`, where they can be
pulled).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helpers beside this file: notebooks.py, playbook.py, ...

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = Path(os.environ.get("NBFED_TEST_BUILD_DIR", ROOT / "build"))
BOOTSTRAP_BASE = "nbfed/base:bookworm"


@pytest.fixture(scope="session")
def docker_api():
    """A docker SDK low-level client that answered a ping; else the test is skipped."""
    docker = pytest.importorskip("docker", reason="the docker SDK is not installed (pip install docker)")
    try:
        client = docker.APIClient(timeout=600, **docker.utils.kwargs_from_env())
        client.ping()
    except Exception as err:  # any failure means: no engine here
        pytest.skip(f"no Docker Engine answers ({err.__class__.__name__}); start one as root: .ci/docker-engine")
    return client


@pytest.fixture(scope="session")
def docker_client(docker_api):
    import docker

    return docker.from_env(timeout=600)


@pytest.fixture(scope="session")
def base_image(docker_api) -> str:
    """The base image the tests build on (with its tools image): NBFED_TEST_BASE_IMAGE, else nbfed/base:bookworm."""
    from docker.errors import ImageNotFound

    from nbfed.images import default_tools_image

    wanted = os.environ.get("NBFED_TEST_BASE_IMAGE", BOOTSTRAP_BASE)
    missing = []
    for image in (wanted, default_tools_image(wanted)):
        try:
            docker_api.inspect_image(image)
        except ImageNotFound:
            missing.append(image)
    if not missing:
        return wanted
    if wanted != BOOTSTRAP_BASE:
        pytest.skip(f"{' and '.join(missing)} (for NBFED_TEST_BASE_IMAGE) not on this engine")
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip(f"{' and '.join(missing)} missing and images/base/build.sh needs root and debootstrap")
    done = subprocess.run(
        [str(ROOT / "images" / "base" / "build.sh"), BOOTSTRAP_BASE],
        capture_output=True,
        text=True,
        timeout=1200,
        env=dict(os.environ, NBFED_BUILD_DIR=str(BUILD_DIR)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return BOOTSTRAP_BASE


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip unless a Docker Engine answers and Compose v2 works (the host probes need both)."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here; start an engine as root: .ci/docker-engine")
    for argv in (["docker", "info"], ["docker", "compose", "version"]):
        if subprocess.run(argv, capture_output=True, timeout=60).returncode != 0:
            pytest.skip(f"`{' '.join(argv)}` fails here; start an engine as root: .ci/docker-engine")
