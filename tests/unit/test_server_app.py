"""The generated ServerApp's guards around Flower: a bounded wait for the participation
policy's sites, a resumed run's wait for its sites, and replies handed over as they arrive (not
every 3 s, not all at once). Stand-ins replace the Grid and the strategy here (logic only);
tests/integration/test_reliability.py runs the real thing."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from notebooks import generated_module


@pytest.fixture(scope="module")
def participation(tmp_path_factory):
    with generated_module(tmp_path_factory.mktemp("app"), "participation") as module:
        yield module


@pytest.fixture(scope="module")
def wrappers(tmp_path_factory):
    with generated_module(tmp_path_factory.mktemp("app"), "wrappers") as module:
        yield module


class Grid:
    """Nodes online, and replies that arrive `delays` seconds after the push (None: never)."""

    def __init__(
        self, online: int, delays: tuple[float | None, ...] = (), back_at: dict[int, float] | None = None
    ) -> None:
        self.online, self.delays, self.ready_at = online, delays, {}
        self.started, self.back_at = time.monotonic(), back_at or {}  # node id: seconds until online

    def get_node_ids(self):
        late = [n for n, at in self.back_at.items() if time.monotonic() - self.started < at]
        return [n for n in range(self.online) if n not in late]

    def push_messages(self, messages):
        now = time.monotonic()
        self.ready_at = {
            f"m{i}": None if d is None else now + d for i, d in zip(range(len(messages)), self.delays, strict=False)
        }
        return list(self.ready_at)

    def pull_messages(self, ids):
        ready = [i for i in ids if self.ready_at.get(i) is not None and self.ready_at[i] <= time.monotonic()]
        for i in ready:
            del self.ready_at[i]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def strategy(min_available: int):
    return SimpleNamespace(
        min_available_nodes=min_available,
        configure_train=lambda r, *a: ["train", r],
        configure_evaluate=lambda r, *a: ["evaluate", r],
    )


def test_a_round_starts_once_enough_sites_are_online(participation) -> None:
    s, grid = participation.Quorum(strategy(2), timeout=5), Grid(online=2)
    assert s.configure_train(3, None, None, grid) == ["train", 3]
    assert s.configure_evaluate(3, None, None, grid) == ["evaluate", 3]
    assert s.min_available_nodes == 2, "what the wrapper does not change is the strategy's"


def test_a_round_without_enough_sites_fails_with_the_reason(participation) -> None:
    s, grid = participation.Quorum(strategy(3), timeout=0.5, interval=0.1), Grid(online=1)
    with pytest.raises(
        RuntimeError, match=r"round 4 cannot start: 1 site\(s\) online, the participation policy needs 3"
    ):
        s.configure_train(4, None, None, grid)
    with pytest.raises(RuntimeError, match="round 4 cannot evaluate"):
        s.configure_evaluate(4, None, None, grid)


def test_a_resumed_run_waits_for_its_sites_and_says_how_long(participation) -> None:
    grid = Grid(online=3, back_at={1: 0.4, 2: 0.2})
    waited = participation.await_sites(grid, {"site-a": 0, "site-b": 1, "site-c": 2}, timeout=5, interval=0.05)
    assert waited["site-a"] == 0
    assert 0.4 <= waited["site-b"] < 1 and 0.2 <= waited["site-c"] < waited["site-b"], waited


def test_a_site_that_does_not_come_back_is_waited_for_until_the_timeout(participation) -> None:
    grid = Grid(online=2)
    started = time.monotonic()
    waited = participation.await_sites(grid, {"site-a": 0, "site-c": 2}, timeout=0.3, interval=0.05)
    assert waited == {"site-a": 0, "site-c": None}
    assert 0.3 <= time.monotonic() - started < 1


def test_replies_are_handed_over_as_they_arrive(wrappers) -> None:
    grid = wrappers.StreamingGrid(Grid(online=3, delays=(0.6, 0.05, 0.3)))
    started = time.monotonic()
    replies = grid.send_and_receive(["a", "b", "c"], timeout=10)
    assert grid.ready_at, "the messages are pushed at once, before any reply is asked for"
    arrived = [(r.metadata.reply_to_message_id, time.monotonic() - started) for r in replies]
    assert [m for m, _ in arrived] == ["m1", "m2", "m0"]
    assert arrived[0][1] < 0.3, "the first reply is handed over before the others are in"
    assert arrived[-1][1] < 1, "polled every 0.1 s, not every 3 s"


def test_a_timeout_returns_the_replies_that_came(wrappers) -> None:
    grid = wrappers.StreamingGrid(Grid(online=3, delays=(0.05, None)))
    started = time.monotonic()
    assert [r.metadata.reply_to_message_id for r in grid.send_and_receive(["a", "b"], timeout=0.3)] == ["m0"]
    assert 0.3 <= time.monotonic() - started < 1


def test_a_first_round_waits_for_the_sites_its_launcher_started(participation) -> None:
    grid = Grid(online=3, back_at={2: 0.3})
    waited = participation.await_site_count(grid, 3, timeout=5, interval=0.05)
    assert list(waited) == ["1 of 3", "2 of 3", "3 of 3"]
    assert waited["1 of 3"] == waited["2 of 3"] == 0 and 0.3 <= waited["3 of 3"] < 1, waited
    assert participation.await_site_count(Grid(online=1), 2, timeout=0.2, interval=0.05) == {
        "1 of 2": 0,
        "2 of 2": None,
    }
