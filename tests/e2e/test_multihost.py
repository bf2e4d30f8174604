"""deploy.yml over real SSH to hosts with their own addresses and Docker Engines (an
aggregator, three sites, and an intruder outside the inventory), images delivered as
archives: the federation completes, and the firewall, TLS, node authentication and the
fleet-only proxy are checked from outside with real packets.

The tests share the session's consortium (conftest.py) and run in file order; the session
removes every host.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from consortium import CHECK_TLS, ROOT, ROUNDS, SITE_DIR, SITES, submitted_run
from harness import Registry

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_federation_completes_and_results_reach_the_control_node(consortium, deployed) -> None:
    run = consortium.results / submitted_run(deployed.output)
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(sorted(r["evaluate"]) == SITES for r in rounds), rounds
    assert (run / "report.md").is_file() and (run / "model" / "global_model.pt").stat().st_size > 0


def test_images_travelled_as_checksummed_archives(consortium, deployed) -> None:
    out = deployed.output
    assert "TASK [image_delivery : Stop when a copy differs from its archive]" in out, out[-3000:]
    for host in ["aggregator", *SITES]:
        images = consortium.hosts.exec(host, "docker", "images", "--format", "{{.Repository}}").stdout.split()
        expected = {"nbfed/aggregator", "nbfed/proxy"} if host == "aggregator" else {"nbfed/site"}
        assert expected <= set(images), (host, images)
        assert not consortium.hosts.exec(host, "sh", "-c", "ls /opt/nbfed/images 2>/dev/null").stdout.strip()


# Prints whether a TCP connection to HOST PORT opens within 5 s.
PORT_PROBE = (
    "import socket,sys;s=socket.socket();s.settimeout(5);"
    "print('open' if s.connect_ex((sys.argv[1],int(sys.argv[2])))==0 else 'closed')"
)


def test_firewall_admits_the_sites_and_drops_the_intruder(consortium, deployed) -> None:
    aggregator = consortium.hosts.address["aggregator"]
    for site in SITES:
        assert consortium.python(site, PORT_PROBE, aggregator, "8000").stdout.strip() == "open", site
    assert consortium.python("intruder", PORT_PROBE, aggregator, "8000").stdout.strip() == "closed"
    rules = consortium.hosts.exec("aggregator", "iptables", "-S", "NBFED-FLEET").stdout
    for site in SITES:
        assert f"-s {consortium.hosts.address[site]}/32 -j RETURN" in rules, rules
    assert rules.rstrip().endswith("-j DROP"), rules


def test_a_site_name_that_does_not_resolve_stops_the_firewall_stage_and_the_intruder_stays_out(
    consortium, deployed
) -> None:
    """The allow-list holds the addresses the role resolved when it ran: a site whose name the
    aggregator cannot resolve stops the stage, naming it, before the rules change."""
    hosts = consortium.hosts
    before = hosts.exec("aggregator", "iptables", "-S", "NBFED-FLEET").stdout
    unresolvable = "site-b.nbfed-e2e.invalid"
    changed = {"site-b": {"site_address": unresolvable}}
    hosts.write_inventory(consortium.inventory, SITES, consortium.group_vars, changed)
    try:
        done = consortium.playbook("playbooks/firewall.yml")
    finally:
        hosts.write_inventory(consortium.inventory, SITES, consortium.group_vars)
    assert done.returncode != 0
    said = " ".join(done.output.split())
    assert f"and {unresolvable} is IPv6 or a name that aggregator does not resolve to IPv4" in said, said[-3000:]
    assert "The firewall was not changed" in said
    assert hosts.exec("aggregator", "iptables", "-S", "NBFED-FLEET").stdout == before
    aggregator = hosts.address["aggregator"]
    assert consortium.python("intruder", PORT_PROBE, aggregator, "8000").stdout.strip() == "closed"
    assert consortium.python("site-b", PORT_PROBE, aggregator, "8000").stdout.strip() == "open"


def test_tls_is_required_and_verified_against_the_consortium_ca(consortium, deployed) -> None:
    ca = "/opt/nbfed/site/certs/ca.crt"
    fleet = consortium.fleet
    https = consortium.python("site-a", CHECK_TLS, f"https://{fleet}/health", ca)
    assert https.returncode == 0 and https.stdout.strip() == "200", https.stderr
    plain = consortium.python("site-a", CHECK_TLS, f"http://{fleet}/health")
    assert plain.returncode != 0, plain.stdout
    untrusted = consortium.python("site-a", CHECK_TLS, f"https://{fleet}/health", "/etc/ssl/certs/ca-certificates.crt")
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr


def test_control_api_is_not_reachable_through_the_fleet_port(consortium, deployed) -> None:
    code = (
        "import ssl,sys,urllib.request as r,urllib.error as e;c=ssl.create_default_context(cafile=sys.argv[2]);"
        "q=r.Request(sys.argv[1],data=b'',method='POST')\n"
        "try: print(r.urlopen(q,timeout=10,context=c).status)\n"
        "except e.HTTPError as x: print(x.code)"
    )
    done = consortium.python(
        "site-a", code, f"https://{consortium.fleet}/v1/control/list-runs", "/opt/nbfed/site/certs/ca.crt"
    )
    assert done.stdout.strip() == "403", done.stdout + done.stderr


def container_addresses(consortium, service: str) -> list[str]:
    """The addresses of the aggregator stack's SERVICE container, one per network."""
    done = consortium.hosts.exec(
        "aggregator",
        "sh",
        "-c",
        'docker inspect -f "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}" '
        '$(docker ps -q --filter label=com.docker.compose.service="$0")',
        service,
    )
    return done.stdout.split()


