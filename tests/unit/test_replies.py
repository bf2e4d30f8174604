"""Site replies are checked, not taken at their word: a reply that names another site, outweighs
the others, does not fit the model sent or cannot be read is that site's error for the round, is
left out of the average, and the round goes on. The aggregator's own classes with Flower's real
Message and ArrayRecord objects; the Grid is a stand-in (tests/integration runs the real one)."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.supercore.task_identity import TaskIdentity
from notebooks import generated_module

SITES = {1: "site-a", 2: "site-b", 3: "site-c"}  # node id: the name SuperLink registered it under
MAX_EXAMPLES = 1000  # nbfed.max-examples in these tests


@pytest.fixture(autouse=True)
def in_a_serverapp():
    """Flower makes messages only inside a run (a ServerApp's or ClientApp's process)."""
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The generated app's ServerApp modules (recorder.py needs the app's metrics.py)."""
    with generated_module(tmp_path_factory.mktemp("app"), "recording") as recording:
        modules = ("recording", "recorder", "replies", "fedavg")
        yield SimpleNamespace(**{m: importlib.import_module(f"{recording.__package__}.{m}") for m in modules})


class Grid:
    """Nodes online, with the names SuperLink's registry has for them ("" for none)."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names

    def get_node_ids(self):
        return list(self.names)

    def get_nodes(self):
        return [NodeInfo(node_id=n, **({"name": name} if name else {})) for n, name in self.names.items()]


def honest(node: int) -> dict:
    """What nbfed's ClientApp at `node` replies to a training message: its model, metrics and name."""
    rng = np.random.default_rng(node)
    return {
        "arrays": {
            "layer0.weight": rng.normal(size=(3, 4)).astype(np.float32),
            "layer1.bias": rng.normal(size=(4,)).astype(np.float32),
            "bn.num_batches_tracked": np.array(10 * node, dtype=np.int64),
        },
        "metrics": {"loss": float(node), "num-examples": 10 * node},
        "site": {"name": SITES.get(node, "global"), "seconds": 1.5},
    }


def content(parts: dict) -> RecordDict:
    """The parts as records, as they travel (a part that is a record already stays as it is)."""
    kinds = {"arrays": ArrayRecord, "metrics": MetricRecord, "site": ConfigRecord}
    records = {}
    for key, value in parts.items():
        if isinstance(value, (ArrayRecord, MetricRecord, ConfigRecord)):
            records[key] = value
        elif key == "arrays":
            records[key] = ArrayRecord({k: v if isinstance(v, Array) else Array(v) for k, v in value.items()})
        else:
            records[key] = kinds[key](value)
    return RecordDict(records)


MODEL = content({"arrays": honest(0)["arrays"]})["arrays"]


def sent_messages(strategy, phase: str, grid: Grid) -> dict[int, Message]:
    configure = strategy.configure_train if phase == "train" else strategy.configure_evaluate
    messages = list(configure(1, MODEL, ConfigRecord(), grid))
    for msg in messages:  # (as SuperLink's Grid does when it pushes them)
        msg.metadata.__dict__["_message_id"] = msg.object_id
    return {msg.metadata.dst_node_id: msg for msg in messages}


def train_round(app, tmp_path, spoil=None, order=(1, 2, 3), names=SITES, transfer_dtype="float32", reply=None):
    """One training round of the real strategy: node 3's reply spoiled by `spoil` (or made by
    `reply`), the replies arriving in `order`. The new global model and the round's record."""
    recorder = app.recorder.Recorder.start(tmp_path, {"num_rounds": 1})
    inner = app.fedavg.StreamingFedAvg(transfer_dtype=transfer_dtype)
    strategy = app.recording.RecordedStrategy(inner, recorder, app.replies.ReplyCheck(max_examples=MAX_EXAMPLES))
    sent = sent_messages(strategy, "train", Grid(dict(names)))
    replies = []
    for node in order:
        parts = honest(node)
        if transfer_dtype == "float16":  # the ClientApp replies in the dtype it was sent
            parts["arrays"] = {
                k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in parts["arrays"].items()
            }
        if node == 3 and reply is not None:
            replies.append(reply(sent[3]))
            continue
        if node == 3 and spoil is not None:
            spoil(parts)
        replies.append(Message(content(parts), reply_to=sent[node]))
    arrays, _ = strategy.aggregate_train(1, iter(replies))
    recorder.end_of_round(1, arrays)
    return arrays, json.loads((tmp_path / "rounds.json").read_text())[-1]


