"""The strategy's hooks, recorded: every round's messages and replies, whatever the strategy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .recorder import Recorder
from .wrappers import StrategyWrapper


class RecordedStrategy(StrategyWrapper):
    """Tells `recorder` who was asked, who answered and with what, and who failed or missed the
    timeout. A resumed run's rounds are numbered on from its checkpoint, for the strategy too."""

    def __init__(self, inner: Strategy, recorder: Recorder) -> None:
        super().__init__(inner)
        self.recorder = recorder

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        server_round += self.recorder.offset
        current = self.recorder.begin_round(server_round)
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        current["sampled"] = sorted(self.recorder.site_of(m.metadata.dst_node_id) for m in messages)
        current["asked"]["train"] = messages
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.recorder.offset
        result = self.inner.aggregate_train(server_round, self._tap("train", replies))
        current = self.recorder.current
        if not current["train"]:
            # fail fast: without one model there is nothing to average
            why = "; ".join(f"{site}: {reason}" for site, reason in {**current["errors"], **current["missing"]}.items())
            raise RuntimeError(f"round {server_round}: no site returned a model ({why or 'no site was asked'})")
        return result

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        # A site that did not answer this round's training is presumed gone: asking it to
        # evaluate would only hold the round for another timeout. It is asked next round.
        current = self.recorder.current
        gone = {m.metadata.dst_node_id for m in current["asked"]["train"]} - current["answered"].get("train", set())
        messages = [
            m
            for m in self.inner.configure_evaluate(server_round + self.recorder.offset, arrays, config, grid)
            if m.metadata.dst_node_id not in gone
        ]
        current["asked"]["evaluate"] = messages
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round + self.recorder.offset, self._tap("evaluate", replies))

    def _tap(self, phase: str, replies: Iterable[Message]) -> Iterable[Message]:
        """The replies as the strategy gets them, each recorded on its way: one at a time to a
        strategy that folds them (StreamingFedAvg), else all of them at once."""
        recorder, current = self.recorder, self.recorder.current
        answered = current["answered"].setdefault(phase, set())
        asked = {m.metadata.message_id: m.metadata.dst_node_id for m in current["asked"].get(phase, [])}

        def record(msg: Message) -> None:
            # (A reply SuperLink makes for a node, "Node Unavailable", comes from SuperLink's own
            # node id: the message it answers names the node.)
            node_id = asked.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            answered.add(node_id)
            if msg.has_error():
                current["errors"].setdefault(
                    recorder.site_of(node_id), f"{phase}: {msg.error.reason.strip().splitlines()[-1]}"
                )
                return
            site = str(msg.content["site"]["name"]) if "site" in msg.content else f"node-{node_id}"
            recorder.name_site(site, node_id)
            current[phase][site] = {k: v for k, v in msg.content["metrics"].items()}
            if "seconds" in msg.content["site"]:
                current["seconds"].setdefault(phase, {})[site] = round(float(msg.content["site"]["seconds"]), 3)

        def tapped() -> Iterator[Message]:
            for msg in replies:
                record(msg)
                yield msg
                del msg  # before the next reply is pulled
            for node_id in set(asked.values()) - answered:
                current["missing"].setdefault(recorder.site_of(node_id), f"{phase}: no reply within the round timeout")

        if getattr(self.inner, "folds_replies", False):
            return tapped()
        return list(tapped())
