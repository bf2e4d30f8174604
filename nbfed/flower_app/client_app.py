"""ClientApp: runs the notebook's train and evaluate at a site, on the site's own data."""

from __future__ import annotations

import math

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import task
from .global_model import Clock, global_model, outgoing_arrays
from .settings import Site, notebook_config

app = ClientApp()


def _metrics(values: dict, fn: str, num_examples: int) -> MetricRecord:
    """The notebook's metrics as Flower metrics, plus the weight FedAvg needs."""
    if not isinstance(values, dict):
        raise TypeError(f"{fn}() returned {type(values).__name__}; return a dict of str to float")
    clean: dict[str, float | int] = {}
    for key, value in values.items():
        if hasattr(value, "item"):  # torch/numpy scalars
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{fn}() returned {key}={value!r}; every value must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{fn}() returned {key}={value}; metrics must be finite")
        clean[str(key)] = value
    clean["num-examples"] = num_examples
    return MetricRecord(clean)


def _reply(msg: Message, site: Site, metrics: MetricRecord, seconds: float, model=None) -> Message:
    content = RecordDict({"metrics": metrics, "site": ConfigRecord({"name": site.name, "seconds": seconds})})
    if model is not None:
        content["arrays"] = outgoing_arrays(msg, model)
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    site, config, clock = Site.from_context(context), notebook_config(context), Clock()
    train_set, _ = clock(task.load_data, str(site.data_dir), config)
    model = global_model(msg, config, site.device, clock)
    values = clock(task.train, model, train_set, config, site.device)
    return _reply(msg, site, _metrics(values, "train", len(train_set)), clock.seconds, model.to("cpu"))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    site, config, clock = Site.from_context(context), notebook_config(context), Clock()
    _, test_set = clock(task.load_data, str(site.data_dir), config)
    model = global_model(msg, config, site.device, clock)
    values = clock(task.evaluate, model, test_set, config, site.device)
    return _reply(msg, site, _metrics(values, "evaluate", len(test_set)), clock.seconds)
