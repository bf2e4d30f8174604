"""Wrong inventories (tests/fixtures/inventories) and what deploy.yml must say about each, for
tests/unit/test_inventory_checks.py (those the control node refuses) and
tests/integration/test_inventory.py (those a host probe refuses, which needs a Docker Engine)."""

from __future__ import annotations

import json
from pathlib import Path

from playbook import ROOT, assert_nothing_changed, run_ansible, tree

from nbfed.local import free_port

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
#: Wrong inventories refused by a host probe (the rest fail on the control node first).
PROBED = {"gpu-without-nvidia"}


def preflight(*args: str, data: Path | None = None):
    return run_ansible("ansible-playbook", "playbooks/preflight.yml", *args, data=data)


def make_site_data(root: Path) -> Path:
    """A stand-in for `nbfed synth-data` output in `root`: site-a..c with train/ and test/ (placeholder files)."""
    for site in SITES:
        for split in ("train", "test"):
            for label in ("normal", "tumor"):
                folder = root / site / split / label
                folder.mkdir(parents=True)
                (folder / "0.png").write_bytes(b"placeholder, not an image")
    return root


def assert_refused(name: str, site_data: Path) -> None:
    """deploy.yml on the wrong inventory `name` fails in preflight, saying what BAD_INVENTORIES
    says, before any later stage runs and without touching the data or the inventory."""
    inventory = FIXTURES / name
    before = tree(site_data), tree(inventory)
    # A probed inventory's aggregator is this machine: ports of its own, so that a deployment
    # already here (the demo's, on the default ports) is not what refuses it.
    ports = ["-e", json.dumps({"aggregator_port": free_port()})]
    done = run_ansible(
        "ansible-playbook", "deploy.yml", "-i", str(inventory), *(ports if name in PROBED else []), data=site_data
    )
    assert done.returncode != 0, f"{name} was accepted:\n{done.output}"
    said = " ".join(done.output.split())
    for expected in BAD_INVENTORIES[name]:
        assert expected in said, f"{name}: expected {expected!r} in:\n{done.output}"
    hosts = assert_nothing_changed(done)
    assert "localhost" not in hosts, f"{name}: a stage after preflight ran:\n{done.output}"
    assert "PLAY [Build]" not in done.output, done.output
    assert (tree(site_data), tree(inventory)) == before
