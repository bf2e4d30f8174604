"""inventory/local under a test name: a deployment on real containers that leaves a
developer's own local deployment alone (its own compose projects, free ports, control and
host directories in a temporary tree, small synthetic data). Used by test_deploy and
test_reliability, each with its own deployment."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from playbook import recap, run_ansible

from nbfed.local import free_port
from nbfed.synth import generate

SITES = ("site-a", "site-b", "site-c")
# Every container of the deployment: SuperLink and the proxy, and each site's SuperNode and ClientApps.
CONTAINERS = 2 + 2 * len(SITES)


class Deployment:
    """inventory/local named `name`, every path in `root`."""

    def __init__(self, name: str, root: Path, base_image: str, **settings: Any) -> None:
        self.name = name
        self.root = root
        self.control = root / "control"
        self.results = root / "results"
        self.data = root / "data"
        self.extra = {
            "nbfed_deployment": name,
            "nbfed_control_dir": str(self.control),
            "nbfed_results_dir": str(self.results),
            "nbfed_local_data": str(self.data),
            "nbfed_base_image": base_image,
            "aggregator_port": free_port(),
            **settings,
        }
        generate(self.data, scale=0.05)

    def playbook(self, playbook: str, *args: str, timeout: int = 900, **extra) -> subprocess.CompletedProcess:
        return run_ansible(
            "ansible-playbook",
            playbook,
            "-i",
            "inventory/local",
            "-e",
            json.dumps({**self.extra, **extra}),
            *args,
            timeout=timeout,
        )

    def purge(self) -> None:
        done = self.playbook("playbooks/teardown.yml", timeout=300, teardown_purge=True, teardown_purge_confirmed=True)
        assert done.returncode == 0, done.output[-5000:]
        assert not self.containers()

    def host_dir(self, host: str) -> Path:
        return self.control / "hosts" / host

    def aggregator_results(self, run: str) -> Path:
        """A run's results as the ServerApp writes them, on the aggregator host."""
        return self.host_dir("local-aggregator") / "aggregator" / "results" / run

    def container(self, site: str) -> str:
        return f"nbfed-{self.name}-site-{site}-supernode-1"

    def runs(self) -> list[Path]:
        return (
            sorted(p for p in self.results.iterdir() if (p / "rounds.json").exists()) if self.results.exists() else []
        )

    def containers(self) -> list[str]:
        done = subprocess.run(
            ["docker", "ps", "-a", "--filter", f"name=nbfed-{self.name}-", "--format", "{{.Names}}"],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.split()


def events(results: Path) -> list[dict[str, Any]]:
    path = results / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_event(results: Path, kind: str, timeout: float = 600, **fields: Any) -> dict[str, Any]:
    """The first event of `kind` with `fields` the ServerApp writes (already or within `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events(results):
            if event["event"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event
        time.sleep(0.5)
    raise AssertionError(f"no {kind} {fields} event in {results} within {timeout} s: {events(results)}")


def assert_ok(done: subprocess.CompletedProcess, control_node: bool = True) -> dict[str, dict[str, int]]:
    assert done.returncode == 0, done.output[-20000:]
    hosts = recap(done.output)
    assert set(hosts) == {"local-aggregator", *SITES} | ({"localhost"} if control_node else set()), done.output[-5000:]
    return hosts


def task_result(output: str, task: str, host: str) -> str:
    """'ok', 'changed', 'skipping' or 'failed': what `task` reported for `host` (the last time it
    ran there: a task of a role that several plays run, such as stack_current, has a block per play)."""
    blocks = [block.split("\nTASK [", 1)[0] for block in output.split(f"TASK [{task}]")[1:]]
    for block in reversed(blocks):
        for status in ("changed", "ok", "skipping", "fatal"):
            if f"{status}: [{host}]" in block or f"{status}: [{host} -> " in block:  # (or delegated)
                return status
    raise AssertionError(f"no result of {task!r} for {host} in:\n{blocks[-1] if blocks else output[-5000:]}")
