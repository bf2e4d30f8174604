"""nbfed's SuperLink: Flower's `flower-superlink`, with the nodes it remembers starting offline.

    python -m nbfed.superlink_launcher [flower-superlink arguments]     (the aggregator image runs this)

SuperLink keeps its nodes in its state database (`--database`), each with the time it counts as
online until (two heartbeat intervals after its last heartbeat). After a restart those times
still lie ahead, so for a while SuperLink lists sites as online that have not reconnected, and a
round sent then (a resumed run's, at once) leaves out sites that were alive but a little slow to
come back. This launcher marks every remembered node offline, through Flower's own state API,
before SuperLink starts: a site counts as online only once it has sent this SuperLink a
heartbeat, and a SuperNode that crashed meanwhile may activate its key again at once.
"""

from __future__ import annotations

import os
import sys


def database_path(argv: list[str]) -> str | None:
    """The `--database` SuperLink is started with (None: Flower's in-memory default)."""
    for i, arg in enumerate(argv):
        if arg == "--database" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--database="):
            return arg.split("=", 1)[1]
    return None


def mark_nodes_offline(database: str) -> list[int]:
    """Every node of `database` that SuperLink lists as online becomes offline now; their ids."""
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import NodeStatus
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager

    state = LinkStateFactory(database, NoOpFederationManager(), ObjectStoreFactory(database)).state()
    online = [node.node_id for node in state.get_node_info(statuses=[NodeStatus.ONLINE])]
    return [node_id for node_id in online if state.deactivate_node(node_id)]


def main(argv: list[str]) -> None:
    database = database_path(argv)
    if database and not database.startswith(":") and os.path.exists(database):
        marked = mark_nodes_offline(database)
        print(f"nbfed-superlink: {len(marked)} node(s) offline until their next heartbeat", file=sys.stderr, flush=True)
    os.execvp("flower-superlink", ["flower-superlink", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
