"""The strategy's hooks, recorded: every round's messages and replies, whatever the strategy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from logging import WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from .recorder import Recorder
from .replies import ReplyCheck, error_reason
from .wrappers import StrategyWrapper


class RecordedStrategy(StrategyWrapper):
    """Tells `recorder` who was asked, who answered and with what, and who failed or missed the
    timeout. A resumed run's rounds are numbered on from its checkpoint, for the strategy too.
    Each reply passes `check` first: one it refuses is its site's error and the strategy never
    sees it (replies.py)."""

    def __init__(self, inner: Strategy, recorder: Recorder, check: ReplyCheck) -> None:
        super().__init__(inner)
        self.recorder, self.check = recorder, check

    def _learn_names(self, grid: Grid) -> None:
        # The sites' names from SuperLink's registry, not from their replies (Recorder.claim).
        self.recorder.registered.update({node.node_id: node.name for node in grid.get_nodes() if node.name})

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        server_round += self.recorder.offset
        current = self.recorder.begin_round(server_round)
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._learn_names(grid)  # (now: the sampled sites are online, so SuperLink lists them)
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
        self._learn_names(grid)
        current["asked"]["evaluate"] = messages
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round + self.recorder.offset, self._tap("evaluate", replies))

    def _tap(self, phase: str, replies: Iterable[Message]) -> Iterable[Message]:
        """The replies as the strategy gets them, each checked and recorded on its way: one at a
        time to a strategy that folds them (StreamingFedAvg), else all of them at once."""
        recorder, current, check = self.recorder, self.recorder.current, self.check
        answered = current["answered"].setdefault(phase, set())
        # SuperLink takes a reply only from the node its message went to: the message a reply
        # answers names the sender (and what the reply must fit), whatever the reply says.
        sent = {m.metadata.message_id: m for m in current["asked"].get(phase, [])}

        def record(msg: Message) -> bool:
            """Record the reply; whether the strategy may have it."""
            asked = sent.get(msg.metadata.reply_to_message_id)
            # (A reply SuperLink makes for a node, "Node Unavailable", comes from SuperLink's own
            # node id: the message it answers names the node.)
            node_id = asked.metadata.dst_node_id if asked else msg.metadata.src_node_id
            answered.add(node_id)
            if msg.has_error():  # the strategy counts it as a failure
                current["errors"].setdefault(recorder.site_of(node_id), f"{phase}: {error_reason(msg.error.reason)}")
                return True
            refused = check(msg, asked, phase) or recorder.claim(node_id, check.claimed_site(msg))
            site = recorder.site_of(node_id)
            if refused:
                log(WARNING, "The %s reply of %s (node %d) is refused: %s", phase, site, node_id, refused)
                current["errors"].setdefault(site, f"{phase}: reply refused: {refused}")
                return False
            current[phase][site] = dict(msg.content["metrics"])
            if "site" in msg.content and "seconds" in msg.content["site"]:
                current["seconds"].setdefault(phase, {})[site] = round(float(msg.content["site"]["seconds"]), 3)
            return True

        def tapped() -> Iterator[Message]:
            for msg in replies:
                if record(msg):
                    yield msg
                del msg  # before the next reply is pulled
            for node_id in {m.metadata.dst_node_id for m in sent.values()} - answered:
                current["missing"].setdefault(recorder.site_of(node_id), f"{phase}: no reply within the round timeout")

        if getattr(self.inner, "folds_replies", False):
            return tapped()
        return list(tapped())
