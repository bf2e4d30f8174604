"""Who takes part in a round: the participation policy's quorum, and the sites a resumed run waits for."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .wrappers import StrategyWrapper


class Quorum(StrategyWrapper):
    """Flower waits for `min_available_nodes` sites forever before each phase of a round; this
    gives up after `timeout` seconds with the reason (nbfed_min_sites, nbfed_round_timeout)."""

    def __init__(self, inner: Strategy, timeout: float, interval: float = 1.0) -> None:
        super().__init__(inner)
        self.timeout, self.interval = timeout, interval

    def _wait(self, grid: Grid, server_round: int, phase: str) -> None:
        needed = int(getattr(self.inner, "min_available_nodes", 1))
        deadline = time.monotonic() + self.timeout
        while len(online := list(grid.get_node_ids())) < needed:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"round {server_round} cannot {phase}: {len(online)} site(s) online, the participation "
                    f"policy needs {needed} (nbfed_min_sites) and {self.timeout:.0f} s (nbfed_round_timeout) passed. "
                    "Bring the missing sites back (ansible-playbook playbooks/status.yml lists them) or lower "
                    "nbfed_min_sites, then resume the run"
                )
            time.sleep(self.interval)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._wait(grid, server_round, "start")
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._wait(grid, server_round, "evaluate")
        return super().configure_evaluate(server_round, arrays, config, grid)


def await_sites(grid: Grid, sites: Mapping[str, int], timeout: float, interval: float = 0.5) -> dict[str, float | None]:
    """Wait until every site in `sites` (name: node id) is online, for at most `timeout` seconds.

    A resumed run waits so for the sites of the run it resumes: SuperLink counts a site as online
    only once it has sent a heartbeat since SuperLink started (nbfed's SuperLink launcher), and a
    round sent before a site is back would leave it out. Returns the seconds each site took to
    be online, None for a site that was not back in time."""
    started, back = time.monotonic(), {}
    while True:
        online, waited = set(grid.get_node_ids()), time.monotonic() - started
        back.update({site: round(waited, 1) for site, node in sites.items() if node in online and site not in back})
        if len(back) == len(sites) or waited >= timeout:
            return {site: back.get(site) for site in sites}
        time.sleep(interval)


def await_site_count(grid: Grid, expected: int, timeout: float, interval: float = 0.5) -> dict[str, float | None]:
    """Wait until `expected` sites are online, for at most `timeout` seconds (nbfed.expected-sites:
    a launcher that starts every site lets the first round have them all). Returns the seconds
    until the k-th site was online, as {"1 of 3": 0.0, ...}, None for those not online in time."""
    started, seen = time.monotonic(), []
    while True:
        online, waited = len(list(grid.get_node_ids())), time.monotonic() - started
        seen += [round(waited, 1)] * max(0, min(online, expected) - len(seen))
        if len(seen) >= expected or waited >= timeout:
            return {f"{k} of {expected}": seen[k - 1] if k <= len(seen) else None for k in range(1, expected + 1)}
        time.sleep(interval)
