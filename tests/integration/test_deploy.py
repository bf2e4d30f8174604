"""deploy.yml on inventory/local, as a user runs it: a federation on real containers, then
idempotence, check mode, a new run after a code-only notebook edit, status, and teardown
followed by deploy keeping results, state and keys.

The deployment is the repository's inventory/local under another name (local_deployment.py,
the session fixture local_deployment, which test_reliability goes on using). The tests run in
file order and share that one deployment.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from conftest import smoke, wait_for
from local_deployment import CONTAINERS, SITES, Deployment, assert_ok, task_result
from playbook import ROOT, assert_nothing_changed, tree

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROUNDS = 2  # local_deployment's nbfed_rounds


def assert_run_completed(run: Path, rounds_asked: int = ROUNDS) -> None:
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == list(range(1, rounds_asked + 1)), rounds
    for r in rounds:
        assert sorted(r["train"]) == sorted(r["evaluate"]) == list(SITES), r
        assert 0.5 <= r["pooled"]["accuracy"] <= 1.0, r["pooled"]
    assert (run / "report.md").is_file() and (run / "metrics.png").stat().st_size > 0
    assert (run / "model" / "global_model.pt").stat().st_size > 0


def started(deployment: Deployment) -> dict[str, str]:
    """Each container of the deployment's stacks: its id and when it (last) started."""
    names = deployment.containers()
    done = subprocess.run(
        ["docker", "inspect", "--format", "{{.Name}} {{.Id}} {{.State.StartedAt}}", *names],
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split()[0].lstrip("/"): " ".join(line.split()[1:]) for line in done.stdout.splitlines()}


@pytest.fixture(scope="module")
def deployment(local_deployment) -> Deployment:
    return local_deployment


@pytest.fixture(scope="module")
def first_deploy(deployment) -> subprocess.CompletedProcess:
    return deployment.playbook("deploy.yml", "--diff", timeout=1500)  # as a cautious operator runs it


def test_deploy_completes_a_federation_and_shows_the_table(deployment, first_deploy) -> None:
    assert_ok(first_deploy)
    [run] = deployment.runs()
    assert_run_completed(run)
    said = first_deploy.output
    for n in range(1, ROUNDS + 1):
        assert f"round {n}/{ROUNDS}:" in said, said[-5000:]
    for metric in ("Sensitivity", "Specificity", "F1 score", "Accuracy"):
        assert metric in said.rsplit("TASK [run : Show the results]", 1)[1], said[-5000:]
    # --diff shows every file the deploy wrote, but no key: SuperLink's TLS key was copied too.
    assert "PRIVATE KEY" not in said and "+++ after" in said
    # Every stack runs, each site as its own compose project, every container healthy.
    names = deployment.containers()
    assert (
        f"nbfed-{deployment.name}-aggregator-superlink-1" in names
        and f"nbfed-{deployment.name}-aggregator-proxy-1" in names
    )
    for site in SITES:
        assert f"nbfed-{deployment.name}-site-{site}-supernode-1" in names, names
        # the notebook's code ran apart from the SuperNode, every ClientApp forked warm
        # (nbfed/warm_supernode.py), none started cold
        clientapp = f"nbfed-{deployment.name}-site-{site}-clientapp-1"
        logs = subprocess.run(["docker", "logs", clientapp], capture_output=True, text=True)
        logs = logs.stdout + logs.stderr
        assert "ClientApp zygote ready" in logs and "cold flwr-clientapp" not in logs, logs[-3000:]


def test_second_deploy_changes_nothing_outside_the_run(deployment, first_deploy) -> None:
    done = deployment.playbook("deploy.yml", "--skip-tags", "run")
    hosts = assert_ok(done)
    assert_nothing_changed(done)
    assert all(counts["ok"] > 0 for counts in hosts.values()), hosts


def test_check_mode_changes_nothing(deployment, first_deploy) -> None:
    before = tree(deployment.control)
    done = deployment.playbook("deploy.yml", "--check", "--skip-tags", "run")
    assert_ok(done)
    assert_nothing_changed(done)
    assert tree(deployment.control) == before


def test_status_shows_every_site_online(deployment, first_deploy) -> None:
    done = deployment.playbook("playbooks/status.yml")
    assert_ok(done, control_node=False)
    assert_nothing_changed(done)
    shown = done.output.rsplit("TASK [status : Show the SuperNodes and runs]", 1)[1]
    assert len(re.findall(r"│ online +│", shown)) == len(SITES), shown
    assert "finished:completed" in shown, shown


