"""playbooks/preflight.yml on inventory/local (passes, changes nothing, check mode too), and
deploy.yml refusing what only a host probe finds: a port the aggregator stack would publish
already taken, a site's data directory missing or empty,
and the wrong inventories in tests/fixtures/inventories that a probe refuses (the rest, and
inventory/clarify, need no host: tests/unit/test_inventory_checks.py).

The local inventory is run as it is, with one more inventory source that only points the
sites' site_data_dir at a temporary tree, so the repository's data/ is neither needed nor
touched. These runs reach the host probes, so they need a Docker Engine with Compose v2 here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from inventories import PROBED, SITES, assert_refused, make_site_data, preflight
from playbook import assert_nothing_changed, run_ansible, tree


@pytest.fixture(scope="module")
def site_data(tmp_path_factory) -> Path:
    return make_site_data(tmp_path_factory.mktemp("site-data"))


def data_override(tmp_path: Path, data: Path) -> Path:
    """An inventory source that only moves inventory/local's site_data_dir to `data`."""
    lines = ["all:", "  children:", "    sites:", "      hosts:"]
    lines += [f"        {site}: {{site_data_dir: '{data / site}'}}" for site in SITES]
    path = tmp_path / "data-override.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.docker
@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
def test_local_inventory_passes_and_changes_nothing(docker_engine, site_data, tmp_path, check) -> None:
    before = tree(site_data)
    args = ["-i", "inventory/local", "-i", str(data_override(tmp_path, site_data))] + (["--check"] if check else [])
    done = preflight(*args)
    assert done.returncode == 0, done.output
    hosts = assert_nothing_changed(done)
    assert set(hosts) == {"local-aggregator", *SITES}, done.output
    assert not any(counts["failed"] for counts in hosts.values()), done.output
    assert tree(site_data) == before


@pytest.mark.docker
def test_local_inventory_without_data_says_how_to_make_it(docker_engine, tmp_path) -> None:
    missing = tmp_path / "synthetic"
    done = preflight("-i", "inventory/local", "-i", str(data_override(tmp_path, missing)))
    assert done.returncode != 0, done.output
    said = " ".join(done.output.split())
    for site in SITES:
        assert f"Site {site} (host {site}): the data directory {missing / site} does not exist" in said, done.output
    assert "nbfed synth-data -o data/synthetic" in said, done.output
    assert_nothing_changed(done)
    assert not missing.exists()


@pytest.mark.docker
def test_a_port_the_aggregator_would_publish_that_is_taken_is_named_before_anything_changes(
    docker_engine, site_data, tmp_path
) -> None:
    """Another program (here: this test) listens on the fleet port: preflight names the host, the
    port, the process and the inventory variable to change, and changes nothing."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = preflight(
            "-i",
            "inventory/local",
            "-i",
            str(data_override(tmp_path, site_data)),
            "-e",
            json.dumps({"aggregator_port": port}),
        )
    assert done.returncode != 0, done.output
    said = " ".join(done.output.split())
    assert "Host local-aggregator: the aggregator stack publishes ports that something else holds:" in said
    assert f"port {port} (aggregator_port) is held by process " in said, done.output
    assert f"(pid {os.getpid()})." in said, done.output
    assert "Set aggregator_port in the inventory to free ports on local-aggregator" in said, done.output
    assert_nothing_changed(done)


@pytest.mark.docker
@pytest.mark.parametrize("fault", ["missing", "empty"])
def test_a_site_data_directory_that_is_missing_or_empty_is_refused(docker_engine, site_data, tmp_path, fault) -> None:
    """One site's data gone (the others fine): deploy.yml stops in preflight, naming the site and path."""
    data = tmp_path / "data"
    shutil.copytree(site_data, data)
    shutil.rmtree(data / "site-b")
    if fault == "empty":
        (data / "site-b").mkdir()
    done = run_ansible(
        "ansible-playbook", "deploy.yml", "-i", "inventory/local", "-i", str(data_override(tmp_path, data))
    )
    assert done.returncode != 0, done.output
    said = " ".join(done.output.split())
    wrong = "does not exist" if fault == "missing" else "is empty"
    assert f"Site site-b (host site-b): the data directory {data / 'site-b'} {wrong}" in said, done.output
    assert "PLAY [Build]" not in done.output, done.output
    assert_nothing_changed(done)


@pytest.mark.docker
@pytest.mark.parametrize("name", sorted(PROBED))
def test_wrong_inventory_is_refused_naming_host_and_variable(name, docker_engine, site_data) -> None:
    assert_refused(name, site_data)
