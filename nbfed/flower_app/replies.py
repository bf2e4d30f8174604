"""A site's reply, checked before the aggregator takes anything from it.

A reply is the site's word. SuperLink vouches only for who sent it: it takes a reply only
from the node the message went to, so the message a reply answers names its sender (the
name comes from SuperLink's registry: recorder.Recorder.claim). Everything in it is checked
against the message it answers before it is recorded or folded into the average, so that one
site can neither replace the global model, nor make it NaN, nor outweigh the others, nor end
the run with a reply the strategy cannot read (`ReplyCheck`):

- records: what nbfed's ClientApp sends and nothing else: `metrics` (a MetricRecord),
  `arrays` (an ArrayRecord, in training only) and `site` (a ConfigRecord: its name and the
  seconds it spent in the notebook's code);
- metrics: finite numbers; `num-examples`, the reply's FedAvg weight, a whole number from 1
  to `nbfed.max-examples`;
- arrays: the keys, shapes and dtypes of the model sent, read from the bytes that FedAvg
  loads (not from what the Array says of them), every value finite.

A refused reply is the site's error for the round, left out of the aggregate (recording.py).
What the checks cannot see is a well-formed model that is wrong on purpose, within the cap.
"""

from __future__ import annotations

import io
import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord

WEIGHT_KEY = "num-examples"  # the FedAvg weight that nbfed's ClientApp adds to the notebook's metrics
REASON_LENGTH = 2000  # a site's error reason is kept to this many characters


class ReplyCheck:
    """Why a reply cannot be taken, or None: `check(reply, sent, phase)`."""

    def __init__(self, max_examples: int) -> None:
        if max_examples < 1:
            raise ValueError(f"nbfed.max-examples = {max_examples}: a reply must be allowed at least 1 example")
        self.max_examples = max_examples

    def __call__(self, reply: Message, sent: Message | None, phase: str) -> str | None:
        try:
            return self._why(reply, sent, phase)
        except Exception as err:  # a reply that nothing here foresaw is refused: it never ends the run
            return f"it cannot be read ({type(err).__name__}: {str(err)[:200]})"

    def _why(self, reply: Message, sent: Message | None, phase: str) -> str | None:
        if sent is None:
            return "it answers no message the aggregator sent this round"
        expected = {"metrics": MetricRecord, "site": ConfigRecord}
        if phase == "train":
            expected["arrays"] = ArrayRecord
        content = reply.content
        for key, record in content.items():
            if key not in expected:
                return f"it holds a record {_short(key)} that the aggregator does not ask for"
            if not isinstance(record, expected[key]):
                return f"its {key!r} is a {type(record).__name__}, not a {expected[key].__name__}"
        if missing := sorted(set(expected) - {"site"} - set(content)):
            return f"it has no {' and no '.join(map(repr, missing))}"
        return (
            self._metrics(content["metrics"])
            or self._site(content["site"] if "site" in content else None)
            or (self._arrays(content["arrays"], _model_of(sent)) if phase == "train" else None)
        )

    def _metrics(self, metrics: MetricRecord) -> str | None:
        for key, value in metrics.items():
            # (a list would break the average; nbfed's ClientApp sends single numbers only)
            if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
                return f"metric {_short(key)} = {_short(value)} is not a finite number"
        examples = metrics.get(WEIGHT_KEY)
        if examples is None:
            return f"its metrics have no {WEIGHT_KEY}, its FedAvg weight"
        if type(examples) is not int or not 1 <= examples <= self.max_examples:
            return (
                f"{WEIGHT_KEY} = {_short(examples)}: a reply's FedAvg weight must be a whole number "
                f"from 1 to {self.max_examples} (nbfed.max-examples)"
            )
        return None

    @staticmethod
    def _site(site: ConfigRecord | None) -> str | None:
        if site is None:
            return None
        if "name" in site and not _is_name(name := site["name"]):
            return f"its site name {_short(name)} is not a name"
        if "seconds" in site and not _is_duration(seconds := site["seconds"]):
            return f"its seconds = {_short(seconds)} is not a duration"
        return None

    @staticmethod
    def _arrays(arrays: ArrayRecord, sent: ArrayRecord) -> str | None:
        if missing := sorted(set(sent) - set(arrays)):
            return f"it lacks {_keys(missing)} of the model sent"
        if extra := sorted(set(arrays) - set(sent)):
            return f"it adds {_keys(extra)}, not in the model sent"
        for key, array in arrays.items():
            shape, dtype = tuple(sent[key].shape), np.dtype(sent[key].dtype)
            try:
                values = npy_view(array)
            except ValueError as err:
                return f"array {key!r} cannot be read as a NumPy array: {str(err)[:200]}"
            if values.shape != shape or values.dtype != dtype:
                return f"array {key!r} is {values.dtype} {values.shape}; the model sent has {dtype} {shape}"
            if values.dtype.kind in "fc" and not np.isfinite(values).all():
                return f"array {key!r} holds NaN or infinite values"
        return None

    @staticmethod
    def claimed_site(reply: Message) -> str | None:
        """The name a (checked) reply gives its site, if any."""
        return reply.content["site"].get("name") if "site" in reply.content else None


def npy_view(array: Array) -> np.ndarray:
    """The values that Flower's `Array.numpy()` loads from the array's bytes, as a read-only view
    of them: checking a reply copies none of its model (FedAvg loads each array once more to add it)."""
    if array.stype != "numpy.ndarray":
        raise ValueError(f"its stype is {array.stype!r}")
    data = array.data
    header = io.BytesIO(data)
    version = np.lib.format.read_magic(header)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(header)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(header)
    else:
        raise ValueError(f"npy format version {version} is not one NumPy writes for a model")
    if dtype.hasobject:
        raise ValueError("it holds Python objects")
    count, offset = math.prod(shape), header.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(f"it has {len(data) - offset} bytes of data for {count} values of {dtype}")
    return np.frombuffer(data, dtype, count, offset).reshape(shape, order="F" if fortran_order else "C")


def error_reason(reason: str | None) -> str:
    """The last line of a site's error reason (a traceback's verdict), or that it gave none."""
    lines = (reason or "").strip().splitlines()
    return lines[-1].strip()[:REASON_LENGTH] if lines else "the site gave no reason"


def _model_of(sent: Message) -> ArrayRecord:
    """The model a training message sent (FedAvg's `arrays`, whatever the strategy calls it)."""
    return next(iter(sent.content.array_records.values()), ArrayRecord())


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable()


def _is_duration(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


def _keys(keys: list[str]) -> str:
    return ", ".join(map(_short, keys[:5])) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _short(value: object) -> str:
    """A value of the site's, as a reason quotes it: never more than 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