def test_run_after_a_code_only_edit_builds_nothing_and_runs_the_new_code(
    deployment, first_deploy, docker_client
) -> None:
    notebook = nbformat.read(ROOT / "notebook" / "template.ipynb", as_version=4)
    [train] = [c for c in notebook.cells if "train" in c.metadata.get("tags", [])]
    train.source += "\n\nEDITED_BY_TEST = True  # a code-only edit\n"
    edited = deployment.root / "notebooks" / "template.ipynb"
    edited.parent.mkdir(exist_ok=True)
    nbformat.write(notebook, edited)
    images = {i.id for i in docker_client.images.list()}
    stacks = started(deployment)

    done = deployment.playbook("playbooks/run.yml", timeout=1200, nbfed_notebook=str(edited), nbfed_rounds=1)
    hosts = assert_ok(done)

    assert task_result(done.output, "images : Build the images (cached by content)", "localhost") == "ok"
    assert {i.id for i in docker_client.images.list()} == images
    assert all(hosts[site]["changed"] == 0 for site in SITES), hosts  # no stack was touched
    # ... nor even walked: every stack was current, so each host's stage ended at the check
    assert started(deployment) == stacks  # same containers, not restarted
    for role, host in (("aggregator", "local-aggregator"), ("site", SITES[0])):
        assert (
            task_result(done.output, "stack_current : List the stack's healthy services and their images", host) == "ok"
        )
        assert f"TASK [{role} : Create the stack's directories]" not in done.output, done.output[-5000:]
    first, second = deployment.runs()
    assert_run_completed(second, rounds_asked=1)
    assert "EDITED_BY_TEST" in "".join(p.read_text() for p in (second / "app").rglob("task.py"))
    assert "EDITED_BY_TEST" not in "".join(p.read_text() for p in (first / "app").rglob("task.py"))


def health(container: str) -> str:
    done = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", container], capture_output=True, text=True
    )
    return done.stdout.strip()


def test_run_brings_back_a_stack_that_is_down(deployment, first_deploy) -> None:
    """run.yml leaves current stacks alone, but not one that is down: that one is deployed,
    its ClientApp container too, which turned unhealthy without its SuperNode."""
    subprocess.run(["docker", "stop", deployment.container("site-c")], check=True, capture_output=True)
    clientapp = f"nbfed-{deployment.name}-site-site-c-clientapp-1"
    wait_for(lambda: health(clientapp) == "unhealthy", timeout=90, what=f"{clientapp} to turn unhealthy")
    before = started(deployment)

    done = deployment.playbook("playbooks/run.yml", timeout=1200, nbfed_rounds=1)
    assert_ok(done)

    assert task_result(done.output, "site : Start the SuperNode and wait until it is healthy", "site-c") == "changed"
    after = started(deployment)
    assert after[deployment.container("site-c")] != before[deployment.container("site-c")]
    assert {k: v for k, v in after.items() if "site-c" not in k} == {
        k: v for k, v in before.items() if "site-c" not in k
    }
    assert health(clientapp) == "healthy"
    assert_run_completed(deployment.runs()[-1], rounds_asked=1)


def test_a_link_the_serverapp_left_for_the_next_run_is_refused_not_followed(deployment, first_deploy, tmp_path) -> None:
    """The aggregator's results/ belongs to the ServerApp's user, that is to the notebook's code:
    a link it leaves where a run's directory goes must not make root chown the directory it
    points to, nor fetch from it."""
    host_dir = tmp_path / "host-only"  # stands for /etc: a directory of the aggregator host, root's
    host_dir.mkdir(mode=0o755)
    (host_dir / "secret").write_text("the host's own\n")
    before = host_dir.stat()
    superlink = f"nbfed-{deployment.name}-aggregator-superlink-1"
    # What the ServerApp can do: its user, in its container, whose /results is the host's results/.
    planted = ["docker", "exec", "--user", "10001", superlink, "ln", "-s", str(host_dir), "/results/planted"]
    subprocess.run(planted, check=True, capture_output=True)
    try:
        done = deployment.playbook("playbooks/run.yml", timeout=600, run_name="planted", nbfed_rounds=1)
    finally:
        (deployment.aggregator_results("planted")).unlink()
    assert done.returncode != 0
    said = done.output
    assert f"is a link to {host_dir}, not a directory" in " ".join(said.split()), said[-3000:]
    after = host_dir.stat()
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)
    assert "TASK [run : Submit run" not in said and not (deployment.results / "planted" / "secret").exists()
    # and no other user of the host reads what the runs wrote
    results = deployment.aggregator_results("planted").parent
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [results, *results.iterdir()] if p.is_dir()}
    assert set(modes.values()) == {"0o700"}, modes