def assert_average_of(arrays: ArrayRecord, nodes: list[int], rtol: float = 1e-6) -> None:
    """`arrays` is the FedAvg of these nodes' honest models, weighted by their example counts."""
    weights = np.array([honest(n)["metrics"]["num-examples"] for n in nodes], dtype=np.float64)
    assert sorted(arrays) == sorted(MODEL)
    for key in MODEL:
        models = np.stack([honest(n)["arrays"][key].astype(np.float64) for n in nodes])
        expected = np.tensordot(weights / weights.sum(), models, axes=1)
        got = arrays[key].numpy()
        assert got.dtype == MODEL[key].numpy().dtype, key
        if got.dtype.kind == "i":
            assert got == np.rint(expected), key
        else:
            assert np.allclose(got, expected, rtol=rtol, atol=rtol), key


DROP = object()


def spoil(*path: str, to=DROP):
    """Node 3's reply with one part set `to` a value (or dropped): spoil("metrics", "loss", to=...)."""

    def spoiled(parts: dict) -> None:
        *where, last = path
        for step in where:
            parts = parts[step]
        if to is DROP:
            del parts[last]
        else:
            parts[last] = to

    return spoiled


NAN_WEIGHTS = np.where(np.eye(3, 4, dtype=bool), np.nan, 0.5).astype(np.float32)
# An Array whose description says float32 (3, 4) over the bytes of a 300 x 300 model: FedAvg
# loads the bytes, so they are what is checked.
LYING = Array(dtype="float32", shape=(3, 4), stype="numpy.ndarray", data=Array(np.ones((300, 300))).data)
NOT_NPY = Array(dtype="float32", shape=(3, 4), stype="numpy.ndarray", data=b"\x00" * 48)
PICKLED = Array(dtype="float32", shape=(3, 4), stype="pickle", data=b"\x80\x04")
TEXT_METRICS = ConfigRecord({"loss": "low", "num-examples": 30})
SENT = "the model sent has float32 (3, 4)"

HOSTILE = {
    "another site's name": (spoil("site", "name", to="site-a"), "it names its site 'site-a', but node 3 is 'site-c'"),
    "a huge example count": (spoil("metrics", "num-examples", to=10**9), "num-examples = 1000000000: a reply's"),
    "one example too many": (spoil("metrics", "num-examples", to=1001), "from 1 to 1000 (nbfed.max-examples)"),
    "a negative example count": (spoil("metrics", "num-examples", to=-30), "num-examples = -30"),
    "no examples": (spoil("metrics", "num-examples", to=0), "num-examples = 0"),
    "a fractional example count": (spoil("metrics", "num-examples", to=29.5), "num-examples = 29.5"),
    "a NaN example count": (spoil("metrics", "num-examples", to=float("nan")), "'num-examples' = nan is not a"),
    "no example count": (spoil("metrics", "num-examples"), "its metrics have no num-examples"),
    "an infinite metric": (spoil("metrics", "loss", to=float("inf")), "metric 'loss' = inf is not a finite number"),
    "a list for a metric": (spoil("metrics", "loss", to=[1.0, 2.0]), "metric 'loss' = [1.0, 2.0] is not a finite"),
    "text for metrics": (spoil("metrics", to=TEXT_METRICS), "its 'metrics' is a ConfigRecord, not a MetricRecord"),
    "a wrong shape": (spoil("arrays", "layer0.weight", to=np.zeros((4, 3), np.float32)), f"float32 (4, 3); {SENT}"),
    "a wrong dtype": (spoil("arrays", "layer0.weight", to=np.zeros((3, 4), np.float64)), f"float64 (3, 4); {SENT}"),
    "NaN weights": (spoil("arrays", "layer0.weight", to=NAN_WEIGHTS), "'layer0.weight' holds NaN or infinite values"),
    "an extra key": (spoil("arrays", "x.weight", to=NAN_WEIGHTS), "it adds 'x.weight', not in the model sent"),
    "a missing key": (spoil("arrays", "layer1.bias"), "it lacks 'layer1.bias' of the model sent"),
    "no arrays": (spoil("arrays"), "it has no 'arrays'"),
    "an Array that lies about its bytes": (spoil("arrays", "layer0.weight", to=LYING), f"float64 (300, 300); {SENT}"),
    "bytes that are no array": (spoil("arrays", "layer0.weight", to=NOT_NPY), "cannot be read as a NumPy array"),
    "another serialisation": (spoil("arrays", "layer0.weight", to=PICKLED), "NumPy array: its stype is 'pickle'"),
    "a record of its own": (spoil("optimizer", to=TEXT_METRICS), "it holds a record 'optimizer' that the aggregator"),
    "text for seconds": (spoil("site", "seconds", to="soon"), "its seconds = 'soon' is not a duration"),
    "a number for a name": (spoil("site", "name", to=7), "its site name 7 is not a name"),
}


