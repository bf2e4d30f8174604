"""ServerApp: the notebook's model and strategy (FedAvg, folding replies as they arrive, unless
the notebook builds one).

The participation policy comes from the run config (`nbfed.min-sites`, `nbfed.fraction-train`,
`nbfed.fraction-evaluate`, `nbfed.round-timeout`); `nbfed.transfer-dtype = "float16"` halves
the bytes a round moves (fedavg.py). With `nbfed.resume = true` the run continues the one in
its results directory from its last checkpoint, for the rounds that remain.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from . import NOTEBOOK, NOTEBOOK_SHA256, task
from .fedavg import StreamingFedAvg
from .recorder import Recorder
from .settings import notebook_config, toolkit

app = ServerApp()


def _strategy(config: dict, context: Context):
    if hasattr(task, "build_strategy"):
        return task.build_strategy(config)
    min_sites = toolkit(context, "min-sites", 2)
    return StreamingFedAvg(
        fraction_train=toolkit(context, "fraction-train", 1.0),
        fraction_evaluate=toolkit(context, "fraction-evaluate", 1.0),
        min_train_nodes=min_sites,
        min_evaluate_nodes=min_sites,
        min_available_nodes=min_sites,
        transfer_dtype=toolkit(context, "transfer-dtype", "float32"),
    )


def _bound_quorum_wait(strategy, grid: Grid, timeout: float) -> None:
    """Flower waits for `min_available_nodes` forever before each phase of a round; give up
    after `timeout` with the reason."""
    needed = int(getattr(strategy, "min_available_nodes", 1))

    def bounded(configure, phase: str):
        def configure_with_quorum(server_round, *args, **kwargs):
            deadline = time.monotonic() + timeout
            while len(online := list(grid.get_node_ids())) < needed:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"round {server_round} cannot {phase}: {len(online)} site(s) online, the participation "
                        f"policy needs {needed} (nbfed_min_sites) and {timeout:.0f} s (nbfed_round_timeout) passed. "
                        "Bring the missing sites back (ansible-playbook playbooks/status.yml lists them) or lower "
                        "nbfed_min_sites, then resume the run"
                    )
                time.sleep(1)
            return configure(server_round, *args, **kwargs)

        return configure_with_quorum

    strategy.configure_train = bounded(strategy.configure_train, "start")
    strategy.configure_evaluate = bounded(strategy.configure_evaluate, "evaluate")


def _stream_replies(grid: Grid, interval: float = 0.1) -> None:
    """Flower's `send_and_receive` pulls every 3 s and returns a round's replies all at once.
    Push the same way, then hand each reply over as soon as it is in, pulling every `interval`
    one message at a time, so that an aggregation that folds them (StreamingFedAvg) holds one
    reply at a time. Same timeout semantics."""

    def send_and_receive(messages, *, timeout: float | None = None):
        pending = [message_id for message_id in grid.push_messages(messages) if message_id]
        deadline = time.monotonic() + (timeout or 0.0)

        def replies():
            while pending:
                for message_id in list(pending):
                    pulled = list(grid.pull_messages([message_id]))
                    if pulled:
                        pending.remove(message_id)
                    while pulled:
                        yield pulled.pop()  # (no reference kept here once it is handed over)
                if timeout is not None and time.monotonic() >= deadline:
                    return
                if pending:
                    time.sleep(interval)

        return replies()

    grid.send_and_receive = send_and_receive


def _results_dir(context: Context) -> Path:
    configured = toolkit(context, "results-dir", "")
    if configured:
        return Path(configured)
    return Path(os.environ.get("NBFED_RESULTS_ROOT", "results")) / f"run-{context.run_id}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = notebook_config(context)
    num_rounds = int(config["num_rounds"])
    timeout = toolkit(context, "round-timeout", 600.0)
    if toolkit(context, "resume", False):
        recorder, arrays = Recorder.resume(_results_dir(context), context.run_id)
    else:
        arrays, recorder = None, Recorder.start(
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
    if arrays is None:
        torch.manual_seed(int(config.get("seed", 0)))
        arrays = ArrayRecord(task.build_model(config).state_dict())
    try:
        strategy = _strategy(config, context)
        _stream_replies(grid)
        _bound_quorum_wait(strategy, grid, timeout)
        recorder.instrument(strategy)
        if num_rounds > recorder.offset:
            arrays = strategy.start(
                grid=grid,
                initial_arrays=arrays,
                num_rounds=num_rounds - recorder.offset,
                timeout=timeout,
                evaluate_fn=recorder.end_of_round,
            ).arrays
    except BaseException as err:
        recorder.fail(err)
        raise
    recorder.finish(arrays)
