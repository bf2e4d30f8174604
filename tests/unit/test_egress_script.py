"""Role site_egress's script and unit, rendered as the role renders them: the script passes
shellcheck (else `sh -n`), and run against stand-in iptables commands that record what they
are asked, `apply` hands each family its chains and jumps in one iptables-restore, and stops
at the first failure. No Docker, no root: tests/integration/test_egress_allow_list.py runs
the role on a real engine.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2
import pytest
from iptables_stand_in import executable, passes_shellcheck, restores, run

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "roles" / "site_egress" / "templates"
BRIDGE, CHAIN, SEALED = "nbfe-0123456789", "NBFED-EGR-nbfe-0123456789", "nbfs-0123456789"
IPV6 = Path("/proc/net/if_inet6").exists()  # the script leaves ip6tables alone without it


def render(template: str) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    env.filters["quote"] = shlex.quote  # Ansible's
    env.tests["search"] = lambda value, pattern: re.search(pattern, value) is not None  # Ansible's
    return env.get_template(template).render(
        ansible_managed="Ansible managed",
        site_egress_site_name="oslo",
        site_egress_bridge=BRIDGE,
        site_egress_chain=CHAIN,
        site_egress_aggregator_port=8000,
        site_egress_ips=["203.0.113.10", "2001:db8::10"],
        site_egress_script=f"/usr/local/sbin/nbfed-egress-{BRIDGE}",
        site_egress_sealed_bridge=SEALED,
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return executable(tmp_path / "nbfed-egress", render("nbfed-egress.sh.j2"))


def test_the_script_passes_shellcheck_or_at_least_sh_n(script: Path) -> None:
    done = passes_shellcheck(script)
    assert done.returncode == 0, done.stdout + done.stderr


def test_apply_writes_each_familys_chains_and_jumps_in_one_transaction(script: Path) -> None:
    status, log = run(script, "apply")
    assert status == 0, log
    inputs = restores(log)
    assert list(inputs) == ["iptables-restore", "ip6tables-restore"][: 2 if IPV6 else 1], log
    for name, (ip, other, reject) in {
        "iptables-restore": ("203.0.113.10", "2001:db8::10", "icmp-admin-prohibited"),
        "ip6tables-restore": ("2001:db8::10", "203.0.113.10", "icmp6-adm-prohibited"),
    }.items():
        if name not in inputs:
            continue
        lines = inputs[name]
        assert lines[0] == "*filter" and lines[-1] == "COMMIT", lines
        assert lines[1:3] == [f":{CHAIN} - [0:0]", f":{CHAIN}-IN - [0:0]"], lines
        for chain in (CHAIN, f"{CHAIN}-IN"):
            allow = f"-A {chain} -p tcp -m conntrack --ctorigdst {ip} --ctorigdstport 8000 -j RETURN"
            rejects = [i for i, line in enumerate(lines) if line.startswith(f"-A {chain} ")]
            assert allow in lines and f"-A {chain} -j REJECT --reject-with {reject}" in lines, lines
            assert lines[rejects[-1]] == f"-A {chain} -j REJECT --reject-with {reject}", lines  # last of the chain
        assert not any(other in line for line in lines), lines  # each address in its own family
        assert lines[-4:-1] == [
            f"-I DOCKER-USER 1 -i {BRIDGE} -j {CHAIN}",
            f"-I INPUT 1 -i {BRIDGE} -j {CHAIN}-IN",
            f"-I INPUT 1 -i {SEALED} -j REJECT --reject-with {reject}",  # the ClientApps' bridge: nothing on the host
        ]
    assert "-F" not in log.split(), log  # nothing flushed outside a transaction


def test_apply_stops_at_the_first_failure_and_check_says_the_rules_differ(script: Path) -> None:
    status, log = run(script, "apply", fail="iptables-restore")
    assert status != 0 and "ip6tables" not in log, log
    if IPV6:
        status, log = run(script, "apply", fail="ip6tables-restore")
        assert status != 0, log
    assert run(script, "check")[0] == 3
    assert run(script, "bogus")[0] == 2


def test_the_unit_applies_the_rules_before_docker_starts_and_docker_requires_it() -> None:
    unit = render("nbfed-egress.service.j2")
    for line in (
        "Before=docker.service",
        "PartOf=docker.service",
        "RequiredBy=docker.service",
        f"ExecStart=/usr/local/sbin/nbfed-egress-{BRIDGE} apply",
    ):
        assert line in unit.splitlines(), unit
    assert "ExecStop" not in unit  # stopping Docker must not open the stack's egress
