"""StreamingFedAvg: Flower's FedAvg result, with one reply held at a time."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from nbfed.flower_app.fedavg import StreamingFedAvg


@pytest.fixture(autouse=True)
def in_a_serverapp():
    """Flower makes messages only inside a run (a ServerApp's or ClientApp's process)."""
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def reply(seed: int, examples: int, shapes=((3, 4), (4,))) -> Message:
    rng = np.random.default_rng(seed)
    arrays = {f"layer{i}.weight": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    arrays["bn.num_batches_tracked"] = np.array(10 * seed, dtype=np.int64)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"loss": float(seed), "num-examples": examples}),
        }
    )
    return Message(content, dst_node_id=seed, message_type=MessageType.TRAIN)


def test_same_average_and_metrics_as_flowers_fedavg() -> None:
    replies = [reply(1, 10), reply(2, 30), reply(3, 60)]
    ours, our_metrics = StreamingFedAvg().aggregate_train(1, iter(replies))
    theirs, their_metrics = FedAvg().aggregate_train(1, replies)
    assert list(ours) == list(theirs)
    for key in ours:
        mine, flowers = ours[key].numpy(), theirs[key].numpy()
        if key == "bn.num_batches_tracked":  # Flower turns integer buffers into float64; we keep the dtype
            assert mine.dtype == np.int64 and mine == round(float(flowers))
        else:
            assert mine.dtype == np.float32 and np.allclose(mine, flowers, rtol=1e-6, atol=1e-7)
    assert dict(our_metrics) == pytest.approx(dict(their_metrics))


def test_each_reply_is_let_go_before_the_next_is_pulled() -> None:
    alive: list[weakref.ref] = []

    def pulled():
        for seed in range(1, 6):
            gc.collect()
            assert sum(r() is not None for r in alive) == 0, "a reply already added is still held"
            msg = reply(seed, 10)
            alive.append(weakref.ref(msg))
            yield msg
            del msg

    arrays, _ = StreamingFedAvg().aggregate_train(1, pulled())
    assert arrays is not None and len(alive) == 5


def test_errors_are_skipped_and_no_model_gives_none() -> None:
    failed = Message(Error(code=0, reason="site failed"), reply_to=reply(2, 10))
    arrays, metrics = StreamingFedAvg().aggregate_train(1, iter([failed, reply(1, 10)]))
    assert arrays is not None and metrics["loss"] == 1.0
    assert StreamingFedAvg().aggregate_train(1, iter([failed])) == (None, None)


def test_replies_with_other_keys_are_refused() -> None:
    with pytest.raises(InconsistentMessageReplies):
        StreamingFedAvg().aggregate_train(1, iter([reply(1, 10), reply(2, 10, shapes=((3, 4),))]))


def test_a_metric_one_site_adds_does_not_end_the_round() -> None:
    """Flower's FedAvg raises when the sites' metrics differ in keys: no site's metrics may decide
    which the others' must have (each reply is checked on its own: replies.py)."""
    extra = reply(2, 30)
    extra.content["metrics"]["auc"] = 0.75
    arrays, metrics = StreamingFedAvg().aggregate_train(1, iter([reply(1, 10), extra]))
    assert arrays is not None and metrics["loss"] == pytest.approx(1.75) and "auc" in metrics
    with pytest.raises(InconsistentMessageReplies):
        FedAvg().aggregate_train(1, [reply(1, 10), extra])


def test_float16_transfers_send_half_the_bytes_and_average_in_float32() -> None:
    strategy = StreamingFedAvg(transfer_dtype="float16")
    sent = reply(7, 1).content["arrays"]

    class Grid:
        def get_node_ids(self):
            return [1, 2]

    [message, _] = list(strategy.configure_train(1, sent, ConfigRecord(), Grid()))
    assert message.content["config"]["nbfed-transfer-dtype"] == "float16"
    outgoing = message.content["arrays"]
    assert outgoing["layer0.weight"].numpy().dtype == np.float16
    assert outgoing["bn.num_batches_tracked"].numpy().dtype == np.int64
    assert outgoing["layer0.weight"].numpy().nbytes * 2 == sent["layer0.weight"].numpy().nbytes

    def halved(msg: Message) -> Message:
        arrays = {
            k: Array(v.numpy().astype(np.float16) if v.numpy().dtype == np.float32 else v.numpy())
            for k, v in msg.content["arrays"].items()
        }
        return Message(
            RecordDict({"arrays": ArrayRecord(arrays), "metrics": msg.content["metrics"]}),
            dst_node_id=1,
            message_type=MessageType.TRAIN,
        )

    replies = [reply(1, 10), reply(2, 30)]
    full, _ = StreamingFedAvg().aggregate_train(1, iter(replies))
    half, _ = strategy.aggregate_train(1, iter(halved(r) for r in replies))
    for key in full:
        assert half[key].numpy().dtype == full[key].numpy().dtype
        assert np.allclose(half[key].numpy(), full[key].numpy(), rtol=2e-3, atol=2e-3)


def test_an_unknown_transfer_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="nbfed.transfer-dtype = 'int8': choose one of float32, float16"):
        StreamingFedAvg(transfer_dtype="int8")
