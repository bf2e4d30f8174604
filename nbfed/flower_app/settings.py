"""Settings the toolkit reads from Flower's run config and node config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

TOOLKIT_KEY = "nbfed"


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


def toolkit(context: Context, key: str, default):
    value = context.run_config.get(f"{TOOLKIT_KEY}.{key}", default)
    return type(default)(value)


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
                "start it with --node-config 'site=\"NAME\" data-dir=\"/path/to/data\"'"
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
