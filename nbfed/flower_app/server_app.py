"""ServerApp: the notebook's model and strategy (FedAvg unless the notebook builds one)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from . import NOTEBOOK, NOTEBOOK_SHA256, task
from .recorder import Recorder
from .settings import notebook_config, toolkit

app = ServerApp()


def _strategy(config: dict, context: Context):
    if hasattr(task, "build_strategy"):
        return task.build_strategy(config)
    min_sites = toolkit(context, "min-sites", 2)
    return FedAvg(
        fraction_train=toolkit(context, "fraction-train", 1.0),
        fraction_evaluate=1.0,
        min_train_nodes=min_sites,
        min_evaluate_nodes=min_sites,
        min_available_nodes=min_sites,
    )


def _results_dir(context: Context) -> Path:
    configured = toolkit(context, "results-dir", "")
    if configured:
        return Path(configured)
    return Path(os.environ.get("NBFED_RESULTS_ROOT", "results")) / f"run-{context.run_id}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = notebook_config(context)
    num_rounds = int(config["num_rounds"])
    recorder = Recorder(
        _results_dir(context),
        {
            "app": __package__,
            "notebook": NOTEBOOK,
            "notebook_sha256": NOTEBOOK_SHA256,
            "run_id": context.run_id,
            "run_config": dict(context.run_config),
            "num_rounds": num_rounds,
        },
    )
    try:
        torch.manual_seed(int(config.get("seed", 0)))
        initial = ArrayRecord(task.build_model(config).state_dict())
        strategy = _strategy(config, context)
        recorder.instrument(strategy)
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=num_rounds,
            timeout=toolkit(context, "round-timeout", 600.0),
            evaluate_fn=recorder.end_of_round,
        )
    except BaseException as err:
        recorder.fail(err)
        raise
    recorder.finish(result.arrays)
