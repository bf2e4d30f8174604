"""nbfed's SuperLink: Flower's `flower-superlink`, with the nodes it remembers starting offline.

    python -m nbfed.superlink_launcher [flower-superlink arguments]     (the aggregator image runs this)

SuperLink keeps its nodes in its state database (`--database`), each with the time it counts as
online until (two heartbeat intervals after its last heartbeat). After a restart those times
still lie ahead, so for a while SuperLink lists sites as online that have not reconnected, and a
round sent then (a resumed run's, at once) leaves out sites that were alive but a little slow to
come back. This launcher marks every remembered node offline, through Flower's own state API,
before SuperLink starts: a site counts as online only once it has sent this SuperLink a
heartbeat, and a SuperNode that crashed meanwhile may activate its key again at once.

It also writes a new id to `$NBFED_RESULTS_ROOT/.superlink-boot` at every start: the runner,
which shares that directory, tells a SuperLink that restarted under a run (its ServerApp died
with it) from one that was only slow to answer (nbfed.superlink.follow).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

# A new id in this file of the results root at every start (write_boot_id).
BOOT_FILE = ".superlink-boot"


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


def write_boot_id(results_root: Path) -> None:
    """A new id in the results root at every start: the runner, which shares that directory,
    tells a SuperLink that restarted under a run from one that was only slow to answer."""
    try:
        partial = results_root / f"{BOOT_FILE}.partial"
        partial.write_text(uuid.uuid4().hex + "\n")
        partial.replace(results_root / BOOT_FILE)
    except OSError as e:
        print(f"nbfed-superlink: no boot id in {results_root} ({e})", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    if results_root := os.environ.get("NBFED_RESULTS_ROOT"):
        write_boot_id(Path(results_root))
    database = database_path(argv)
    if database and not database.startswith(":") and os.path.exists(database):
        marked = mark_nodes_offline(database)
        print(f"nbfed-superlink: {len(marked)} node(s) offline until their next heartbeat", file=sys.stderr, flush=True)
    os.execvp("flower-superlink", ["flower-superlink", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
