"""The generated ServerApp's guards around Flower: a bounded wait for the participation
policy's sites, and replies handed over as they arrive (not every 3 s, not all at once). Stand-ins replace the Grid and
the strategy here (logic only); tests/integration/test_reliability.py runs the real thing."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from notebooks import generated_module


@pytest.fixture(scope="module")
def server_app(tmp_path_factory):
    with generated_module(tmp_path_factory.mktemp("app"), "server_app") as module:
        yield module


class Grid:
    """Nodes online, and replies that arrive `delays` seconds after the push (None: never)."""

    def __init__(self, online: int, delays: tuple[float | None, ...] = ()) -> None:
        self.online, self.delays, self.ready_at = online, delays, {}

    def get_node_ids(self):
        return list(range(self.online))

    def push_messages(self, messages):
        now = time.monotonic()
        self.ready_at = {f"m{i}": None if d is None else now + d for i, d in zip(range(len(messages)), self.delays, strict=False)}
        return list(self.ready_at)

    def pull_messages(self, ids):
        ready = [i for i in ids if self.ready_at.get(i) is not None and self.ready_at[i] <= time.monotonic()]
        for i in ready:
            del self.ready_at[i]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def strategy(min_available: int):
    return SimpleNamespace(min_available_nodes=min_available, configure_train=lambda r, *a: ["train", r],
                           configure_evaluate=lambda r, *a: ["evaluate", r])


def test_a_round_starts_once_enough_sites_are_online(server_app) -> None:
    s = strategy(2)
    server_app._bound_quorum_wait(s, Grid(online=2), timeout=5)
    assert s.configure_train(3) == ["train", 3] and s.configure_evaluate(3) == ["evaluate", 3]


def test_a_round_without_enough_sites_fails_with_the_reason(server_app) -> None:
    s = strategy(3)
    server_app._bound_quorum_wait(s, Grid(online=1), timeout=0.5)
    with pytest.raises(RuntimeError, match=r"round 4 cannot start: 1 site\(s\) online, the participation policy needs 3"):
        s.configure_train(4)
    with pytest.raises(RuntimeError, match="round 4 cannot evaluate"):
        s.configure_evaluate(4)


def test_replies_are_handed_over_as_they_arrive(server_app) -> None:
    grid = Grid(online=3, delays=(0.6, 0.05, 0.3))
    server_app._stream_replies(grid)
    started = time.monotonic()
    replies = grid.send_and_receive(["a", "b", "c"], timeout=10)
    assert grid.ready_at, "the messages are pushed at once, before any reply is asked for"
    arrived = [(r.metadata.reply_to_message_id, time.monotonic() - started) for r in replies]
    assert [m for m, _ in arrived] == ["m1", "m2", "m0"]
    assert arrived[0][1] < 0.3, "the first reply is handed over before the others are in"
    assert arrived[-1][1] < 1, "polled every 0.1 s, not every 3 s"


def test_a_timeout_returns_the_replies_that_came(server_app) -> None:
    grid = Grid(online=3, delays=(0.05, None))
    server_app._stream_replies(grid)
    started = time.monotonic()
    assert [r.metadata.reply_to_message_id for r in grid.send_and_receive(["a", "b"], timeout=0.3)] == ["m0"]
    assert 0.3 <= time.monotonic() - started < 1
