"""Role site_egress on a real Docker Engine: a throwaway host container (the multi-host tests'
host image, its own engine) runs two site stacks, each on a compose network with a bridge of
its own name, beside an "aggregator" and another machine listening on ports 8000 and 9000.
The role, run by Ansible through `docker exec` as two hosts on one machine (as inventory/local
runs its sites), admits stack one to the aggregator's 8000 (forwarded) and stack two to Docker's
host gateway's 8000 (the host's INPUT, as the local demo's sites reach the aggregator); every
other address and port is refused at once, and so are the stack's DNS lookups beyond Docker's
own names. Then: a second deploy changes nothing, the rules outlive a restart of the engine
and `apply` restores them, `remove` removes one stack's only.

Every name here starts with egress-test- (the e2e tier's fixed names are nbfed-e2e-*); the
module removes what it made. The tests share the host and run in file order.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from e2e.harness import ENGINE_ARGS, host_image, sh
from playbook import assert_nothing_changed, recap, run_ansible

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PORTS = (8000, 9000)
LISTEN = (  # a TCP listener on each port, every address
    "import socketserver as s, threading as t\n"
    f"for p in {PORTS}: t.Thread(target=s.TCPServer(('', p), s.BaseRequestHandler).serve_forever).start()"
)
PROBE = r"""for target; do  # "IP PORT": "IP PORT|open or the error|start|end"
    start=$EPOCHREALTIME
    result=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && echo open' $target 2>&1)
    echo "$target|${result##*$'\n'}|$start|$EPOCHREALTIME"