def memory_mib(container: str) -> float:
    done = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container], capture_output=True, text=True
    )
    used = done.stdout.split("/")[0].strip()
    scale = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    return float(used[:-3]) * scale[used[-3:]]


def test_the_fleet_port_bounds_what_a_stranger_can_make_the_aggregator_do(deployment, first_deploy) -> None:
    """SuperLink authenticates a node only once it has read a whole request: before that, the
    proxy refuses a 2 GB body at its Content-Length, and every container has its limits."""
    env = (deployment.host_dir("local-aggregator") / "aggregator" / ".env").read_text()
    host, port = re.search(r"^NBFED_FLEET_PUBLISH=(.+):(\d+)$", env, re.M).groups()
    context = ssl.create_default_context(cafile=deployment.control / "pki" / "ca.crt")
    context.check_hostname = False  # the certificate names the sites' address for it
    superlink = f"nbfed-{deployment.name}-aggregator-superlink-1"
    before = memory_mib(superlink)
    head = (
        "POST /v1/fleet/push-object HTTP/1.1\r\nHost: aggregator\r\nContent-Type: application/protobuf\r\n"
        "Content-Length: 2147483648\r\n\r\n"
    )
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(head.encode() + b"\0" * 65536)
        status = tls.recv(4096).split(b"\r\n", 1)[0]
    assert b" 413 " in status, status
    assert time.monotonic() - started < 5
    assert memory_mib(superlink) < before + 50
    for name in deployment.containers():
        limits = subprocess.run(
            ["docker", "inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert all(int(limit) > 0 for limit in limits), (name, limits)


def test_teardown_then_deploy_keeps_results_state_and_keys(deployment, first_deploy) -> None:
    keys = {site: (deployment.host_dir(site) / "site" / "keys" / "node.key.pub").read_text() for site in SITES}
    pki = tree(deployment.control / "pki")
    results = tree(deployment.results)

    done = deployment.playbook("playbooks/teardown.yml", timeout=300)
    assert_ok(done)
    assert deployment.containers() == []
    volumes = subprocess.run(["docker", "volume", "ls", "--format", "{{.Name}}"], capture_output=True, text=True).stdout
    assert f"nbfed-{deployment.name}-aggregator_state" in volumes.split()
    assert tree(deployment.results) == results

    done = deployment.playbook("deploy.yml", "--skip-tags", "run")
    assert_ok(done)
    # Same node keys, still registered in SuperLink's kept state; same PKI; results untouched.
    for site in SITES:
        assert (deployment.host_dir(site) / "site" / "keys" / "node.key.pub").read_text() == keys[site]
        assert (
            f"ok: [local-aggregator] => (item={site}.pub)"
            in done.output.split("TASK [aggregator : Give the sites' public keys to the stack]", 1)[1].split(
                "\nTASK [", 1
            )[0]
        )
    assert (
        task_result(done.output, "aggregator : Register the sites' public keys with SuperLink", "local-aggregator")
        == "ok"
    )
    assert tree(deployment.control / "pki") == pki
    assert tree(deployment.results) == results
    assert len(deployment.containers()) == CONTAINERS


def test_the_deploy_benchmark_reads_the_stages_of_a_real_deploy(deployment, first_deploy, monkeypatch) -> None:
    """bench/deploy.py times stages from profile_tasks' lines: keep it reading real output."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # bench/deploy.py imports bench/common.py, as its scripts do
    spec = importlib.util.spec_from_file_location("bench_deploy", ROOT / "bench" / "deploy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    total = bench.timeline(first_deploy.output)[-1][1]
    stages = bench.stages(first_deploy.output, total)
    assert list(stages)[:3] == ["Preflight", "Build", "PKI"] and list(stages)[-1] == "Run", stages
    assert abs(sum(stages.values()) - total) < 1 and all(t >= 0 for t in stages.values()), stages
    assert 0 < bench.until(first_deploy.output, "TASK [run : Submit run") < total


def test_the_deploy_benchmark_times_an_edit_to_training(deployment, first_deploy, tmp_path) -> None:
    """bench/deploy.py --smoke on this running deployment (left running): keep the script working.
    On a running deployment it times one edit only; the test above reads this module's deploy
    with the script's own functions."""
    results = smoke("deploy.py", tmp_path / "deploy.json", "--on", json.dumps(deployment.extra), timeout=900)["results"]
    assert list(results) == ["notebook edit to training"], results
    edit = results["notebook edit to training"]
    assert 0 < edit["round 1 sent to every site"]["median"] < edit["round 1 done"]["median"]
    assert len(deployment.containers()) == CONTAINERS
