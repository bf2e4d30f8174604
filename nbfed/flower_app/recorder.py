"""Records a run on the aggregator: per-round metrics by site, checkpoints, the final model.

Every file is written to a temporary name and renamed, so a crash or a full disk never
leaves a half-written result behind. Layout of the results directory:

    run.json            what ran (notebook, hash, run config, sites, status)
    rounds.json         one record per finished round: train/evaluate metrics per site, pooled metrics
    events.jsonl        one line per event, for progress displays
    checkpoints/latest.pt   the global model after the last finished round
    model/global_model.pt   the final global model (torch state_dict)
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import torch
from flwr.app import ArrayRecord, Message, MetricRecord

from .metrics import summarize_round


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_state_dict(arrays: ArrayRecord, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(arrays.to_torch_state_dict(), tmp)
    os.replace(tmp, path)


class Recorder:
    def __init__(self, results_dir: Path, run: dict[str, Any]):
        self.dir = results_dir
        for sub in ("checkpoints", "model"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.run = {**run, "sites": [], "started_at": _now(), "finished_at": None, "status": "running"}
        self.rounds: list[dict[str, Any]] = []
        self._current: dict[str, Any] = {}
        self._write_run()
        self.event("started", num_rounds=run["num_rounds"])

    # -- files -------------------------------------------------------------------------
    def _write_json(self, name: str, value: Any) -> None:
        write_atomic(self.dir / name, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())

    def _write_run(self) -> None:
        self._write_json("run.json", self.run)

    def event(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"event": kind, "time": time.time(), **fields}, sort_keys=True)
        with open(self.dir / "events.jsonl", "a") as f:
            f.write(line + "\n")

    # -- hooks into the strategy ---------------------------------------------------------
    def instrument(self, strategy) -> None:
        """Wrap the strategy's hooks to see every round's replies, whatever the strategy."""
        configure_train, aggregate_train = strategy.configure_train, strategy.aggregate_train
        aggregate_evaluate = strategy.aggregate_evaluate

        def on_configure_train(server_round, *args, **kwargs):
            self._current = {"round": server_round, "started": time.time(), "train": {}, "evaluate": {}, "errors": {}}
            self.event("round_started", round=server_round)
            return configure_train(server_round, *args, **kwargs)

        def on_aggregate_train(server_round, replies):
            replies = list(replies)
            self._collect("train", replies)
            if replies and all(msg.has_error() for msg in replies):
                # fail fast: without one result there is nothing to average, in any later round either
                reasons = "; ".join(f"{node}: {why.strip().splitlines()[-1]}" for node, why in self._current["errors"].items())
                raise RuntimeError(f"round {server_round}: no site returned a model ({reasons})")
            return aggregate_train(server_round, replies)

        def on_aggregate_evaluate(server_round, replies):
            replies = list(replies)
            self._collect("evaluate", replies)
            return aggregate_evaluate(server_round, replies)

        strategy.configure_train = on_configure_train
        strategy.aggregate_train = on_aggregate_train
        strategy.aggregate_evaluate = on_aggregate_evaluate

    def _collect(self, phase: str, replies: Iterable[Message]) -> None:
        for msg in replies:
            if msg.has_error():
                node = f"node-{msg.metadata.src_node_id}"
                self._current["errors"][node] = f"{phase}: {msg.error.reason}"
                continue
            site = str(msg.content["site"]["name"]) if "site" in msg.content else f"node-{msg.metadata.src_node_id}"
            metrics: MetricRecord = msg.content["metrics"]
            self._current[phase][site] = {k: v for k, v in metrics.items()}
            if site not in self.run["sites"]:
                self.run["sites"] = sorted([*self.run["sites"], site])

    def end_of_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Strategy `evaluate_fn`: called with the new global model after each round."""
        if server_round == 0 or not self._current:
            return None
        record = {
            "round": server_round,
            "duration_s": round(time.time() - self._current["started"], 3),
            "train": self._current["train"],
            "evaluate": self._current["evaluate"],
            "pooled": summarize_round(self._current["evaluate"]) if self._current["evaluate"] else {},
        }
        if self._current["errors"]:
            record["errors"] = self._current["errors"]
        self.rounds.append(record)
        save_state_dict(arrays, self.dir / "checkpoints" / "latest.pt")
        self._write_json("rounds.json", self.rounds)
        self._write_run()
        self.event(
            "round_finished",
            round=server_round,
            duration_s=record["duration_s"],
            sites=sorted(record["train"]),
            pooled=record["pooled"],
            errors=record.get("errors", {}),
        )
        self._current = {}
        return None

    def finish(self, arrays: ArrayRecord | None) -> None:
        if arrays is not None:
            save_state_dict(arrays, self.dir / "model" / "global_model.pt")
        self.run.update(status="completed", finished_at=_now())
        self._write_run()
        self.event("finished", rounds=len(self.rounds))

    def fail(self, error: BaseException) -> None:
        self.run.update(status="failed", finished_at=_now(), error=f"{type(error).__name__}: {error}")
        self._write_run()
        self.event("failed", error=self.run["error"])
