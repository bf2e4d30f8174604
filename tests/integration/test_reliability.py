"""Faults on a real local deployment (docs/reliability.md): sites that die or are cut off
mid-round, the aggregator restarted mid-run, its results volume full while checkpointing,
a site that cannot verify the aggregator's certificate, and a purge nobody confirmed.

The deployment is test_deploy's (the session fixture local_deployment), deployed here when
this module runs alone. Runs get a participation policy that tolerates one site out: two
sites start a round, a round waits 30 s for replies. Faults are
made from outside, as they happen: the SuperNode's process killed on its host (not `docker
kill`, which the restart policy would honour as an order), the site's packets dropped on its
host with iptables, SuperLink's container restarted, a small tmpfs under the results.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import torch
from local_deployment import CONTAINERS, SITES, Deployment, assert_ok, wait_for_event
from playbook import tree

from nbfed.warm_supernode import DEFAULT_HEARTBEAT_INTERVAL

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# nbfed_round_timeout: a round goes on without a site that has not answered by then. Well above
# a round on a busy machine (about 65 s with one of two cores taken, 10 s idle), so that only the
# faults leave sites out; a faulty round ends sooner, when SuperLink declares the site unavailable.
TIMEOUT = 120
POLICY = {"nbfed_min_sites": 2, "nbfed_round_timeout": TIMEOUT}
# The sites' heartbeat (nbfed's SuperNode launcher): SuperLink declares a silent site unavailable,
# and lets a crashed one's key in again, two intervals after its last heartbeat.
HEARTBEAT = float(DEFAULT_HEARTBEAT_INTERVAL)
# The dropouts run: rounds take about 11 s on an idle machine, the two faulty ones up to two
# heartbeat intervals more; a crashed SuperNode is back after about three intervals, a cut-off
# one about two after its network returns.
ROUNDS = 8


@pytest.fixture(scope="module")
def deployment(local_deployment) -> Deployment:
    if len(local_deployment.containers()) < CONTAINERS:
        assert_ok(local_deployment.playbook("deploy.yml", "--skip-tags", "run", timeout=1500))
    return local_deployment


def run_in_background(deployment: Deployment, pool: ThreadPoolExecutor, **extra):
    return pool.submit(deployment.playbook, "deploy.yml", "--tags", "run", timeout=1500, **POLICY, **extra)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def crash(container: str) -> None:
    """Kill the container's main process from its host, as a crash would."""
    pid = docker("inspect", "--format", "{{.State.Pid}}", container)
    subprocess.run(["kill", "-9", pid], check=True)


RAW_DROPS = [("PREROUTING", "-s"), ("PREROUTING", "-d"), ("OUTPUT", "-d")]  # both ways, on every network


@contextmanager
def cut_off(container: str) -> Iterator[None]:
    """Drop every packet to and from the container on its host (iptables raw table), then restore."""
    addresses = docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container)
    rules = [(chain, side, address) for address in addresses.split() for chain, side in RAW_DROPS]
    for chain, side, address in rules:
        subprocess.run(["iptables", "-t", "raw", "-I", chain, side, address, "-j", "DROP"], check=True)
    try:
        yield
    finally:
        for chain, side, address in rules:
            subprocess.run(["iptables", "-t", "raw", "-D", chain, side, address, "-j", "DROP"], check=True)


def left_out(round_: dict) -> dict[str, str]:
    """The sites a round went on without, and why (no reply in time, or Flower's error)."""
    return {**round_.get("errors", {}), **round_.get("missing", {})}


def rounds_of(run: Path) -> list[dict]:
    return json.loads((run / "rounds.json").read_text())


def test_sites_that_die_or_are_cut_off_miss_a_round_and_rejoin_with_the_same_identity(deployment) -> None:
    run = "dropouts"
    results = deployment.aggregator_results(run)
    restarts = int(docker("inspect", "--format", "{{.RestartCount}}", deployment.container("site-c")))
    with ThreadPoolExecutor(1) as pool:
        running = run_in_background(deployment, pool, run_name=run, nbfed_rounds=ROUNDS)
        # As a round starts: whether a site has pulled its message yet or is training, it can
        # no longer reply in this round.
        wait_for_event(results, "round_started", round=2)
        crashed_at = time.time()
        crash(deployment.container("site-c"))
        wait_for_event(results, "round_started", round=3)
        with cut_off(deployment.container("site-b")):
            wait_for_event(results, "round_finished", round=3)
        done = running.result()

    assert_ok(done)
    rounds = rounds_of(deployment.results / run)
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    identities = rounds[0]["sites"]
    assert sorted(identities) == list(SITES)
    # The crashed site is left out of its round, which goes on with the others once SuperLink
    # declares the site unavailable (no heartbeat for two intervals), before the round timeout.
    assert sorted(rounds[1]["sites"]) == ["site-a", "site-b"] and "site-c" in left_out(rounds[1]), rounds[1]
    assert rounds[1]["duration_s"] < TIMEOUT, rounds[1]
    assert "site-b" not in rounds[2]["sites"] and "site-b" in left_out(rounds[2]), rounds[2]
    # The start that SuperLink accepted (the container has run since) came once the old key's two
    # heartbeat intervals had lapsed, plus Docker's restart backoff and the SuperNode's start:
    # sooner than Flower's own 30 s heartbeat would even let the key in again (60 s).
    started = docker("inspect", "--format", "{{.State.StartedAt}}", deployment.container("site-c")).strip()
    accepted = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00").timestamp()
    assert 0 < accepted - crashed_at < 2 * HEARTBEAT + 30, (started, crashed_at)
    # Both are back by the last round, with the node ids they had (no new registration).
    assert rounds[-1]["sites"] == identities, rounds[-1]
    assert all(r["sites"][site] == identities[site] for r in rounds for site in r["sites"])
    # The restart policy brought the crashed SuperNode back, not the playbook.
    assert int(docker("inspect", "--format", "{{.RestartCount}}", deployment.container("site-c"))) > restarts
    assert 0.5 <= rounds[-1]["pooled"]["accuracy"] <= 1.0
    assert f"round 2/{ROUNDS}:" in done.output and "left out:" in done.output


