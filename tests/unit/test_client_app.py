"""The generated ClientApp's model path: the notebook's model built on the meta device and given
the round's global weights without a copy, and built the usual way wherever that could not
hold the model exactly. Real torch models and Flower ArrayRecords; the message is a stand-in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from flwr.app import ArrayRecord
from notebooks import generated_module


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """The generated app's global_model module (the ClientApp's model handling)."""
    with generated_module(tmp_path_factory.mktemp("app"), "global_model") as module:
        yield module


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight


class WithTensorAttribute(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.scale = torch.nn.Linear(4, 4), torch.full((4,), 2.0)


class WithNonPersistentBuffer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.register_buffer("positions", torch.arange(4), persistent=False)


def sized_from_a_forward_pass(_config):  # a common notebook idiom: infer a size by running a layer
    features = torch.nn.Conv2d(1, 2, 3)
    size = int(features(torch.zeros(1, 1, 6, 6)).flatten().shape[0])
    return torch.nn.Sequential(features, torch.nn.Flatten(), torch.nn.Linear(size, 2))


def frozen_first_layer(_config):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    return model


def _receive(model_path, monkeypatch, build, *, sent=None):
    """The model the ClientApp trains for a message carrying `sent` (default: a fresh build's
    weights plus one), and how many times it called build_model."""
    calls = []
    monkeypatch.setattr(model_path.task, "build_model", lambda config: calls.append(1) or build(config))
    if sent is None:
        sent = {k: v + 1 if v.is_floating_point() else v + 3 for k, v in build({}).state_dict().items()}
    msg = SimpleNamespace(content={"arrays": ArrayRecord({k: v.clone() for k, v in sent.items()})})
    clock = model_path.Clock()
    model = model_path.global_model(msg, {}, "cpu", clock)
    received = model.state_dict()
    assert set(received) == set(sent)
    for key, value in sent.items():
        assert torch.equal(received[key], value), key
    assert not any(t.is_meta for m in model.modules() for t in model_path._tensors(m))
    assert clock.seconds > 0
    return model, len(calls)


@pytest.mark.parametrize(
    "build",
    [
        lambda c: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
        sized_from_a_forward_pass,
        frozen_first_layer,
    ],
    ids=["plain", "sized-by-a-forward-pass", "frozen-layer-and-batchnorm"],
)
def test_a_model_the_weights_describe_is_built_once_on_the_meta_device(model_path, monkeypatch, build):
    model, builds = _receive(model_path, monkeypatch, build)
    assert builds == 1
    # it trains: real tensors, gradients where the notebook wants them and nowhere else
    model.train()
    out = model(torch.ones(3, 1, 6, 6) if isinstance(model[0], torch.nn.Conv2d) else torch.ones(3, 4))
    out.sum().backward()
    requires = [p.requires_grad for p in model.parameters()]
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert requires == [p.requires_grad for p in build({}).parameters()]


@pytest.mark.parametrize(
    "build",
    [Tied, WithTensorAttribute, WithNonPersistentBuffer, lambda c: torch.nn.Linear(int(torch.tensor(4.0).item()), 2)],
    ids=["tied-weights", "tensor-attribute", "non-persistent-buffer", "item-in-build"],
)
def test_a_model_the_meta_device_cannot_hold_is_built_as_usual(model_path, monkeypatch, build):
    model, builds = _receive(model_path, monkeypatch, lambda c: build() if isinstance(build, type) else build(c))
    assert builds == 2
    if isinstance(model, Tied):
        assert model.b.weight is model.a.weight  # still one parameter, as the notebook built it
    if isinstance(model, WithTensorAttribute):
        assert torch.equal(model.scale, torch.full((4,), 2.0))
    if isinstance(model, WithNonPersistentBuffer):
        assert torch.equal(model.positions, torch.arange(4))


def test_float16_weights_give_the_notebooks_float32_model(model_path, monkeypatch):
    # nbfed.transfer-dtype = "float16": the model arrives at half the bytes, the site trains as built
    build = frozen_first_layer
    sent = {k: v.half() if v.is_floating_point() else v for k, v in build({}).state_dict().items()}
    calls = []
    monkeypatch.setattr(model_path.task, "build_model", lambda config: calls.append(1) or build(config))
    msg = SimpleNamespace(content={"arrays": ArrayRecord({k: v.clone() for k, v in sent.items()})})
    model = model_path.global_model(msg, {}, "cpu", model_path.Clock())
    assert calls == [1]
    for key, value in model.state_dict().items():
        assert value.dtype == (torch.float32 if sent[key].is_floating_point() else sent[key].dtype), key
        assert torch.equal(value, sent[key].to(value.dtype)), key
    model(torch.ones(3, 4)).sum().backward()


def test_weights_for_another_model_fail_as_load_state_dict_does(model_path, monkeypatch):
    sent = {"weight": torch.zeros(2, 4)}
    with pytest.raises(RuntimeError, match="bias"):
        _receive(model_path, monkeypatch, lambda c: torch.nn.Linear(4, 2), sent=sent)
