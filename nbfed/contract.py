"""The notebook contract (docs/architecture.md) as data: tags, required functions, CONFIG rules.

This is a public interface: notebooks written by others depend on it. Change it only
additively (a new optional tag, a new optional function).
"""

from __future__ import annotations

from dataclasses import dataclass

# Run-config keys the toolkit itself owns (TOOLKIT_KEY: a notebook's CONFIG may not use this
# top-level key), and the confusion counts that `evaluate` may return (pooled over sites): both
# are owned by the modules that the generated app carries, and named here for the contract.
from nbfed.flower_app.settings import TOOLKIT_KEY as TOOLKIT_KEY
from nbfed.metrics import CONFUSION_KEYS as CONFUSION_KEYS


@dataclass(frozen=True)
class Function:
    """A function a tagged cell must (or may) define."""

    name: str
    params: tuple[str, ...]
    returns: str
    tag: str
    required: bool = True

    @property
    def signature(self) -> str:
        return f"def {self.name}({', '.join(self.params)}) -> {self.returns}"


FUNCTIONS: tuple[Function, ...] = (
    Function("load_data", ("data_dir: str", "config: dict"), "tuple[Dataset, Dataset]", "data"),
    Function("build_model", ("config: dict",), "torch.nn.Module", "model"),
    Function("train", ("model", "dataset", "config: dict", "device: str"), "dict[str, float]", "train"),
    Function("evaluate", ("model", "dataset", "config: dict", "device: str"), "dict[str, float]", "evaluate"),
    Function("build_strategy", ("config: dict",), "flwr.serverapp.strategy.Strategy", "strategy", required=False),
)

# Tags in the order a notebook usually has them. Cells with any other tag are the user's own.
TAGS: tuple[str, ...] = ("requirements", "config", "helpers", "data", "model", "train", "evaluate", "strategy")
REQUIRED_TAGS: tuple[str, ...] = ("config", "data", "model", "train", "evaluate")
# Tags whose cells become code in the generated app (requirements become dependencies).
CODE_TAGS: tuple[str, ...] = tuple(t for t in TAGS if t != "requirements")

CONFIG_NAME = "CONFIG"
ROUNDS_KEY = "num_rounds"
# Flower ships code, not packages: the toolkit pins flwr itself.
FLWR_REQUIREMENT = "flwr==1.41.0"
DEFAULT_REQUIREMENTS: tuple[str, ...] = ("torch>=2.4",)

FUNCTION_BY_NAME = {f.name: f for f in FUNCTIONS}
