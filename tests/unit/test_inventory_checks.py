"""The inventory checks that need no host: deploy.yml on every wrong inventory in
tests/fixtures/inventories that the control node refuses (its preflight stage names the host
and the variable before any later stage touches anything), and inventory/clarify checked
without connecting to its hosts. The runs that reach the host probes (inventory/local, and the
wrong inventory a probe refuses) need a Docker Engine: tests/integration/test_inventory.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from inventories import BAD_INVENTORIES, FIXTURES, PROBED, assert_refused, make_site_data, preflight
from playbook import assert_nothing_changed, run_ansible


@pytest.fixture(scope="module")
def site_data(tmp_path_factory) -> Path:
    return make_site_data(tmp_path_factory.mktemp("site-data"))


@pytest.mark.parametrize("name", sorted(set(BAD_INVENTORIES) - PROBED))
def test_wrong_inventory_is_refused_naming_host_and_variable(name, site_data) -> None:
    assert_refused(name, site_data)


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
        done.output.split()
    ), done.output
    assert_nothing_changed(done)  # unreachable=0: no connection was tried
