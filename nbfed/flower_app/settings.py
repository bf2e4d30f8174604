"""Settings the toolkit reads from Flower's run config and node config.

This module owns the toolkit's run settings (`nbfed.<key>` in the run config): each one's
default, type and meaning are defined here once. The generated app's pyproject.toml, the CLI
(`--set nbfed.<key>=...`), the dry-run stack and the Ansible roles take them from here
(tests/unit/test_settings.py fails when any of them disagrees).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.app import Context

TOOLKIT_KEY = "nbfed"  # run-config keys the toolkit owns: nbfed.<key>; a notebook's CONFIG may not use it
TRANSFER_DTYPE_KEY = "nbfed-transfer-dtype"  # the train config key by which the ServerApp asks for float16 replies


@dataclass(frozen=True)
class Setting:
    default: bool | int | float | str
    meaning: str
    variable: str = ""  # the inventory variable that sets it for deploy.yml and run.yml, if any


TOOLKIT_SETTINGS: dict[str, Setting] = {
    "min-sites": Setting(
        2,
        "sites online before a round starts, the quorum (a launcher that knows the sites passes a majority)",
        "nbfed_min_sites",
    ),
    "expected-sites": Setting(
        0, "sites the first round waits for, up to the round timeout, before it goes on with the quorum (0: none)"
    ),
    "fraction-train": Setting(1.0, "fraction of the online sites sampled to train each round", "nbfed_fraction_train"),
    "fraction-evaluate": Setting(1.0, "fraction asked to evaluate each round's model (0: training only)"),
    "transfer-dtype": Setting("float32", "float16: the model travels at half the bytes both ways (kept float32)"),
    "max-examples": Setting(
        1_000_000,
        "most examples a site's reply may count, its FedAvg weight: a reply claiming more is refused (replies.py)",
    ),
    "round-timeout": Setting(
        1800.0, "seconds a round waits for replies, and for the quorum to be online", "nbfed_round_timeout"
    ),
    "results-dir": Setting("", "where the ServerApp writes the run's results (empty: $NBFED_RESULTS_ROOT/run-<id>)"),
    "resume": Setting(False, "continue the run in results-dir from its last checkpoint"),
    "signature": Setting(
        "", "the control node's signature over the app and its run config, which sites check (run.yml signs)"
    ),
}


def majority(sites: int) -> int:
    """The default quorum (nbfed.min-sites) of a federation of `sites` sites."""
    return sites // 2 + 1


def notebook_config(context: Context) -> dict:
    """The notebook's CONFIG as a nested dict, with run-time overrides applied."""
    return nested_config(context.run_config)


def nested_config(run_config: dict) -> dict:
    """Flower's flat run config (`a.b = 1`) back to the notebook's nested CONFIG, without nbfed.*."""
    nested: dict = {}
    for key, value in run_config.items():
        parts = key.split(".")
        if parts[0] == TOOLKIT_KEY:
            continue
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def toolkit(context: Context, key: str):
    """The run's value of toolkit setting `key` (nbfed.<key>), of its default's type."""
    default = TOOLKIT_SETTINGS[key].default
    return type(default)(context.run_config.get(f"{TOOLKIT_KEY}.{key}", default))


class SiteDataError(RuntimeError):
    """The site's data directory is missing, unreadable or empty."""


@dataclass(frozen=True)
class Site:
    name: str
    data_dir: Path
    device: str

    @classmethod
    def from_context(cls, context: Context) -> Site:
        cfg = context.node_config
        name = str(cfg.get("site", f"node-{context.node_id}"))
        if "data-dir" not in cfg:
            raise SiteDataError(
                f"site {name}: the SuperNode has no 'data-dir' in its node config; "
                'start it with --node-config \'site="NAME" data-dir="/path/to/data"\''
            )
        data_dir = Path(str(cfg["data-dir"]))
        if not data_dir.is_dir():
            raise SiteDataError(f"site {name}: data directory {data_dir} does not exist or is not a directory")
        if not os.access(data_dir, os.R_OK | os.X_OK):
            raise SiteDataError(f"site {name}: data directory {data_dir} is not readable by uid {os.getuid()}")
        if not any(data_dir.iterdir()):
            raise SiteDataError(f"site {name}: data directory {data_dir} is empty")
        return cls(name=name, data_dir=data_dir, device=str(cfg.get("device", "")) or _auto_device())


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
