"""FedAvg that folds each model into the average as its reply arrives.

Flower's FedAvg takes a round's replies as a list and averages them at the end, so the
ServerApp holds every site's model at once: its memory grows with the number of sites. This
one keeps a running weighted sum instead and lets each reply go once it is added: the
global model, the sum and the one reply being added, whatever the number of sites. The
ServerApp hands replies over one at a time as they are pulled (server_app._stream_replies).
Same result as Flower's FedAvg (tests/unit/test_fedavg.py); notebooks that build their own
strategy get theirs, with every reply of a round at once.

With `transfer_dtype="float16"` (run config `nbfed.transfer-dtype`) the model travels as
float16 both ways, half the bytes on every link; the sites train in float32 and the average
is kept in float32, so checkpoints and the final model stay float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency
from flwr.supercore import log

from .settings import TRANSFER_DTYPE_KEY

TRANSFER_DTYPES = ("float32", "float16")


def as_float16(arrays: ArrayRecord) -> ArrayRecord:
    """The float32 arrays as float16 (others as they are)."""
    return ArrayRecord(
        {
            key: Array(value.astype(np.float16)) if (value := array.numpy()).dtype == np.float32 else array
            for key, array in arrays.items()
        }
    )


class StreamingFedAvg(FedAvg):
    folds_replies = True  # the recorder passes the replies through lazily, not as a list

    def __init__(self, *args, transfer_dtype: str = "float32", **kwargs) -> None:
        if transfer_dtype not in TRANSFER_DTYPES:
            raise ValueError(f"nbfed.transfer-dtype = {transfer_dtype!r}: choose one of {', '.join(TRANSFER_DTYPES)}")
        super().__init__(*args, **kwargs)
        self.transfer_dtype = transfer_dtype

    def _outgoing(self, arrays: ArrayRecord) -> ArrayRecord:
        return as_float16(arrays) if self.transfer_dtype == "float16" else arrays

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        if self.transfer_dtype == "float16":
            config[TRANSFER_DTYPE_KEY] = "float16"
        return super().configure_train(server_round, self._outgoing(arrays), config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        return super().configure_evaluate(server_round, self._outgoing(arrays), config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        total, sums, dtypes, metrics, failures = 0.0, {}, {}, [], 0
        for msg in replies:
            if msg.has_error():
                failures += 1
                log(INFO, "\t> Received error in reply from node %d: %s", msg.metadata.src_node_id, msg.error.reason)
                continue
            content = msg.content
            validate_message_reply_consistency([content], self.weighted_by_key, check_arrayrecord=True)
            arrays = next(iter(content.array_records.values()))
            metric = next(iter(content.metric_records.values()))
            # (the ServerApp checks each reply against the model sent first: replies.ReplyCheck)
            if sums and set(arrays) != set(sums):
                raise InconsistentMessageReplies(
                    reason="All ArrayRecords must have the same keys for aggregation. "
                    "This condition wasn't met. Skipping aggregation."
                )
            weight = float(metric[self.weighted_by_key])
            for key, array in arrays.items():
                value = array.numpy()
                if key not in sums:  # (float16 replies average to float32, the model's own dtype)
                    dtypes[key] = np.dtype(np.float32) if value.dtype == np.float16 else value.dtype
                    sums[key] = np.zeros(value.shape, np.float32 if dtypes[key] == np.float32 else np.float64)
                sums[key] += value * weight
            total += weight
            metrics.append(RecordDict({"metrics": metric}))
            del msg, content, arrays  # let this reply go before the next one is pulled
        log(INFO, "aggregate_train: Received %s results and %s failures", len(metrics), failures)
        if not metrics:
            return None, None
        averaged = {}
        for key in list(sums):
            mean = sums.pop(key)
            mean /= total
            if dtypes[key].kind in "iub":
                np.rint(mean, out=mean)
            averaged[key] = Array(mean.astype(dtypes[key], copy=False))
        return ArrayRecord(averaged), self.train_metrics_aggr_fn(metrics, self.weighted_by_key)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        # Flower's FedAvg refuses a round's metrics, and so ends the run, when one site's have a
        # key another's lack. No site's metrics may decide which keys the others' must have: each
        # reply was checked on its own (replies.ReplyCheck) and, as in training, they are averaged
        # as they are.
        valid, _ = self._check_and_log_replies(replies, is_train=False, validate=False)
        if not valid:
            return None
        return self.evaluate_metrics_aggr_fn([msg.content for msg in valid], self.weighted_by_key)
