"""ClientApp: runs the notebook's train and evaluate at a site, on the site's own data."""

from __future__ import annotations

import math
import time

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import task
from .settings import Site, notebook_config

app = ClientApp()


class _Clock:
    """Adds up the seconds spent in the notebook's own functions: the ServerApp sets each site's
    work against its round (the rest is the federation's: messages, processes, (de)serialisation)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, fn, *args):
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - started


def _global_model(msg: Message, config: dict, device: str, clock: _Clock) -> torch.nn.Module:
    """The notebook's model holding the round's global weights.

    Built on the meta device first: no memory is allocated and no weights are initialised only
    to be overwritten, and the received tensors become the parameters without another copy
    (for a VGG16-sized model that is 0.55 GB initialised and 0.55 GB copied less per message).
    Models this cannot hold exactly are built as usual: build_model fails on meta tensors
    (it computes with values), shares a parameter between layers (assigning would untie it),
    or keeps a tensor the weights do not carry (left on the meta device).
    """
    state = msg.content["arrays"].to_torch_state_dict(keep_input=False)  # the message's copy goes
    try:
        with torch.device("meta"):
            model = clock(task.build_model, config)
    except Exception:  # any failure here means: build it the usual way
        model = None
    if model is not None and _holds_exactly(model, state):
        # assigning keeps the received dtype: float16 transfers must still train in float32
        expected = model.state_dict()
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, assign=True)
        if not any(t.is_meta for m in model.modules() for t in _tensors(m)):
            return model.to(device)
    model = clock(task.build_model, config)
    model.load_state_dict(state)
    return model.to(device)


def _holds_exactly(model: torch.nn.Module, state: dict) -> bool:
    if not isinstance(model, torch.nn.Module):
        return False
    tied = len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.parameters()))
    return not tied and set(model.state_dict()) == set(state)


def _tensors(module: torch.nn.Module):
    yield from module.parameters(recurse=False)
    yield from module.buffers(recurse=False)
    yield from (v for v in vars(module).values() if isinstance(v, torch.Tensor))


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
        state = model.state_dict()
        config = msg.content.config_records.get("config", {})
        if config.get("nbfed-transfer-dtype") == "float16":  # the ServerApp asked for half the bytes
            state = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
        content["arrays"] = ArrayRecord(state)
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    site, config, clock = Site.from_context(context), notebook_config(context), _Clock()
    train_set, _ = clock(task.load_data, str(site.data_dir), config)
    model = _global_model(msg, config, site.device, clock)
    values = clock(task.train, model, train_set, config, site.device)
    return _reply(msg, site, _metrics(values, "train", len(train_set)), clock.seconds, model.to("cpu"))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    site, config, clock = Site.from_context(context), notebook_config(context), _Clock()
    _, test_set = clock(task.load_data, str(site.data_dir), config)
    model = _global_model(msg, config, site.device, clock)
    values = clock(task.evaluate, model, test_set, config, site.device)
    return _reply(msg, site, _metrics(values, "evaluate", len(test_set)), clock.seconds)