def test_honest_replies_are_all_taken(app, tmp_path) -> None:
    arrays, record = train_round(app, tmp_path)
    assert_average_of(arrays, [1, 2, 3])
    assert "errors" not in record
    assert record["sites"] == {"site-a": 1, "site-b": 2, "site-c": 3}
    assert record["train"]["site-c"] == {"loss": 3.0, "num-examples": 30}
    assert record["site_seconds"] == {"train": {"site-a": 1.5, "site-b": 1.5, "site-c": 1.5}}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_reply_is_the_senders_error_and_left_out_of_the_average(app, tmp_path, case) -> None:
    spoiler, reason = HOSTILE[case]
    # It arrives first, so it cannot set what the honest replies after it must be either.
    arrays, record = train_round(app, tmp_path, spoiler, order=(3, 1, 2))
    assert list(record["errors"]) == ["site-c"], record["errors"]
    assert record["errors"]["site-c"].startswith("train: reply refused: ")
    assert reason in record["errors"]["site-c"]
    assert_average_of(arrays, [1, 2])
    assert record["sites"] == {"site-a": 1, "site-b": 2}
    assert record["train"] == {
        "site-a": {"loss": 1.0, "num-examples": 10},
        "site-b": {"loss": 2.0, "num-examples": 20},
    }


def test_a_site_is_named_by_superlinks_registry_from_the_first_round(app, tmp_path) -> None:
    # (a site whose ClientApp has another name than its registration)
    arrays, record = train_round(app, tmp_path, spoil("site", "name", to="hospital-x"))
    assert record["sampled"] == ["site-a", "site-b", "site-c"]
    assert record["errors"] == {
        "site-c": "train: reply refused: it names its site 'hospital-x', but node 3 is 'site-c'"
    }
    assert "hospital-x" not in json.loads((tmp_path / "run.json").read_text())["sites"]
    assert_average_of(arrays, [1, 2])


def test_without_a_registry_a_node_cannot_take_a_name_another_node_has(app, tmp_path) -> None:
    arrays, record = train_round(app, tmp_path, spoil("site", "name", to="site-a"), names=dict.fromkeys(SITES, ""))
    assert record["errors"] == {"node-3": "train: reply refused: it names its site 'site-a', which is node 1's"}
    assert record["sites"] == {"site-a": 1, "site-b": 2}
    assert_average_of(arrays, [1, 2])
    _, record = train_round(app, tmp_path / "2", spoil("site", "name", to="node-1"), names=dict.fromkeys(SITES, ""))
    assert record["errors"] == {"node-3": "train: reply refused: it names its site 'node-1', which is node 1's"}


