"""Role preflight's port check: who holds a port the aggregator stack would publish."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "preflight_ports", ROOT / "roles/preflight/filter_plugins/preflight_ports.py"
)
preflight_ports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(preflight_ports)
holders = preflight_ports.preflight_port_holders
taken = preflight_ports.preflight_ports_taken

OURS = "nbfed-clarify-aggregator-"


def listener(port: int, name: str, pid: int) -> dict:
    return {"address": "0.0.0.0", "port": port, "name": name, "pid": pid, "protocol": "tcp"}


def test_a_free_port_has_no_holder() -> None:
    assert holders([listener(22, "sshd", 1)], 8000, [], OURS) == []


def test_a_redeploy_holds_its_own_ports() -> None:
    listeners = [listener(8000, "docker-proxy", 77), listener(8000, "docker-proxy", 78)]
    assert holders(listeners, 8000, ["nbfed-clarify-aggregator-proxy-1"], OURS) == []


def test_another_deployments_container_is_named() -> None:
    listeners = [listener(8000, "docker-proxy", 77)]
    assert holders(listeners, 8000, ["nbfed-other-aggregator-proxy-1"], OURS) == [
        "container nbfed-other-aggregator-proxy-1"
    ]


def test_a_process_is_named_with_its_pid() -> None:
    listeners = [listener(8000, "nginx", 501), listener(8000, "nginx", 501), listener(9093, "x", 2)]
    assert holders(listeners, "8000", [], OURS) == ["process nginx (pid 501)"]


def test_the_ports_taken_name_their_variable_and_every_holder() -> None:
    published = [
        {
            "item": {"variable": "aggregator_port", "port": 8000},
            "containers": [{"Names": ["/nbfed-x-aggregator-proxy-1"]}],
        },
        {"item": {"variable": "metrics_port", "port": 9093}, "containers": []},
        {
            "item": {"variable": "other_port", "port": 7000},
            "containers": [{"Names": ["/nbfed-clarify-aggregator-a-1"]}],
        },
    ]
    listeners = [listener(8000, "docker-proxy", 5), listener(9093, "sshd", 9), listener(7000, "docker-proxy", 6)]
    assert taken(listeners, published, OURS) == [
        {"variable": "aggregator_port", "port": 8000, "holders": ["container nbfed-x-aggregator-proxy-1"]},
        {"variable": "metrics_port", "port": 9093, "holders": ["process sshd (pid 9)"]},
    ]
