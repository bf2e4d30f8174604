"""ClientApp: runs the notebook's train and evaluate at a site, on the site's own data."""

from __future__ import annotations

import math

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import task
from .settings import Site, notebook_config

app = ClientApp()


def _model(msg: Message, config: dict, device: str):
    model = task.build_model(config)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model.to(device)


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


def _reply(msg: Message, site: Site, metrics: MetricRecord, model=None) -> Message:
    content = RecordDict({"metrics": metrics, "site": ConfigRecord({"name": site.name})})
    if model is not None:
        state = model.state_dict()
        config = msg.content.config_records.get("config", {})
        if config.get("nbfed-transfer-dtype") == "float16":  # the ServerApp asked for half the bytes
            state = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
        content["arrays"] = ArrayRecord(state)
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    site, config = Site.from_context(context), notebook_config(context)
    train_set, _ = task.load_data(str(site.data_dir), config)
    model = _model(msg, config, site.device)
    metrics = _metrics(task.train(model, train_set, config, site.device), "train", len(train_set))
    return _reply(msg, site, metrics, model.to("cpu"))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    site, config = Site.from_context(context), notebook_config(context)
    _, test_set = task.load_data(str(site.data_dir), config)
    model = _model(msg, config, site.device)
    metrics = _metrics(task.evaluate(model, test_set, config, site.device), "evaluate", len(test_set))
    return _reply(msg, site, metrics)
