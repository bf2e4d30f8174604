"""The per-host .env files the roles render, read by `docker compose config` with the
compose files the roles copy: what each host's stack will be, without starting it (the
CUDA site's GPU reservation included, which no machine here can run; and compose/site.gpu.yml
over site.yml as they are)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "NBFED_AGGREGATOR_IMAGE": "nbfed/aggregator:a",
    "NBFED_PROXY_IMAGE": "nbfed/proxy:p",
    "NBFED_SITE_IMAGE": "nbfed/site:s-cpu",
    "NBFED_SITE_CUDA_IMAGE": "nbfed/site:s-cuda",
}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "roles"), undefined=jinja2.StrictUndefined)
    env.filters["bool"] = bool  # Ansible's (the values here are booleans already)
    return env


def render(template: str, **variables) -> str:
    return environment().get_template(template).render(ansible_managed="Ansible managed", **variables)


def layout(name: str, **variables):
    """A value of playbooks/vars/layout.yml (the stage playbooks pass it to the roles), for IMAGES."""
    value = yaml.safe_load((ROOT / "playbooks" / "vars" / "layout.yml").read_text())[name]
    if isinstance(value, dict):
        return {k: layout_value(v, variables) for k, v in value.items()}
    return layout_value(value, variables)


def layout_value(template: str, variables: dict) -> str:
    """The template rendered, with the layout values it names rendered first."""
    entries = yaml.safe_load((ROOT / "playbooks" / "vars" / "layout.yml").read_text())
    named = {
        k: layout_value(v, variables)
        for k, v in entries.items()
        if isinstance(v, str) and k != "nbfed_layout_images" and re.search(rf"\b{k}\b", template)
    }
    return environment().from_string(template).render(nbfed_layout_images=IMAGES, **named, **variables)


def compose_config(stack: Path, *args: str) -> dict:
    """`docker compose [args] config` in `stack`, as JSON (no engine needed, only the CLI)."""
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("no docker compose CLI here (bash .ci/docker-engine installs it)")
    done = subprocess.run(
        ["docker", "compose", *args, "config", "--format", "json"], cwd=stack, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def site_stack(tmp_path: Path, gpu: bool, aggregator: str, aggregator_ip: str = "", **limits: str) -> dict:
    """The site's services as the role deploys them (its vars/main.yml picks the files)."""
    pinned = bool(aggregator_ip) and aggregator not in ("host.docker.internal",) and not aggregator[0].isdigit()
    files = (
        ["site.yml"]
        + (["site.gpu.yml"] if gpu else [])
        + (["site.host-gateway.yml"] if aggregator == "host.docker.internal" else [])
        + (["site.pinned.yml"] if pinned else [])
    )
    for name in files:
        shutil.copy(ROOT / "compose" / name, tmp_path / name)
    limit_names = [f"site_{s}_{k}" for s in ("supernode", "clientapp") for k in ("memory", "cpus", "pids")]
    (tmp_path / ".env").write_text(
        render(
            "site/templates/site.env.j2",
            site_compose_files=files,
            site_project="nbfed-clarify-site-oslo",
            site_name="oslo",
            site_images=layout("nbfed_layout_site_images", site_gpu=gpu),
            site_aggregator_address=aggregator,
            site_aggregator_port=8000,
            site_aggregator_pinned=pinned,
            site_aggregator_ip=aggregator_ip,
            site_data_dir="/srv/nbfed/data",
            site_approval="manual",
            site_egress_bridge="nbfe-0123456789",
            site_sandbox_bridge="nbfs-0123456789",
            **{name: limits.get(name, "") for name in limit_names},
        )
    )
    config = compose_config(tmp_path)
    return config["services"] | {"networks": config["networks"]}


def test_cpu_site_stack(tmp_path) -> None:
    stack = site_stack(tmp_path, gpu=False, aggregator="fl.clarify.example")
    supernode, clientapp = stack["supernode"], stack["clientapp"]
    assert supernode["image"] == clientapp["image"] == "nbfed/site:s-cpu"
    assert "--superlink=fl.clarify.example:8000" in supernode["command"]
    assert '--node-config=site="oslo" data-dir="/data"' in supernode["command"]
    assert "--isolation=process" in supernode["command"]
    assert "deploy" not in supernode and "extra_hosts" not in supernode
    for service in (supernode, clientapp):
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"] and not service.get("ports")
        assert service["security_opt"] == ["no-new-privileges:true"]
    # The site's policy, and its trust: read-only but for what the SuperNode records.
    assert supernode["environment"]["NBFED_APP_TRUST"] == "manual"
    trust = {v["target"]: v.get("read_only", False) for v in supernode["volumes"] if v["target"].startswith("/trust")}
    assert trust == {"/trust/keys": True, "/trust/approvals": True, "/trust/revoked": True, "/trust/received": False}
    # The notebook's code: the data read-only and nothing else, on the stack's internal network only.
    assert [(v["source"], v["target"], v["read_only"]) for v in clientapp["volumes"]] == [
        ("/srv/nbfed/data", "/data", True)
    ]
    assert "/data" not in {v["target"] for v in supernode["volumes"]}
    assert set(clientapp["networks"]) == {"sandbox"} and set(supernode["networks"]) == {"egress", "sandbox"}
    assert stack["networks"]["sandbox"]["internal"] is True
    assert stack["networks"]["sandbox"]["driver_opts"] == {"com.docker.network.bridge.name": "nbfs-0123456789"}
    assert stack["networks"]["egress"]["driver_opts"] == {"com.docker.network.bridge.name": "nbfe-0123456789"}
    assert "--runtime-api-address=supernode:9094" in clientapp["command"]


