"""One registered SuperNode per site, and none for a site the inventory no longer names.

`nbfed register` gives SuperLink each site's current public key, named after the site. A
site that made a new key would otherwise count twice (in quorum and in the average), and a
site removed from the inventory would keep its access: `plan` says which registrations go.

`python -m nbfed.node_registry CONNECTION KEY...` lists SuperLink's SuperNodes with the name
and public key of each (`flwr supernode list` shows neither) through Flower's own Control API
client and the connection in FLWR_HOME (SuperLinkClient runs it with the environment it
gives `flwr`), and reads each key file with the function `flwr supernode register` uses, so
that the bytes compare. It prints JSON: {"success", "nodes": [{"node-id", "name", "status",
"key", "created-at", "online-at"}], "keys": {path: key}} (keys as hex), or {"success": false,
"error-message"}.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

UNREGISTERED = "unregistered"  # Flower's NodeStatus: the key is refused, and never taken again


@dataclass
class Plan:
    register: list[str] = field(default_factory=list)  # sites whose current key SuperLink lacks
    unregister: dict[int, str] = field(default_factory=dict)  # node id: why it goes
    refused: dict[str, str] = field(default_factory=dict)  # site: why its key cannot be registered


def plan(nodes: list[dict], keys: dict[str, str], inventory: list[str] | None) -> Plan:
    """What to do so that each site in `keys` (site: current key) has exactly its current key
    registered and, when `inventory` is given, no node is registered for a site outside it."""
    result = Plan()
    for site, key in keys.items():
        holder = next((node for node in nodes if node["key"] == key), None)
        if holder is None:
            result.register.append(site)
        elif holder["status"] == UNREGISTERED:
            result.refused[site] = (
                f"its public key was unregistered (node {holder['node-id']}, {holder['name'] or 'no name'}), and "
                "SuperLink never takes a key back: make the site a new key (remove keys/node.key in its "
                "stack's directory on its host) and deploy again"
            )
        elif holder["name"] != site:
            result.refused[site] = f"its public key is registered as {holder['name'] or 'a node with no name'}"
    for node in nodes:
        if node["status"] == UNREGISTERED:
            continue
        if node["name"] in keys and node["key"] != keys[node["name"]]:
            result.unregister[node["node-id"]] = f"site {node['name']}: its old key, replaced by its current one"
        elif inventory is not None and node["name"] not in inventory:
            result.unregister[node["node-id"]] = f"{node['name'] or 'a node with no name'}: not in the inventory"
    return result


def registry(connection_name: str, keys: list[Path]) -> dict:
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import ListNodesRequest  # pylint: disable=E0611

    client = init_http_client_from_connection(read_superlink_connection(connection_name))
    try:
        answer = client.ListNodes(ListNodesRequest())
    finally:
        client.close()
    nodes = [
        {
            "node-id": node.node_id,
            "name": node.name,
            "status": node.status,
            "key": node.public_key.hex(),
            "created-at": node.registered_at,
            "online-at": node.last_activated_at if node.HasField("last_activated_at") else "",
        }
        for node in answer.nodes_info
    ]
    return {"success": True, "nodes": nodes, "keys": {str(key): try_load_public_key(key).hex() for key in keys}}


if __name__ == "__main__":
    try:
        print(json.dumps(registry(sys.argv[1], [Path(p) for p in sys.argv[2:]])))
    except (Exception, SystemExit) as e:  # noqa: BLE001 (the caller reads the reason, as from `flwr`)
        print(json.dumps({"success": False, "error-message": f"{type(e).__name__}: {e}"}))
