"""The consortium every multi-host test module shares (one deployment per session: the
modules only look at it, or put back what they change)."""

from __future__ import annotations

import subprocess

import pytest
from consortium import SITES, Consortium
from harness import Hosts, host_image

from nbfed.synth import generate


@pytest.fixture(scope="session")
def consortium(tmp_path_factory, base_image, docker_engine):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    generate(data, scale=0.05)
    with Hosts(["aggregator", *SITES, "intruder"], root, host_image(base_image)) as hosts:
        for site in SITES:
            hosts.copy_to(site, data / site, "/srv/nbfed/data")
        yield Consortium(hosts, root, base_image)


@pytest.fixture(scope="session")
def deployed(consortium) -> subprocess.CompletedProcess:
    done = consortium.playbook("deploy.yml")
    assert done.returncode == 0, done.output[-20000:]
    return done