def test_a_node_superlink_has_no_name_for_keeps_its_node_id_where_superlink_names_the_others(app, tmp_path) -> None:
    names = {1: "site-a", 2: "site-b", 3: ""}
    arrays, record = train_round(app, tmp_path, spoil("site", "name", to="site-z"), names=names)
    assert "errors" not in record and record["sites"] == {"node-3": 3, "site-a": 1, "site-b": 2}
    assert_average_of(arrays, [1, 2, 3])
    arrays, record = train_round(app, tmp_path / "2", spoil("site", "name", to="site-b"), names=names)
    assert record["errors"] == {"node-3": "train: reply refused: it names its site 'site-b', which is node 2's"}
    assert_average_of(arrays, [1, 2])


def test_a_reply_that_answers_no_message_sent_is_refused(app, tmp_path) -> None:
    def stray(sent: Message) -> Message:
        other = Message(content({"arrays": honest(3)["arrays"]}), dst_node_id=3, message_type=MessageType.TRAIN)
        other.metadata.__dict__["_message_id"] = "not-sent-this-round"
        return Message(content(honest(3)), reply_to=other)

    arrays, record = train_round(app, tmp_path, reply=stray)
    assert record["errors"] == {"site-c": "train: reply refused: it answers no message the aggregator sent this round"}
    assert_average_of(arrays, [1, 2])


@pytest.mark.parametrize(
    ("reason", "recorded"),
    [
        ("", "the site gave no reason"),
        (None, "the site gave no reason"),
        ("Traceback\n  ...\nOSError: disk\n", "OSError: disk"),
    ],
)
def test_an_error_reply_is_recorded_whatever_its_reason(app, tmp_path, reason, recorded) -> None:
    arrays, record = train_round(app, tmp_path, reply=lambda sent: Message(Error(code=0, reason=reason), reply_to=sent))
    assert record["errors"] == {"site-c": f"train: {recorded}"}
    assert_average_of(arrays, [1, 2])


def test_float16_replies_must_come_back_as_float16(app, tmp_path) -> None:
    arrays, record = train_round(app, tmp_path, transfer_dtype="float16")
    assert "errors" not in record
    assert_average_of(arrays, [1, 2, 3], rtol=2e-3)

    float32_back = spoil("arrays", "layer0.weight", to=honest(3)["arrays"]["layer0.weight"])
    arrays, record = train_round(app, tmp_path / "2", float32_back, transfer_dtype="float16")
    assert record["errors"] == {
        "site-c": "train: reply refused: array 'layer0.weight' is float32 (3, 4); the model sent has float16 (3, 4)"
    }
    assert_average_of(arrays, [1, 2], rtol=2e-3)


def test_evaluate_replies_are_checked_too(app, tmp_path) -> None:
    recorder = app.recorder.Recorder.start(tmp_path, {"num_rounds": 1})
    check = app.replies.ReplyCheck(max_examples=MAX_EXAMPLES)
    strategy = app.recording.RecordedStrategy(app.fedavg.StreamingFedAvg(), recorder, check)
    grid = Grid(SITES)
    sent_messages(strategy, "train", grid)
    recorder.current["answered"]["train"] = set(SITES)
    sent = sent_messages(strategy, "evaluate", grid)
    metrics = {
        1: {"accuracy": 0.5, "num-examples": 10},
        2: {"accuracy": 0.8, "num-examples": 30, "auc": 0.9},  # a key the others lack does not end the round
        3: {"accuracy": float("nan"), "num-examples": 10**9},
    }
    replies = [Message(content({"metrics": metrics[n], "site": {"name": SITES[n]}}), reply_to=sent[n]) for n in SITES]
    pooled = strategy.aggregate_evaluate(1, iter(replies))
    assert pooled["accuracy"] == pytest.approx((0.5 * 10 + 0.8 * 30) / 40)
    assert recorder.current["evaluate"] == {"site-a": metrics[1], "site-b": metrics[2]}
    assert recorder.current["errors"] == {
        "site-c": "evaluate: reply refused: metric 'accuracy' = nan is not a finite number"
    }


def test_the_cap_on_examples_is_at_least_one(app) -> None:
    with pytest.raises(ValueError, match="nbfed.max-examples = 0"):
        app.replies.ReplyCheck(max_examples=0)