def test_superlink_answers_no_local_user_and_no_intruder_routing_to_it(consortium, deployed) -> None:
    """SuperLink's Control and Runtime APIs have no authentication (they start runs at every
    site): no user on the aggregator host but root (through Docker) and no host routing to the
    stack's networks reaches them; only the fleet port answers, through the proxy."""
    aggregator = consortium.hosts.address["aggregator"]
    [superlink] = container_addresses(consortium, "superlink")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c", PORT_PROBE]

    def as_nobody(host: str, port: int) -> str:
        return consortium.hosts.exec("aggregator", *nobody, host, str(port), check=False).stdout.strip()

    assert as_nobody(aggregator, 8000) == "open"  # the probe works, and the fleet port is public
    assert as_nobody(superlink, 8000) == "closed"
    assert as_nobody("127.0.0.1", 9093) == "closed"  # the loopback port it was once published on
    targets = [superlink, *container_addresses(consortium, "proxy")]
    try:
        for target in targets:  # the intruder shares the aggregator's LAN: it routes the stack's subnets there
            consortium.hosts.exec("intruder", "ip", "route", "replace", target, "via", aggregator)
        for target in targets:
            assert consortium.python("intruder", PORT_PROBE, target, "8000").stdout.strip() == "closed", target
    finally:
        for target in targets:
            consortium.hosts.exec("intruder", "ip", "route", "del", target, check=False)


