"""The multi-host tests' consortium: an aggregator and three sites deployed by deploy.yml over
real SSH (tests/e2e/harness.py makes the hosts), and what the tests do with it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from harness import Hosts, group_vars

ROOT = Path(__file__).resolve().parents[2]
SITES = ["site-a", "site-b", "site-c"]
ROUNDS = 1  # several rounds are the integration tier's (tests/integration/test_reliability.py)
AGGREGATOR_DIR = "/opt/nbfed/aggregator"  # nbfed_home is /opt/nbfed on every host
SITE_DIR = "/opt/nbfed/site"
CHECK_TLS = (
    "import ssl,sys,urllib.request as r;"
    "c=ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv)>2 else None;"
    "print(r.urlopen(sys.argv[1],timeout=10,context=c).status)"
)


def playbook_env() -> dict[str, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def playbook_argv(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ansible-playbook"), *args]


def ansible_playbook(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    done = subprocess.run(
        playbook_argv(*args), cwd=ROOT, env=playbook_env(), capture_output=True, text=True, timeout=timeout
    )
    done.output = done.stdout + done.stderr  # type: ignore[attr-defined]
    return done


def submitted_run(output: str) -> str:
    """The name of the run a playbook's output shows it submitted (its results directory's name)."""
    return re.findall(r"TASK \[run : Submit run (\S+)\]", output)[-1]


class Consortium:
    def __init__(self, hosts: Hosts, root: Path, base_image: str) -> None:
        self.hosts, self.root = hosts, root
        self.control, self.results = root / "control", root / "results"
        # SSH without -C (Ansible's default): the hosts share one machine's bridge, where
        # compressing each 1 GB image archive on one core costs about 30 s and saves nothing.
        self.group_vars = group_vars(
            root,
            base_image,
            nbfed_notebook="notebook/template.ipynb",
            nbfed_rounds=ROUNDS,
            nbfed_min_sites=len(SITES),
            nbfed_fraction_train=1.0,
            nbfed_round_timeout=600,
            site_clientapp_cpus="1.5",  # compose/site.yml sets no CPU limit on the ClientApps by default
            ansible_ssh_args="-o ControlMaster=auto -o ControlPersist=60s",
        )
        self.inventory = hosts.write_inventory(root / "inventory", SITES, self.group_vars)

    def playbook(self, playbook: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return ansible_playbook(playbook, "-i", str(self.inventory), *args, **kwargs)

    def start_playbook(self, playbook: str, *args: str) -> subprocess.Popen:
        """A playbook left running (its output: .communicate())."""
        argv = playbook_argv(playbook, "-i", str(self.inventory), *args)
        return subprocess.Popen(
            argv, cwd=ROOT, env=playbook_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def python(self, host: str, code: str, *args: str) -> subprocess.CompletedProcess:
        return self.hosts.exec(host, "python3", "-c", code, *args, check=False, timeout=60)

    @property
    def fleet(self) -> str:
        return f"{self.hosts.address['aggregator']}:8000"

    def runner(self, *args: str, volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """The aggregator stack's own runner with these arguments: what anyone in control of
        the aggregator host can do (it reaches SuperLink's Control API)."""
        mounts = [f"--volume={v}" for v in volumes]
        return self.hosts.exec(
            "aggregator",
            "sh",
            "-c",
            'cd "$0" && exec docker compose run --rm "$@"',  # in the stack's directory, as its .env says
            AGGREGATOR_DIR,
            *mounts,
            "runner",
            *args,
            check=False,
            timeout=600,
        )
