"""How nbfed changes Flower's behaviour on the aggregator: named wrappers, composed in server_app.main.

`StrategyWrapper` hands every hook of a strategy to the strategy it wraps; each change is a
subclass that overrides the hooks it changes (Flower's `Strategy.start` calls the outermost
wrapper's). `StreamingGrid` does the same for the run's Grid.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


class StrategyWrapper(Strategy):
    """Every hook goes to `inner`, and so does every attribute this class does not have
    (`min_available_nodes`, `folds_replies`, ...)."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        if name == "inner":  # (not set yet: copying, unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


class StreamingGrid:
    """The run's Grid, with each reply handed over as soon as it is in.

    Flower's `send_and_receive` pulls every 3 s and returns a round's replies all at once. This
    one pushes the same way, then pulls one message at a time every `interval` and yields each
    reply as it arrives, so that an aggregation that folds them (StreamingFedAvg) holds one
    reply at a time. Same timeout semantics; every other call goes to the Grid."""

    def __init__(self, grid: Grid, interval: float = 0.1) -> None:
        self.grid, self.interval = grid, interval

    def __getattr__(self, name: str):
        if name == "grid":
            raise AttributeError(name)
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterator[Message]:
        pending = [message_id for message_id in self.grid.push_messages(messages) if message_id]
        deadline = time.monotonic() + (timeout or 0.0)

        def replies() -> Iterator[Message]:
            while pending:
                for message_id in list(pending):
                    pulled = list(self.grid.pull_messages([message_id]))
                    if pulled:
                        pending.remove(message_id)
                    while pulled:
                        yield pulled.pop()  # (no reference kept here once it is handed over)
                if timeout is not None and time.monotonic() >= deadline:
                    return
                if pending:
                    time.sleep(self.interval)

        return replies()
