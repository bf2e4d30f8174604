"""Hosts for the multi-host tests: containers on a test network, each with its own address,
sshd and Docker Engine, built from Debian packages (tests/e2e/host/). Ansible reaches them
over real SSH with a key made for the session; a host not in the inventory (the intruder)
shows what the aggregator's firewall refuses.

    with Hosts(["aggregator", "site-a", "intruder"], workdir) as hosts:
        hosts.write_inventory(...)

Everything it creates (containers, their engines' volumes, the network) is removed on
exit, also when a test fails.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
NETWORK = "nbfed-e2e"
SUBNET = "172.30.57.0/24"
GATEWAY = "172.30.57.1"  # this machine (the control node), as the hosts see it
PREFIX = "nbfed-e2e-"
COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
# What the inner engines need without --privileged (see ENVIRONMENT.md); SYS_PTRACE lets
# `docker exec` (and so health checks) enter containers that run as another user.
ENGINE_ARGS = [
    "--cap-add",
    "SYS_ADMIN",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "MKNOD",
    "--cap-add",
    "SYS_PTRACE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--cgroupns",
    "host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/run",
]


def sh(*argv: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def host_image(base_image: str) -> str:
    """The host image, built once per content (Dockerfile, entrypoint, compose plugin, base)."""
    files = [HERE / "host" / "Dockerfile", HERE / "host" / "entrypoint.sh"]
    digest = hashlib.sha256(base_image.encode())
    for path in files:
        digest.update(path.read_bytes())
    digest.update(str(COMPOSE_PLUGIN.stat().st_size).encode())
    tag = f"nbfed/e2e-host:{digest.hexdigest()[:12]}"
    if sh("docker", "image", "inspect", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="nbfed-e2e-host-") as ctx:
        for path in files:
            shutil.copy2(path, ctx)
        shutil.copy2(COMPOSE_PLUGIN, Path(ctx) / "docker-compose")
        sh(
            "docker",
            "build",
            "-q",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "-t",
            tag,
            ctx,
            timeout=1200,
            env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        )
    return tag


class Hosts:
    """Named host containers with addresses .10 (aggregator), .21.. (sites), .99 (intruder)."""

    def __init__(self, names: list[str], workdir: Path, image: str) -> None:
        self.names, self.workdir, self.image = list(names), workdir, image
        self.key = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        net = SUBNET.rsplit(".", 1)[0]
        sites = iter(range(21, 99))
        self.address = {
            n: f"{net}.{10 if n == 'aggregator' else 99 if n == 'intruder' else next(sites)}" for n in names
        }

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Hosts:
        try:
            self.remove()  # what a killed earlier session may have left
            sh("docker", "network", "create", "--subnet", SUBNET, NETWORK)
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
            for name in self.names:
                self.start(name)
            for name in self.names:
                self.wait(name)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def start(self, name: str) -> None:
        if name not in self.address:
            self.names.append(name)
            net = SUBNET.rsplit(".", 1)[0]
            self.address[name] = f"{net}.{21 + sum(1 for n in self.address if n.startswith('site'))}"
        sh(
            "docker",
            "run",
            "-d",
            "--name",
            PREFIX + name,
            "--hostname",
            name,
            "--network",
            NETWORK,
            "--ip",
            self.address[name],
            *ENGINE_ARGS,
            "-v",
            f"{PREFIX}{name}:/var/lib/docker",
            self.image,
        )
        self.exec(
            name,
            "sh",
            "-c",
            "cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
            input=(self.key.with_suffix(".pub")).read_text(),
        )

    def wait(self, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.exec(name, "docker", "info", check=False).returncode != 0:
            if time.monotonic() > deadline:
                log = self.exec(name, "tail", "-n", "30", "/var/log/dockerd.log", check=False).stdout
                raise RuntimeError(f"the Docker Engine on host {name} did not start:\n{log}")
            time.sleep(1)
        scan = sh("ssh-keyscan", "-T", "5", self.address[name], check=False)
        with open(self.known_hosts, "a") as f:
            f.write(scan.stdout)

    def remove(self) -> None:
        running = sh("docker", "ps", "-aq", "--filter", f"name={PREFIX}", check=False).stdout.split()
        if running:
            sh("docker", "rm", "-f", "-v", *running, check=False)
        volumes = sh("docker", "volume", "ls", "-q", "--filter", f"name={PREFIX}", check=False).stdout.split()
        if volumes:
            sh("docker", "volume", "rm", "-f", *volumes, check=False)
        sh("docker", "network", "rm", NETWORK, check=False)

    # -- use ---------------------------------------------------------------------------
    def exec(
        self, name: str, *argv: str, check: bool = True, input: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        return sh("docker", "exec", "-i", PREFIX + name, *argv, check=check, input=input, timeout=timeout)

    def cap_link(self, name: str, rate: str | None) -> None:
        """Shape a host's link to `rate` (tc syntax: 100mbit) both ways with tbf, or lift the
        cap (None): what it sends on its eth0, what it receives on this machine's end of its
        veth pair."""
        peer = self.exec(name, "cat", "/sys/class/net/eth0/iflink").stdout.strip()
        links = dict(line.split(": ")[:2] for line in sh("ip", "-o", "link").stdout.splitlines())
        veth = links[peer].split("@")[0]
        if rate is None:
            self.exec(name, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            sh("tc", "qdisc", "del", "dev", veth, "root", check=False)
            return
        tbf = ["tbf", "rate", rate, "burst", "256kb", "latency", "100ms"]
        self.exec(name, "tc", "qdisc", "replace", "dev", "eth0", "root", *tbf)
        sh("tc", "qdisc", "replace", "dev", veth, "root", *tbf)

    def copy_to(self, name: str, source: Path, target: str) -> None:
        self.exec(name, "mkdir", "-p", str(Path(target).parent))
        sh("docker", "cp", str(source), f"{PREFIX}{name}:{target}")

    def write_inventory(
        self, path: Path, sites: list[str], group_vars: dict, host_vars: dict[str, dict] | None = None
    ) -> Path:
        """An inventory of the aggregator and `sites` (the intruder is left out, as it must be)."""
        ssh = {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        inventory = {
            "all": {
                "vars": {**ssh, **group_vars},
                "children": {
                    "aggregator": {
                        "hosts": {
                            "aggregator": {
                                "ansible_host": self.address["aggregator"],
                                "aggregator_address": self.address["aggregator"],
                            }
                        }
                    },
                    "sites": {
                        "hosts": {
                            s: {
                                "ansible_host": self.address[s],
                                "site_address": self.address[s],
                                "site_data_dir": "/srv/nbfed/data",
                                **(host_vars or {}).get(s, {}),
                            }
                            for s in sites
                        }
                    },
                },
            }
        }
        path.mkdir(parents=True, exist_ok=True)
        (path / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path


def group_vars(root: Path, base_image: str, **settings) -> dict:
    """The inventory's settings for a deployment named e2e on these hosts, images delivered as
    archives; the control node's files and the fetched results under `root`."""
    return {
        "nbfed_root": "{{ playbook_dir if (playbook_dir ~ '/ansible.cfg') is file else playbook_dir | dirname }}",
        "nbfed_deployment": "e2e",
        "nbfed_control_dir": str(root / "control"),
        "nbfed_home": "/opt/nbfed",
        "nbfed_results_dir": str(root / "results"),
        "nbfed_image_delivery": "archive",
        "nbfed_base_image": base_image,
        **settings,
    }


class Registry:
    """Debian's docker-registry on the control node, with TLS from a CA of its own; this
    machine's engine trusts it (to push), the playbook makes the hosts trust it (to pull)."""

    def __init__(self, workdir: Path, port: int = 5000) -> None:
        self.address = f"{GATEWAY}:{port}"
        self.workdir = workdir
        self.certs_d = Path("/etc/docker/certs.d") / self.address
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Registry:
        from nbfed.pki import make_pki

        pki = self.workdir / "pki"
        make_pki(pki, [GATEWAY], [], ca_name="nbfed e2e registry CA")
        self.ca = pki / "ca.crt"
        config = self.workdir / "config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}},
                    "http": {
                        "addr": self.address,
                        "tls": {"certificate": str(pki / "server.pem"), "key": str(pki / "server.key")},
                    },
                }
            )
        )
        self.certs_d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca, self.certs_d / "ca.crt")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=open(self.workdir / "registry.log", "w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while sh("curl", "-sf", "--cacert", str(self.ca), f"https://{self.address}/v2/", check=False).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(
                    f"docker-registry did not start: {(self.workdir / 'registry.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        shutil.rmtree(self.certs_d, ignore_errors=True)
