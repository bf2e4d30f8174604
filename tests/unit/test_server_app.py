"""The generated ServerApp's guards around Flower: a bounded wait for the participation
policy's sites, and reply polling that does not sleep 3 s. Stand-ins replace the Grid and
the strategy here (logic only); tests/integration/test_reliability.py runs the real thing."""

from __future__ import annotations

import importlib
import sys
import time
from types import SimpleNamespace

import pytest
from notebooks import minimal_cells, write_notebook

from nbfed.convert import convert


@pytest.fixture(scope="module")
def server_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    app = convert(write_notebook(root / "study.ipynb", minimal_cells()), root / "app")
    sys.path.insert(0, str(app.root))
    try:
        yield importlib.import_module(f"{app.package}.server_app")
    finally:
        sys.path.remove(str(app.root))


class Grid:
    """Nodes online, and replies that arrive one pull after another."""

    def __init__(self, online: int, replies_per_pull: int = 1) -> None:
        self.online, self.per_pull, self.pulls, self.pending = online, replies_per_pull, 0, []

    def get_node_ids(self):
        return list(range(self.online))

    def push_messages(self, messages):
        self.pending = [f"m{i}" for i, _ in enumerate(messages)]
        return list(self.pending)

    def pull_messages(self, ids):
        self.pulls += 1
        ready, self.pending = self.pending[:self.per_pull], self.pending[self.per_pull:]
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


def test_replies_are_pulled_as_they_come_not_every_3_s(server_app) -> None:
    grid = Grid(online=3)
    server_app._poll_replies_fast(grid)
    started = time.monotonic()
    replies = grid.send_and_receive(["a", "b", "c"], timeout=10)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0", "m1", "m2"]
    assert grid.pulls == 3 and time.monotonic() - started < 1


def test_a_timeout_returns_the_replies_that_came(server_app) -> None:
    grid = Grid(online=3, replies_per_pull=0)
    server_app._poll_replies_fast(grid)
    started = time.monotonic()
    assert grid.send_and_receive(["a", "b"], timeout=0.3) == []
    assert 0.3 <= time.monotonic() - started < 1
