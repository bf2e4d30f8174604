"""Fixtures for the integration tests: the built images, containers, a test PKI.

The engine and base image fixtures (docker_api, docker_client, base_image, docker_engine)
are in tests/conftest.py, shared with the e2e tier. Builds share the repository's `build/`
tree (wheelhouse, rootfs), so a second test session rebuilds nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("NBFED_TEST_BUILD_DIR", ROOT / "build"))
TEMPLATE = ROOT / "notebook" / "template.ipynb"


def smoke(script: str, out, *args: str, timeout: float = 600) -> dict:
    """Run bench/<script> --smoke writing to `out`; its results."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--smoke", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def template_requirements() -> list[str]:
    """What the images are built with in tests: the template's, as the demo builds them."""
    from nbfed.notebook import read_notebook

    return read_notebook(TEMPLATE).requirements


@pytest.fixture(scope="session")
def built_images(docker_api, base_image):
    """The proxy, aggregator and cpu site images, built (or found) once per session, by kind."""
    from rich.console import Console

    from nbfed.images import build_images

    images = build_images(
        template_requirements(),
        flavours=("cpu",),
        base_image=base_image,
        build_dir=BUILD_DIR,
        labels={"notebook": TEMPLATE.name, "notebook_sha256": "0" * 64},
        console=Console(stderr=True, width=120),
    )
    return {image.kind: image for image in images}


@pytest.fixture
def container_factory(docker_client) -> Iterator:
    """run(image, ...) -> a started container, removed (with its networks) after the test."""
    containers = []
    networks = []

    def run(image: str, command=None, **kwargs):
        kwargs.setdefault("detach", True)
        kwargs.setdefault("name", f"nbfed-test-{uuid.uuid4().hex[:8]}")
        container = docker_client.containers.run(image, command, **kwargs)
        containers.append(container)
        return container

    def network():
        net = docker_client.networks.create(f"nbfed-test-{uuid.uuid4().hex[:8]}", driver="bridge")
        networks.append(net)
        return net

    run.network = network
    yield run
    for container in containers:
        try:
            container.remove(force=True)
        except Exception:  # gone already, or the engine with it: nothing left to remove
            pass
    for net in networks:
        try:
            net.remove()
        except Exception:  # gone already, or the engine with it: nothing left to remove
            pass


def wait_for(predicate, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def make_pki(directory: Path, ca_name: str = "nbfed test CA") -> Path:
    """nbfed's throw-away PKI, one certificate for SuperLink and the proxy (SANs: superlink,
    proxy, localhost, 127.0.0.1), also as superlink.pem/.key. Test material only: every file is
    world-readable, so uid 10001 in the containers can read it.
    """
    from nbfed.pki import make_pki as nbfed_pki

    nbfed_pki(directory, ["superlink", "proxy", "localhost", "127.0.0.1"], sites=[], ca_name=ca_name)
    shutil.copy(directory / "server.pem", directory / "superlink.pem")
    shutil.copy(directory / "server.key", directory / "superlink.key")
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return directory


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """A test consortium PKI (see make_pki)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def local_deployment(tmp_path_factory, base_image, docker_engine):
    """inventory/local as `pytest-local` (local_deployment.py), shared by test_deploy and
    test_reliability and purged at the end of the session."""
    from local_deployment import Deployment

    deployment = Deployment("pytest-local", tmp_path_factory.mktemp("deploy"), base_image, nbfed_rounds=2)
    yield deployment
    deployment.purge()
