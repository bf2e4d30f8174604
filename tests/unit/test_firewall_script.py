"""Role firewall's script and unit, rendered as the role renders them: the script passes
shellcheck (else `sh -n`); run against stand-in iptables commands, `apply` writes the
allow-list, its jump and the stack's bridge rules in one iptables-restore (so a failure
leaves the rules as they were and the DROP never leaves), and the unit applies it before
Docker starts. No Docker, no root: the multi-host tests run the role on real engines.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
from iptables_stand_in import executable, passes_shellcheck, restores, run

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "roles" / "firewall" / "templates"
CHAIN, SEALED, FLEET = "NBFED-FLEET", "nbfa-0123456789", "nbff-0123456789"
SITES = ["198.51.100.7", "203.0.113.0/28"]


def render(template: str) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined)
    env.filters["quote"] = shlex.quote  # Ansible's
    return env.get_template(template).render(
        ansible_managed="Ansible managed",
        firewall_chain=CHAIN,
        firewall_port=8443,
        firewall_addresses=SITES,
        firewall_sealed_bridge=SEALED,
        firewall_fleet_bridge=FLEET,
        firewall_script="/usr/local/sbin/nbfed-firewall",
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return executable(tmp_path / "nbfed-firewall", render("nbfed-firewall.sh.j2"))


def test_the_script_passes_shellcheck_or_at_least_sh_n(script: Path) -> None:
    done = passes_shellcheck(script)
    assert done.returncode == 0, done.stdout + done.stderr


def test_apply_writes_the_allow_list_its_jump_and_the_bridge_rules_in_one_transaction(script: Path) -> None:
    status, log = run(script, "apply")
    assert status == 0, log
    [(name, lines)] = restores(log).items()
    assert name == "iptables-restore" and lines[0] == "*filter" and lines[-1] == "COMMIT", lines
    jump = "-p tcp -m conntrack --ctstate DNAT --ctorigdstport 8443 --ctdir ORIGINAL -j NBFED-FLEET"
    assert lines[1:-1] == [
        f":{CHAIN} - [0:0]",  # declared: emptied in this transaction, which refills it
        f"-A {CHAIN} -s 198.51.100.7 -j RETURN",
        f"-A {CHAIN} -s 203.0.113.0/28 -j RETURN",
        f"-A {CHAIN} -j DROP",
        f"-I DOCKER-USER 1 {jump}",
        f"-I INPUT 1 -i {SEALED} -j REJECT",  # SuperLink's bridge: nothing of the host reaches it ...
        f"-I OUTPUT 1 -o {SEALED} -j REJECT",  # ... nor does it reach the host
        f"-I DOCKER-USER 1 -o {FLEET} -m conntrack --ctstate NEW -m conntrack ! --ctstate DNAT -j DROP",
    ], lines
    assert not re.search(r"^iptables -w -[FX] ", log, re.M), log  # nothing emptied outside the transaction
    assert "-N DOCKER-USER" in log  # made before Docker, at boot, as Docker makes it


def test_a_failed_apply_is_an_error_and_check_says_the_rules_differ(script: Path) -> None:
    status, log = run(script, "apply", fail="iptables-restore")
    assert status != 0, log
    assert run(script, "check")[0] == 3
    assert run(script, "bogus")[0] == 2


def test_the_unit_applies_the_rules_before_docker_starts_and_docker_requires_it() -> None:
    unit = render("nbfed-firewall.service.j2").splitlines()
    for line in (
        "Before=docker.service",
        "PartOf=docker.service",
        "RequiredBy=docker.service",
        "ExecStart=/usr/local/sbin/nbfed-firewall apply",
    ):
        assert line in unit, unit
    assert not any(line.startswith("ExecStop") for line in unit)  # stopping Docker must not open the port


def test_in_a_network_namespace_of_its_own_apply_is_idempotent_and_a_failed_one_keeps_the_old_rules(
    script: Path, tmp_path: Path
) -> None:
    """Real iptables, in an empty network namespace (root only): a name that cannot resolve
    fails the whole transaction, and the allow-list with its DROP stays as it was."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("iptables-restore"):
        pytest.skip("needs root, unshare and iptables")
    bad = tmp_path / "bad"
    unresolvable = 'SOURCES="198.51.100.9 no.such.host.invalid"'
    bad.write_text(re.sub(r"^SOURCES=.*$", unresolvable, script.read_text(), flags=re.M))
    steps = f"sh {script} apply && sh {script} apply && sh {script} check && ! sh {bad} apply 2>/dev/null"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"{steps} && iptables -w -S {CHAIN}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[1:] == [
        f"-A {CHAIN} -s 198.51.100.7/32 -j RETURN",
        f"-A {CHAIN} -s 203.0.113.0/28 -j RETURN",
        f"-A {CHAIN} -j DROP",
    ], done.stdout
