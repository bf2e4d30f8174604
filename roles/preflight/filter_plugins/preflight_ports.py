"""Who holds a port that a stack will publish: role preflight's port check.

Given the host's listening sockets (community.general.listen_ports_facts) and the containers
Docker says publish the port, name every holder that is not this deployment's own stack. Its
own containers, and the docker-proxy processes that publish their ports, may hold it: that is
a redeploy.
"""

from __future__ import annotations


def preflight_port_holders(listeners: list[dict], port: int, containers: list[str], own_prefix: str) -> list[str]:
    """'container NAME' and 'process NAME (pid N)' for each holder of `port` that is not ours."""
    others = [f"container {name}" for name in containers if not name.startswith(own_prefix)]
    published = bool(containers)  # docker-proxy then stands for the containers named above
    processes = {
        f"process {entry.get('name') or '?'} (pid {entry.get('pid') or '?'})"
        for entry in listeners or []
        if int(entry.get("port", -1)) == int(port) and not (published and entry.get("name") == "docker-proxy")
    }
    return others + sorted(processes)


def preflight_ports_taken(listeners: list[dict], published: list[dict], own_prefix: str) -> list[dict]:
    """{port, variable, holders} for each published port that someone else holds. `published` are
    community.docker.docker_host_info's loop results: the port and its inventory variable as
    `item`, the containers that publish the port."""
    taken = []
    for result in published:
        names = [name.lstrip("/") for container in result.get("containers", []) for name in container["Names"][:1]]
        if holders := preflight_port_holders(listeners, result["item"]["port"], names, own_prefix):
            taken.append({**result["item"], "holders": holders})
    return taken


class FilterModule:
    def filters(self):
        return {"preflight_ports_taken": preflight_ports_taken}
