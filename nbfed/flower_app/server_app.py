"""ServerApp: the notebook's model and strategy (FedAvg, folding replies as they arrive, unless
the notebook builds one).

The participation policy comes from the run config (`nbfed.min-sites`, `nbfed.fraction-train`,
`nbfed.fraction-evaluate`, `nbfed.round-timeout`); `nbfed.transfer-dtype = "float16"` halves
the bytes a round moves (fedavg.py). With `nbfed.resume = true` the run continues the one in
its results directory from its last checkpoint, for the rounds that remain, once the sites of
that run are back (or the round timeout has passed).

What nbfed changes in Flower's behaviour is composed in `main`, outermost first: the recording
of every round, each reply checked on its way to the strategy (recording.py, replies.py:
`nbfed.max-examples` bounds a reply's FedAvg weight), the bounded wait for the policy's quorum
(participation.py), the strategy; and the Grid that hands replies over as they arrive (wrappers.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from . import NOTEBOOK, NOTEBOOK_SHA256, task
from .fedavg import StreamingFedAvg
from .participation import Quorum, await_site_count, await_sites
from .recorder import Recorder
from .recording import RecordedStrategy
from .replies import ReplyCheck
from .settings import notebook_config, toolkit
from .wrappers import StreamingGrid

app = ServerApp()


def _strategy(config: dict, context: Context):
    if hasattr(task, "build_strategy"):
        return task.build_strategy(config)
    min_sites = toolkit(context, "min-sites")
    return StreamingFedAvg(
        fraction_train=toolkit(context, "fraction-train"),
        fraction_evaluate=toolkit(context, "fraction-evaluate"),
        min_train_nodes=min_sites,
        min_evaluate_nodes=min_sites,
        min_available_nodes=min_sites,
        transfer_dtype=toolkit(context, "transfer-dtype"),
    )


def _results_dir(context: Context) -> Path:
    configured = toolkit(context, "results-dir")
    if configured:
        return Path(configured)
    return Path(os.environ.get("NBFED_RESULTS_ROOT", "results")) / f"run-{context.run_id}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = notebook_config(context)
    num_rounds = int(config["num_rounds"])
    timeout = toolkit(context, "round-timeout")
    if toolkit(context, "resume"):
        recorder, arrays = Recorder.resume(_results_dir(context), context.run_id)
    else:
        arrays, recorder = (
            None,
            Recorder.start(
                _results_dir(context),
                {
                    "app": __package__,
                    "notebook": NOTEBOOK,
                    "notebook_sha256": NOTEBOOK_SHA256,
                    "run_id": context.run_id,
                    "run_config": dict(context.run_config),
                    "num_rounds": num_rounds,
                },
            ),
        )
    if arrays is None:
        torch.manual_seed(int(config.get("seed", 0)))
        arrays = ArrayRecord(task.build_model(config).state_dict())
    try:
        if recorder.offset and recorder.run["sites"]:  # resumed: the interrupted run's sites, by node id
            recorder.sites_awaited(await_sites(grid, recorder.run["sites"], timeout))
        elif expected := toolkit(context, "expected-sites"):
            recorder.sites_awaited(await_site_count(grid, expected, timeout))
        check = ReplyCheck(max_examples=toolkit(context, "max-examples"))
        strategy = RecordedStrategy(Quorum(_strategy(config, context), timeout), recorder, check)
        if num_rounds > recorder.offset:
            arrays = strategy.start(
                grid=StreamingGrid(grid),
                initial_arrays=arrays,
                num_rounds=num_rounds - recorder.offset,
                timeout=timeout,
                evaluate_fn=recorder.end_of_round,
            ).arrays
    except BaseException as err:
        recorder.fail(err)
        raise
    recorder.finish(arrays)