def test_aggregator_restarted_mid_run_goes_on_from_the_last_checkpoint(deployment) -> None:
    run = "restart"
    results = deployment.aggregator_results(run)
    with ThreadPoolExecutor(1) as pool:
        running = run_in_background(deployment, pool, run_name=run, nbfed_rounds=2)
        wait_for_event(results, "round_started", round=2)
        docker("restart", f"nbfed-{deployment.name}-aggregator-superlink-1")
        done = running.result()

    assert_ok(done)
    fetched = deployment.results / run
    rounds = rounds_of(fetched)
    assert [r["round"] for r in rounds] == [1, 2], rounds  # round 2 was run again, once
    run_json = json.loads((fetched / "run.json").read_text())
    assert run_json["status"] == "completed"
    assert [r["after_round"] for r in run_json["resumes"]] == [1], run_json
    # SuperLink's state survived: the same nodes answered before and after, nobody registered again;
    # the resumed round waited until every site had reconnected to the restarted SuperLink, so no
    # site that was alive was left out of it.
    assert all(r["sites"] == rounds[0]["sites"] for r in rounds), rounds
    assert set(rounds[1]["awaited"]) == set(SITES), rounds[1]
    assert all(0 <= waited < TIMEOUT for waited in rounds[1]["awaited"].values()), rounds[1]
    assert "awaited" not in rounds[0]
    assert sorted(p.name for p in (fetched / "checkpoints").iterdir()) == ["round-2.pt"]
    assert torch.load(fetched / "model" / "global_model.pt", weights_only=True)
    assert "Resumed from the checkpoint of round 1" in (fetched / "report.md").read_text()


def test_a_full_results_volume_fails_the_run_keeps_the_last_checkpoint_and_the_run_resumes(deployment) -> None:
    run = "diskfull"
    results = deployment.aggregator_results(run)
    results.mkdir(parents=True)
    # Room for the app (its signed FAB too), the records and one checkpoint (about 100 kB), not
    # for the next one beside it.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=320k,uid=10001,gid=10001,mode=0755", "tmpfs", str(results)], check=True
    )
    try:
        docker("restart", f"nbfed-{deployment.name}-aggregator-superlink-1")  # SuperLink sees the new mount
        done = deployment.playbook("deploy.yml", "--tags", "run", timeout=1500, run_name=run, nbfed_rounds=2, **POLICY)
        assert done.returncode != 0
        said = " ".join(done.output.split())
        assert "the aggregator's results volume is full" in said, said[said.find("failed (exit") :][:3000]
        assert f"-e run_resume={run}" in said
        assert [p.name for p in (results / "checkpoints").iterdir()] == ["round-1.pt"]  # intact, nothing half-written
        assert torch.load(results / "checkpoints" / "round-1.pt", weights_only=True)
        assert not list(results.rglob(".*.tmp"))
        assert json.loads((results / "run.json").read_text())["status"] == "failed"

        subprocess.run(["mount", "-o", "remount,size=16m", str(results)], check=True)  # space freed
        done = deployment.playbook("deploy.yml", "--tags", "run", timeout=1500, run_resume=run)
        assert_ok(done)
        rounds = rounds_of(deployment.results / run)
        assert [r["round"] for r in rounds] == [1, 2]
        assert json.loads((deployment.results / run / "run.json").read_text())["status"] == "completed"
    finally:
        subprocess.run(["umount", str(results)], check=False)


def test_a_site_that_cannot_verify_the_aggregator_stops_the_deploy_at_once(deployment, tmp_path) -> None:
    other = tmp_path / "other-ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            str(tmp_path / "other-ca.key"),
            "-out",
            str(other),
            "-subj",
            "/CN=another CA",
            "-days",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    before = docker("inspect", "--format", "{{.State.StartedAt}}", deployment.container("site-b"))
    started = time.monotonic()
    done = deployment.playbook("deploy.yml", "--tags", "sites", "--limit", "site-b", site_ca_cert=str(other))
    assert done.returncode != 0
    assert time.monotonic() - started < 90  # not the SuperNode's endless retry
    said = " ".join(done.output.split())
    assert "Site site-b (host site-b): the aggregator at host.docker.internal:" in said, said[-3000:]
    assert "presented a certificate that the consortium CA certificate does not verify" in said
    # The running SuperNode was left alone; the next deploy puts the deployment's CA back.
    assert docker("inspect", "--format", "{{.State.StartedAt}}", deployment.container("site-b")) == before
    done = deployment.playbook("deploy.yml", "--tags", "sites", "--limit", "site-b")
    assert done.returncode == 0, done.output[-5000:]


def test_an_unconfirmed_purge_removes_nothing(deployment) -> None:
    kept = tree(deployment.control), tree(deployment.host_dir("local-aggregator") / "aggregator" / "results")
    done = deployment.playbook("playbooks/teardown.yml", teardown_purge=True)  # no terminal to answer
    assert done.returncode != 0
    assert "Purge not confirmed; nothing was removed" in " ".join(done.output.split())
    assert (tree(deployment.control), tree(deployment.host_dir("local-aggregator") / "aggregator" / "results")) == kept
    assert len(deployment.containers()) == CONTAINERS
