"""playbooks/preflight.yml on inventory/local (passes, changes nothing, check mode too),
deploy.yml on every wrong inventory in tests/fixtures/inventories (refused by its preflight
stage, naming the host and the variable, before any later stage touches anything), and
inventory/clarify checked without connecting to its hosts.

The local inventory is run as it is, with one more inventory source that only points the
sites' site_data_dir at a temporary tree, so the repository's data/ is neither needed nor
touched. Runs that reach the host probes need a Docker Engine with Compose v2 here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from playbook import ROOT, assert_nothing_changed, run_ansible, tree

FIXTURES = ROOT / "tests" / "fixtures" / "inventories"
SITES = ("site-a", "site-b", "site-c")

#: Each wrong inventory: what the output must say (whitespace-normalised), host and variable.
BAD_INVENTORIES: dict[str, list[str]] = {
    "missing-data-dir": [
        "fatal: [site-b]: FAILED!",
        "Host site-b: site_data_dir is not set. Set it in the inventory to the absolute path",
    ],
    "relative-data-dir": [
        "fatal: [site-a]: FAILED!",
        "Host site-a: site_data_dir 'data/synthetic/site-a' is not an absolute path.",
    ],
    "invalid-address": [
        "fatal: [site-c]: FAILED!",
        "Host site-c: site_address '198.51.100.300' is neither an IP address nor a DNS name.",
    ],
    "invalid-aggregator-address": [
        "fatal: [fl-aggregator]: FAILED!",
        "Host fl-aggregator: aggregator_address 'https://fl.clarify.example:8000' is neither an IP address"
        " nor a DNS name.",
    ],
    "duplicate-site": [
        "fatal: [site-b]: FAILED!",
        "fatal: [site-c]: FAILED!",
        "Host site-b: site_name 'hospital' is also the site_name of site-c.",
        "Host site-c: site_name 'hospital' is also the site_name of site-b.",
    ],
    "bad-site-name": [
        "fatal: [site-a]: FAILED!",
        "Host site-a: site_name 'Site_A' is not a valid site name.",
    ],
    "gpu-without-nvidia": [
        "fatal: [site-b]: FAILED!",
        "Site site-b (host site-b) declares site_gpu: true but the Docker Engine there has no nvidia runtime",
        "install the NVIDIA Container Toolkit (nvidia-ctk runtime configure) or set site_gpu: false",
    ],
    "bad-type": [
        "fatal: [site-a]: FAILED!",
        "argument 'site_gpu' is of type str and we were unable to convert to bool",
    ],
    "bad-choice": [
        "value of nbfed_image_delivery must be one of: local, archive, registry, got: ftp",
    ],
    "two-aggregators": [
        "The inventory must put exactly one host in group 'aggregator'",
        "it has 2: [fl-aggregator-2, fl-aggregator]",
    ],
    "too-few-sites": [
        "nbfed_min_sites is 5 but the inventory has 3 site(s) (site-a, site-b, site-c)",
    ],
    "missing-notebook": [
        "nbfed_notebook 'notebook/no-such-notebook.ipynb' is not a file on the control node",
    ],
}
def preflight(*args: str, data: Path | None = None):
    return run_ansible("ansible-playbook", "playbooks/preflight.yml", *args, data=data)


#: Wrong inventories refused by a host probe (the rest fail on the control node first).
PROBED = {"gpu-without-nvidia"}

@pytest.fixture(scope="module")
def site_data(tmp_path_factory) -> Path:
    """A stand-in for `nbfed synth-data` output: site-a..c with train/ and test/ (placeholder files)."""
    root = tmp_path_factory.mktemp("site-data")
    for site in SITES:
        for split in ("train", "test"):
            for label in ("normal", "tumor"):
                folder = root / site / split / label
                folder.mkdir(parents=True)
                (folder / "0.png").write_bytes(b"placeholder, not an image")
    return root


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
        docker_engine, site_data, tmp_path) -> None:
    """Another program (here: this test) listens on the fleet port: preflight names the host, the
    port, the process and the inventory variable to change, and changes nothing."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = preflight("-i", "inventory/local", "-i", str(data_override(tmp_path, site_data)),
                         "-e", json.dumps({"aggregator_port": port}))
    assert done.returncode != 0, done.output
    said = " ".join(done.output.split())
    assert (f"Host local-aggregator: port {port} (aggregator_port), which the aggregator stack publishes, is "
            f"already held by process ") in said, done.output
    assert f"(pid {os.getpid()})" in said, done.output
    assert "Set aggregator_port in the inventory to a free port on local-aggregator" in said, done.output
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
    done = run_ansible("ansible-playbook", "deploy.yml", "-i", "inventory/local", "-i", str(data_override(tmp_path, data)))
    assert done.returncode != 0, done.output
    said = " ".join(done.output.split())
    wrong = "does not exist" if fault == "missing" else "is empty"
    assert f"Site site-b (host site-b): the data directory {data / 'site-b'} {wrong}" in said, done.output
    assert "PLAY [Build]" not in done.output, done.output
    assert_nothing_changed(done)


@pytest.mark.parametrize("name", sorted(BAD_INVENTORIES))
def test_wrong_inventory_is_refused_naming_host_and_variable(name, site_data, request) -> None:
    if name in PROBED:
        request.getfixturevalue("docker_engine")
    inventory = FIXTURES / name
    before = tree(site_data), tree(inventory)
    done = run_ansible("ansible-playbook", "deploy.yml", "-i", str(inventory), data=site_data)
    assert done.returncode != 0, f"{name} was accepted:\n{done.output}"
    said = " ".join(done.output.split())
    for expected in BAD_INVENTORIES[name]:
        assert expected in said, f"{name}: expected {expected!r} in:\n{done.output}"
    hosts = assert_nothing_changed(done)
    assert "localhost" not in hosts, f"{name}: a stage after preflight ran:\n{done.output}"
    assert "PLAY [Build]" not in done.output, done.output
    assert (tree(site_data), tree(inventory)) == before


def test_every_wrong_inventory_has_a_test() -> None:
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == set(BAD_INVENTORIES)


def test_clarify_inventory_graph() -> None:
    done = run_ansible("ansible-inventory", "-i", "inventory/clarify", "--graph")
    assert done.returncode == 0, done.output
    graph = done.stdout
    assert re.search(r"@aggregator:\n[ |]*\|--fl\.clarify\.example\n", graph), graph
    for site in ("valencia", "amsterdam", "oslo"):
        assert f"|--{site}" in graph, graph


def test_clarify_inventory_passes_the_checks_without_connecting() -> None:
    """preflight_probe_hosts=false: only the control-node checks; the example hosts are never reached."""
    done = preflight("-i", "inventory/clarify", "-e", "preflight_probe_hosts=false")
    assert done.returncode == 0, done.output
    hosts = assert_nothing_changed(done)
    assert set(hosts) == {"fl.clarify.example", "valencia", "amsterdam", "oslo"}, done.output


def test_clarify_inventory_with_a_wrong_setting_fails_before_connecting() -> None:
    """Probes on: the inventory check fails first, so none of the (unreachable) example hosts is contacted."""
    done = preflight("-i", "inventory/clarify", "-e", "nbfed_min_sites=4")
    assert done.returncode != 0, done.output
    assert "nbfed_min_sites is 4 but the inventory has 3 site(s) (valencia, amsterdam, oslo)" in " ".join(
        done.output.split()), done.output
    assert_nothing_changed(done)  # unreachable=0: no connection was tried