def test_site_limits_have_defaults_and_follow_the_inventory(tmp_path) -> None:
    stack = site_stack(
        tmp_path, gpu=False, aggregator="203.0.113.10", site_clientapp_memory="4g", site_clientapp_pids="99"
    )
    supernode, clientapp = stack["supernode"], stack["clientapp"]
    assert (supernode["mem_limit"], supernode["cpus"], supernode["pids_limit"]) == (str(2 << 30), 2, 256)
    assert (clientapp["mem_limit"], clientapp["pids_limit"]) == (str(4 << 30), 99) and "cpus" not in clientapp


def test_gpu_variant_renders_the_device_reservation(tmp_path):
    env = tmp_path / ".env"
    env.write_text("NBFED_SITE_IMAGE=nbfed/site:x-cuda\nNBFED_SITE=site-a\n")
    site, gpu_file = ROOT / "compose" / "site.yml", ROOT / "compose" / "site.gpu.yml"
    cpu = compose_config(tmp_path, "--env-file", str(env), "-f", str(site))
    gpu = compose_config(tmp_path, "--env-file", str(env), "-f", str(site), "-f", str(gpu_file))
    assert "deploy" not in cpu["services"]["clientapp"]
    devices = gpu["services"]["clientapp"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}]
    assert "deploy" not in gpu["services"]["supernode"]  # the GPUs go where the notebook's code runs


def test_gpu_site_stack_reserves_the_gpus_and_runs_the_cuda_image(tmp_path) -> None:
    stack = site_stack(tmp_path, gpu=True, aggregator="203.0.113.10")
    assert stack["supernode"]["image"] == stack["clientapp"]["image"] == "nbfed/site:s-cuda"
    [device] = stack["clientapp"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_site_on_the_aggregators_machine_reaches_it_through_the_host_gateway(tmp_path) -> None:
    supernode = site_stack(tmp_path, gpu=False, aggregator="host.docker.internal", aggregator_ip="172.17.0.1")[
        "supernode"
    ]
    assert "--superlink=host.docker.internal:8000" in supernode["command"]
    assert supernode["extra_hosts"] in (["host.docker.internal=host-gateway"], ["host.docker.internal:host-gateway"])


def test_an_aggregator_name_is_pinned_to_the_address_the_egress_allow_list_admits(tmp_path) -> None:
    supernode = site_stack(tmp_path, gpu=False, aggregator="fl.clarify.example", aggregator_ip="203.0.113.10")[
        "supernode"
    ]
    assert supernode["extra_hosts"] in (["fl.clarify.example=203.0.113.10"], ["fl.clarify.example:203.0.113.10"])


@pytest.mark.parametrize("bind", ["0.0.0.0", "2001:db8::10"])
def test_aggregator_stack_publishes_the_fleet_port_and_nothing_of_superlink(tmp_path, bind) -> None:
    shutil.copy(ROOT / "compose" / "aggregator.yml", tmp_path)
    (tmp_path / ".env").write_text(
        render(
            "aggregator/templates/aggregator.env.j2",
            **{
                **yaml.safe_load((ROOT / "roles" / "aggregator" / "defaults" / "main.yml").read_text()),
                "aggregator_project": "nbfed-clarify-aggregator",
                "aggregator_images": layout("nbfed_layout_aggregator_images"),
                "aggregator_publish_address": bind,
                "aggregator_port": 8443,
                "aggregator_internal_bridge": "nbfa-0123456789",
                "aggregator_fleet_bridge": "nbff-0123456789",
                "aggregator_proxy_memory": "512m",  # as an inventory would set it
            },
        )
    )
    config = compose_config(tmp_path)
    services = config["services"]
    assert set(services) == {"superlink", "proxy"}  # the runner is a tool (profile), never started by `up`
    [fleet] = services["proxy"]["ports"]
    assert (fleet["host_ip"], fleet["published"], fleet["target"]) == (bind, "8443", 8000)
    assert "ports" not in services["superlink"]  # its Control and Runtime APIs have no authentication
    assert services["superlink"]["networks"].keys() == {"internal"}
    internal = config["networks"]["internal"]
    assert internal["internal"] is True
    assert internal["driver_opts"]["com.docker.network.bridge.name"] == "nbfa-0123456789"  # the firewall seals it
    # every service has its limits: compose's defaults, or the inventory's
    limits = {name: (service["mem_limit"], service["pids_limit"]) for name, service in services.items()}
    assert limits == {"superlink": (str(8 << 30), 512), "proxy": (str(512 << 20), 128)}, limits