def test_unregistered_supernode_is_refused(consortium, deployed) -> None:
    """A SuperNode with a key SuperLink never registered, from a site host, with the right CA."""
    site = consortium.hosts
    image = site.exec("site-a", "sh", "-c", "grep ^NBFED_SITE_IMAGE= /opt/nbfed/site/.env | cut -d= -f2").stdout.strip()
    site.exec(
        "site-a",
        "sh",
        "-c",
        "rm -rf /tmp/rogue && mkdir /tmp/rogue && ssh-keygen -q -t ecdsa -b 384 -N '' "
        "-f /tmp/rogue/node.key && chown -R 10001:10001 /tmp/rogue",
    )
    done = site.exec(
        "site-a",
        "timeout",
        "60",
        "docker",
        "run",
        "--rm",
        "-e",
        "NBFED_APP_TRUST=consortium",
        "-v",
        "/tmp/rogue:/keys:ro",
        "-v",
        "/opt/nbfed/site/certs:/certs:ro",
        image,
        f"--superlink={consortium.fleet}",
        "--root-certificates=/certs/ca.crt",
        "--auth-supernode-private-key=/keys/node.key",
        check=False,
        timeout=90,
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Failed to activate SuperNode" in said, said[-3000:]


def test_supernodes_run_unprivileged_with_no_port_and_read_only_data(consortium, deployed) -> None:
    for site in SITES:
        containers = {}
        for service in ("supernode", "clientapp"):
            name = f"nbfed-e2e-site-{site}-{service}-1"
            info = containers[service] = json.loads(consortium.hosts.exec(site, "docker", "inspect", name).stdout)[0]
            assert info["Config"]["User"] in ("10001:10001", "10001"), info["Config"]["User"]
            assert not info["HostConfig"]["PortBindings"] and not info["NetworkSettings"]["Ports"]
        # only the ClientApps see the data, read-only
        assert not any(m["Destination"] == "/data" for m in containers["supernode"]["Mounts"])
        data = next(m for m in containers["clientapp"]["Mounts"] if m["Destination"] == "/data")
        assert data["RW"] is False
        name = f"nbfed-e2e-site-{site}-clientapp-1"
        write = consortium.hosts.exec(site, "docker", "exec", name, "touch", "/data/x", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr


def test_second_deploy_changes_nothing_outside_the_run(consortium, deployed) -> None:
    done = consortium.playbook("deploy.yml", "--skip-tags", "run")
    assert done.returncode == 0, done.output[-5000:]
    changed = [line for line in done.output.splitlines() if line.startswith("changed:")]
    assert not changed, changed


def test_a_capped_link_carries_its_rate_and_rounds_cross_it(consortium, deployed) -> None:
    """bench/links.py's measurement, on this consortium (CI's smoke of that script): site-a's
    link capped with tc tbf carries about its rate both ways, and a float16 round of the
    overhead notebook cannot beat it (its bytes take longer than the round would uncapped)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import links

    measured = links.measure(
        consortium.hosts,
        str(consortium.inventory),
        consortium.results,
        ["site-a"],
        "10mbit",
        params=1_000_000,
        rounds=1,
        dtypes=["float16"],
    )
    link = measured["links"]["site-a"]
    assert 5 < link["download_mbit_s"] < 12 and 5 < link["upload_mbit_s"] < 12, link
    [run] = measured["runs"]
    assert run["rounds_s"][0] >= run["physical_limit_s"] > 3, run  # 2 MB each way at 10 Mbit/s
    assert "tbf" not in consortium.hosts.exec("site-a", "tc", "qdisc", "show", "dev", "eth0").stdout  # lifted


def test_a_damaged_image_archive_is_refused_before_it_is_copied(consortium, deployed) -> None:
    site_image = json.loads((consortium.control / "images.json").read_text())["NBFED_SITE_IMAGE"]
    archive = consortium.control / "images" / (site_image.replace("/", "_").replace(":", "_") + ".tar")
    with open(archive, "r+b") as f:  # one flipped byte, deep inside a layer: the manifest still reads
        f.seek(archive.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    consortium.hosts.exec("site-c", "docker", "rmi", "--force", site_image)  # site-c needs the image again

    done = consortium.playbook("deploy.yml", "--tags", "sites", "--limit", "site-c")
    assert done.returncode != 0, done.output[-5000:]
    said = " ".join(done.output.split())
    assert f"The control node's archive {archive} of {site_image} has sha256" in said, said[-3000:]
    assert "recorded when it was saved: it is corrupt or truncated" in said and "--tags build" in said
    assert not consortium.hosts.exec("site-c", "sh", "-c", "ls /opt/nbfed/images 2>/dev/null").stdout.strip()

    # The build stage saves the archive anew; then it travels and loads.
    done = consortium.playbook("deploy.yml", "--tags", "build,sites", "--limit", "localhost,site-c")
    assert done.returncode == 0, done.output[-5000:]
    assert (
        "changed: [localhost] => (item="
        in done.output.split("TASK [images : Save the images]", 1)[1].split("TASK [", 1)[0]
    )
    assert (
        site_image in consortium.hosts.exec("site-c", "docker", "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    )


@pytest.fixture(scope="module")
def registry(consortium):
    if shutil.which("docker-registry") is None:
        pytest.skip("Debian's docker-registry is not installed (apt-get install docker-registry; `make test` does)")
    with Registry(consortium.root / "registry") as registry:
        yield registry


def test_a_fourth_site_changes_only_itself_and_the_aggregator_and_joins_the_next_run(
    consortium, deployed, registry
) -> None:
    """site-d pulls its image from a registry (TLS with the registry's own CA, which the
    playbook installs on the host); the first three got theirs as archives."""
    hosts = consortium.hosts
    hosts.start("site-d")
    hosts.wait("site-d")
    hosts.copy_to("site-d", consortium.root / "data" / "site-a", "/srv/nbfed/data")
    consortium.group_vars.update(nbfed_registry=registry.address, nbfed_registry_ca=str(registry.ca))
    hosts.write_inventory(
        consortium.inventory,
        [*SITES, "site-d"],
        consortium.group_vars,
        {"site-d": {"nbfed_image_delivery": "registry"}},
    )

    done = consortium.playbook("deploy.yml")
    assert done.returncode == 0, done.output[-20000:]
    changed = {}
    task = ""
    for line in done.output.splitlines():
        if line.startswith("TASK ["):
            task = line[6 : line.index("]")]
        elif line.startswith("changed: ["):
            host = line[len("changed: [") :].split("]")[0].split(" -> ")[0]
            changed.setdefault(host, set()).add(task)
    assert set(changed) <= {"site-d", "aggregator", "localhost"}, changed
    # The control node pushed the images once (the only change there).
    assert changed.get("localhost", set()) <= {
        "images : Name the images for the registry",
        "images : Push the images (layers the registry has are skipped)",
    }, changed
    assert "image_delivery : Pull the images" in changed["site-d"], changed
    outside_the_run = {t for t in changed["aggregator"] if not t.startswith("run : ")}
    registry = {
        "aggregator : Give the sites' public keys to the stack",
        "aggregator : Register the sites' public keys with SuperLink",
    }
    assert all(t.startswith("firewall : ") or t in registry for t in outside_the_run), changed  # allow-list, nodes
    assert any(t.startswith("firewall : Apply the rules") for t in outside_the_run), changed
    assert registry <= outside_the_run, changed
    # ... and of the public keys, only site-d's was new to SuperLink's stack.
    given = done.output.split("TASK [aggregator : Give the sites' public keys to the stack]", 1)[1].split(
        "\nTASK [", 1
    )[0]
    assert [line for line in given.splitlines() if line.startswith("changed:")] == [
        "changed: [aggregator] => (item=site-d.pub)"
    ], given
    rules = hosts.exec("aggregator", "iptables", "-S", "NBFED-FLEET").stdout
    assert f"-s {hosts.address['site-d']}/32 -j RETURN" in rules, rules
    newest = max(
        (p for p in consortium.results.iterdir() if (p / "rounds.json").exists()), key=lambda p: p.stat().st_mtime
    )
    rounds = json.loads((newest / "rounds.json").read_text())
    assert all(sorted(r["evaluate"]) == [*SITES, "site-d"] for r in rounds), rounds


def registered(consortium) -> dict[str, list[dict]]:
    """The SuperNodes SuperLink admits, by site (`nbfed status` in the aggregator's runner)."""
    done = consortium.runner("status", "--superlink", "superlink:8000", "--ca", "/certs/ca.crt", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    nodes: dict[str, list[dict]] = {}
    for node in json.loads(done.stdout)["nodes"]:
        nodes.setdefault(node["name"], []).append(node)
    return nodes


def test_a_site_that_makes_a_new_key_keeps_one_node_and_a_removed_site_is_refused(consortium, deployed) -> None:
    """One node per site: site-c's new key replaces its old registration; site-d, taken out
    of the inventory, is unregistered by the next deploy."""
    before = registered(consortium)
    assert sorted(before) == [*SITES, "site-d"] and all(len(nodes) == 1 for nodes in before.values()), before
    consortium.hosts.exec("site-c", "rm", f"{SITE_DIR}/keys/node.key")  # its operator makes a new one
    consortium.hosts.write_inventory(consortium.inventory, SITES, consortium.group_vars)
    try:
        # Only site-c and the aggregator need the deploy: the registry is the aggregator's, and
        # it takes the inventory's sites from the inventory, whatever --limit says.
        done = consortium.playbook("deploy.yml", "--limit", "site-c,aggregator", "--skip-tags", "run")
        assert done.returncode == 0, done.output[-20000:]
        after = registered(consortium)
    finally:  # site-d goes back to the inventory, so that teardown removes its stack
        consortium.hosts.write_inventory(
            consortium.inventory,
            [*SITES, "site-d"],
            consortium.group_vars,
            {"site-d": {"nbfed_image_delivery": "registry"}},
        )
    assert sorted(after) == SITES, after
    [site_c] = after["site-c"]
    assert site_c["node-id"] != before["site-c"][0]["node-id"] and site_c["status"] == "online", after
    said = " ".join(done.output.split())  # the deploy's YAML output folds long lines
    assert f"site-d: not in the inventory: node {before['site-d'][0]['node-id']} unregistered" in said
    assert f"site site-c: its old key, replaced by its current one: node {before['site-c'][0]['node-id']}" in said


def test_teardown_leaves_no_container_and_keeps_results(consortium, deployed) -> None:
    before = sorted(p.relative_to(consortium.results) for p in consortium.results.rglob("*"))
    done = consortium.playbook("playbooks/teardown.yml")
    assert done.returncode == 0, done.output[-5000:]
    deployed_hosts = [name for name in consortium.hosts.names if name != "intruder"]  # site-d too, once it joined
    for host in deployed_hosts:
        assert consortium.hosts.exec(host, "docker", "ps", "-aq").stdout.strip() == "", host
    assert not consortium.hosts.exec("aggregator", "iptables", "-S", "NBFED-FLEET", check=False).returncode == 0
    assert sorted(p.relative_to(consortium.results) for p in consortium.results.rglob("*")) == before
