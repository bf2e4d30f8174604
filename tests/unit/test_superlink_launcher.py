"""nbfed's SuperLink launcher, on a real Flower state database: the nodes SuperLink remembers as
online start offline, and a heartbeat (or a crashed SuperNode's new activation) brings each back."""

from __future__ import annotations

from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import NodeStatus
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.superlink.federation import NoOpFederationManager

from nbfed.superlink_launcher import database_path, mark_nodes_offline


def state(database: str):
    return LinkStateFactory(database, NoOpFederationManager(), ObjectStoreFactory(database)).state()


def statuses(database: str) -> dict[int, str]:
    return {node.node_id: node.status for node in state(database).get_node_info()}


def test_remembered_nodes_are_offline_until_they_are_heard_from_again(tmp_path) -> None:
    database = str(tmp_path / "state.db")
    before = state(database)
    alive, crashed, registered = (before.create_node("o", "o", key, 10) for key in (b"a", b"b", b"c"))
    before.activate_node(alive, 10)
    before.activate_node(crashed, 10)

    assert sorted(mark_nodes_offline(database)) == sorted([alive, crashed])
    assert statuses(database) == {alive: "offline", crashed: "offline", registered: "registered"}

    after = state(database)  # as SuperLink sees it once started
    assert after.acknowledge_node_heartbeat(alive, 10)  # a SuperNode that reconnects
    assert after.activate_node(crashed, 10)  # one that restarted: its key is taken again at once
    assert {n.node_id for n in after.get_node_info(statuses=[NodeStatus.ONLINE])} == {alive, crashed}


def test_the_database_is_read_from_superlinks_own_arguments() -> None:
    assert database_path(["--ssl-certfile=x", "--database=/state/state.db", "--port=8000"]) == "/state/state.db"
    assert database_path(["--database", "/state/state.db"]) == "/state/state.db"
    assert database_path(["--insecure"]) is None