done"""
BRIDGES = {"one": "egress-test-b1", "two": "egress-test-b2"}  # at most 15 characters
STACK = {
    "name": "egress-test",
    "services": {
        service: {
            "image": "egress-test-probe",
            "command": ["sleep", "infinity"],
            "networks": [service],
            "restart": "unless-stopped",
            "stop_signal": "SIGKILL",  # sleep ignores SIGTERM as pid 1: no 10 s wait at the engine's restart
        }
        for service in BRIDGES
    },
    "networks": {
        service: {"driver_opts": {"com.docker.network.bridge.name": bridge}} for service, bridge in BRIDGES.items()
    },
}
PLAY = [{"name": "Egress", "hosts": "all", "gather_facts": False, "roles": [{"role": "site_egress"}]}]


class SiteHost:
    """The host container (its engine started by hand, so that it can be restarted) and the
    machines its stacks try to reach."""

    def __init__(self, image: str, workdir: Path) -> None:
        self.name = f"egress-test-{uuid.uuid4().hex[:8]}"
        self.host, self.workdir, self.image = f"{self.name}-host", workdir, image

    def start(self) -> None:
        image = self.image
        sh("docker", "network", "create", self.name)
        self.ip = {}
        for machine in ("aggregator", "other"):
            sh("docker", "run", "-d", "--name", f"{self.name}-{machine}", "--network", self.name,
               "--entrypoint", "python3", image, "-c", LISTEN)  # fmt: skip
            self.ip[machine] = self.address(f"{self.name}-{machine}")
        sh("docker", "run", "-d", "--name", self.host, "--network", self.name, *ENGINE_ARGS, "-v", "/var/lib/docker",
           "--entrypoint", "sleep", image, "infinity")  # fmt: skip
        self.ip["host"] = self.address(self.host)
        self.start_engine()
        self.exec("python3", "-c", LISTEN, detach=True)  # the host's own services
        # The stacks' image: bash (/dev/tcp), timeout and sleep with their libraries, from the host.
        files = "b='/usr/bin/bash /usr/bin/timeout /usr/bin/sleep'; echo $b; ldd $b | grep -o '/[^ ]*' | sort -u"
        self.exec("sh", "-c", f"tar -ch $({files}) 2>/dev/null | docker import - egress-test-probe")
        self.exec("sh", "-c", "mkdir -p /srv/stack && cat > /srv/stack/compose.yml", input=yaml.safe_dump(STACK))
        self.exec("docker", "compose", "-f", "/srv/stack/compose.yml", "up", "-d")
        gateway = json.loads(self.exec("ip", "-json", "address", "show", "dev", "docker0").stdout)
        self.ip["gateway"] = next(a["local"] for a in gateway[0]["addr_info"] if a["family"] == "inet")

    def address(self, container: str) -> str:
        return sh(
            "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container
        ).stdout.strip()

    def exec(self, *argv: str, check: bool = True, input: str | None = None, detach: bool = False):
        return sh("docker", "exec", "-i", *(["-d"] if detach else []), self.host, *argv, check=check, input=input)

    def start_engine(self) -> None:
        # The stacks' DNS upstream is the other machine, as a real host's resolver is on its LAN
        # (this container's own, Docker's 127.0.0.11, would be asked from the host's namespace).
        engine = f"dockerd --dns {self.ip['other']} --cgroup-parent=/{self.name}"
        self.exec("sh", "-c", f"{engine} >>/var/log/dockerd.log 2>&1", detach=True)
        deadline = time.monotonic() + 60
        while self.exec("docker", "info", check=False).returncode:
            assert time.monotonic() < deadline, self.exec("tail", "/var/log/dockerd.log").stdout
            time.sleep(0.3)

    def restart_engine(self) -> None:
        self.exec(
            "sh", "-c", "pid=$(cat /var/run/docker.pid); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.2; done"
        )
        self.start_engine()
        for service in BRIDGES:  # back by their restart policy
            deadline = time.monotonic() + 30
            while (
                "running"
                not in self.exec("docker", "inspect", "-f", "{{.State.Status}}", f"egress-test-{service}-1").stdout
            ):
                assert time.monotonic() < deadline, f"stack {service} did not come back after the engine's restart"
                time.sleep(0.3)

    def connect(self, service: str, *targets: tuple[str, int]) -> dict[tuple[str, int], tuple[str, float]]:
        """For each (ip, port): ('open', seconds) when stack `service` connects to it, else the
        error and the seconds it took. One `docker exec` for all."""
        done = self.exec("docker", "exec", f"egress-test-{service}-1", "bash", "-c", PROBE, "probe",
                         *(f"{ip} {port}" for ip, port in targets))  # fmt: skip
        results = {}
        for line in done.stdout.splitlines():
            target, result, start, end = line.split("|")
            ip, port = target.split()
            results[ip, int(port)] = (result, float(end) - float(start))
        assert set(results) == set(targets), done.stdout + done.stderr
        return results

    def reaches(self, service: str, ip: str, port: int) -> bool:
        return self.connect(service, (ip, port))[ip, port][0] == "open"

    def rules(self, iptables: str = "iptables") -> str:
        return self.exec(iptables, "-S").stdout

    def script(self, service: str, action: str) -> int:
        return self.exec(f"/usr/local/sbin/nbfed-egress-{BRIDGES[service]}", action, check=False).returncode

    def deploy(self, *args: str, **addresses: list[str]) -> subprocess.CompletedProcess:
        """The role on the stacks named in `addresses` (each a host of the inventory, as
        inventory/local's sites), with the aggregator's addresses each may reach."""
        hosts = {
            f"egress-test-{service}": {
                "site_egress_bridge": BRIDGES[service],
                "site_egress_aggregator_addresses": allowed,
                "site_egress_aggregator_port": PORTS[0],
            }
            for service, allowed in addresses.items()
        }
        connection = {
            "ansible_connection": "community.docker.docker",
            "ansible_host": self.host,
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_pipelining": True,
        }
        inventory = self.workdir / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"vars": connection, "hosts": hosts}}))
        playbook = self.workdir / "egress.yml"
        playbook.write_text(yaml.safe_dump(PLAY))
        return run_ansible("ansible-playbook", "-i", str(inventory), str(playbook), *args, timeout=180)

    def remove(self) -> None:
        containers = [f"{self.name}-{c}" for c in ("host", "aggregator", "other")]
        sh("docker", "rm", "-f", "-v", *containers, check=False)
        sh("docker", "network", "rm", self.name, check=False)
        # The inner engine's cgroups (--cgroup-parent), left behind with its containers' processes.
        for hierarchy in Path("/sys/fs/cgroup").glob(f"**/{self.name}"):
            for directory in sorted(hierarchy.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                try:
                    directory.rmdir()
                except OSError:
                    pass


@pytest.fixture(scope="module")
def site_host(base_image, tmp_path_factory):
    image = host_image(base_image)
    host = SiteHost(image, tmp_path_factory.mktemp("egress"))
    try:
        host.start()
        yield host
    finally:
        host.remove()


def test_a_name_that_does_not_resolve_stops_the_role_before_the_host_changes(site_host) -> None:
    done = site_host.deploy(one=[site_host.ip["aggregator"], "aggregator.egress-test.invalid"])
    assert recap(done.output)["egress-test-one"]["failed"] == 1, done.output
    assert "Site egress-test-one (host egress-test-one)" in done.output, done.output
    assert "aggregator.egress-test.invalid do not resolve on this host" in done.output, done.output
    assert site_host.exec("test", "-e", "/usr/local/sbin/nbfed-egress-egress-test-b1", check=False).returncode
    assert "NBFED-EGR" not in site_host.rules()


def test_each_stack_reaches_its_aggregator_address_and_port_only(site_host) -> None:
    ip = site_host.ip
    targets = {  # the allowed first; remote machines (forwarded) and the host itself (INPUT)
        "one": [(ip["aggregator"], 8000), (ip["aggregator"], 9000), (ip["other"], 8000), (ip["host"], 8000),
                (ip["gateway"], 8000)],
        "two": [(ip["gateway"], 8000), (ip["gateway"], 9000), (ip["host"], 8000), (ip["aggregator"], 8000)],
    }  # fmt: skip
    before = {service: site_host.connect(service, *tried) for service, tried in targets.items()}
    assert {r for results in before.values() for r, _ in results.values()} == {"open"}, before  # the rules refuse

    allowed = {"one": [ip["aggregator"]], "two": ["host.docker.internal"]}
    done = site_host.deploy("--check", **allowed)  # on a fresh host: says what it would do, does nothing
    assert done.returncode == 0 and all(h["changed"] for h in recap(done.output).values()), done.output
    assert "NBFED-EGR" not in site_host.rules() and "nbfed-egress" not in site_host.exec("ls", "/usr/local/sbin").stdout
    done = site_host.deploy(**allowed)
    assert done.returncode == 0 and all(h["changed"] for h in recap(done.output).values()), done.output

    for service, tried in targets.items():
        results = site_host.connect(service, *tried)
        assert results[tried[0]][0] == "open", (service, results)
        for target in tried[1:]:  # rejected, not dropped: at once, and not as a refusing server
            result, seconds = results[target]
            assert "No route to host" in result and seconds < 2, (service, target, result, seconds)
    for iptables, reject in (("iptables", "icmp-admin-prohibited"), ("ip6tables", "icmp6-adm-prohibited")):
        rules = site_host.rules(iptables)
        for bridge in BRIDGES.values():
            assert f"-A DOCKER-USER -i {bridge} -j NBFED-EGR-{bridge}" in rules, rules
            assert f"-A INPUT -i {bridge} -j NBFED-EGR-{bridge}-IN" in rules, rules
            assert f"-A NBFED-EGR-{bridge} -j REJECT --reject-with {reject}" in rules, rules
            assert f"-A NBFED-EGR-{bridge}-IN -j REJECT --reject-with {reject}" in rules, rules


def test_the_stacks_lookups_beyond_dockers_own_names_are_rejected(site_host) -> None:
    """Docker's embedded DNS answers the stack's own names, but asks the upstream resolver from
    the container's namespace, through the bridge: the SuperNode cannot look the aggregator up."""
    site_host.exec("iptables", "-Z", "NBFED-EGR-egress-test-b1")
    one = site_host.connect("one", ("one", 8000), ("aggregator.egress-test.example", 8000))
    assert one["one", 8000][0].endswith("Connection refused"), one  # resolved: itself, which has no listener
    assert one["aggregator.egress-test.example", 8000][0] != "open", one
    counters = site_host.exec("iptables", "-L", "NBFED-EGR-egress-test-b1", "-v", "-x", "-n").stdout
    rejected = next(line.split()[0] for line in counters.splitlines() if "REJECT" in line)
    assert int(rejected) > 0, counters


def test_a_second_deploy_changes_nothing(site_host) -> None:
    assert_nothing_changed(site_host.deploy(one=[site_host.ip["aggregator"]], two=["host.docker.internal"]))
    assert [site_host.script(s, "check") for s in BRIDGES] == [0, 0]


def test_the_rules_outlive_an_engine_restart_and_apply_restores_them(site_host) -> None:
    aggregator = site_host.ip["aggregator"]
    ours = {rule for rule in site_host.rules().splitlines() if "NBFED-EGR" in rule}
    site_host.restart_engine()
    assert [site_host.script(s, "check") for s in BRIDGES] == [0, 0], site_host.rules()  # Docker kept DOCKER-USER's
    assert not site_host.reaches("one", aggregator, 9000)

    site_host.exec("iptables", "-F", "DOCKER-USER")  # as if the engine had made DOCKER-USER anew
    assert site_host.script("one", "check") == 3
    assert site_host.reaches("one", aggregator, 9000)
    assert [site_host.script(s, "apply") for s in BRIDGES] == [0, 0]
    assert [site_host.script(s, "check") for s in BRIDGES] == [0, 0]
    assert site_host.reaches("one", aggregator, 8000) and not site_host.reaches("one", aggregator, 9000)
    assert {rule for rule in site_host.rules().splitlines() if "NBFED-EGR" in rule} == ours


def test_remove_removes_only_that_stacks_rules(site_host) -> None:
    done = site_host.deploy("-e", "site_egress_state=absent", "-e", "site_egress_purge=true", one=[])
    assert recap(done.output)["egress-test-one"]["changed"] >= 1, done.output
    for iptables in ("iptables", "ip6tables"):
        rules = site_host.rules(iptables)
        assert "NBFED-EGR-egress-test-b1" not in rules, rules
        assert "NBFED-EGR-egress-test-b2-IN -j REJECT" in rules, rules
    assert site_host.exec("test", "-e", "/usr/local/sbin/nbfed-egress-egress-test-b1", check=False).returncode
    assert site_host.reaches("one", site_host.ip["aggregator"], 9000)
    assert site_host.script("two", "check") == 0
    assert site_host.reaches("two", site_host.ip["gateway"], 8000)
    assert not site_host.reaches("two", site_host.ip["gateway"], 9000)
