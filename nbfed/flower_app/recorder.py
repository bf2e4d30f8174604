"""Records a run on the aggregator: per-round metrics and participants, checkpoints, the final model.

Every file is written to a temporary name, synced and renamed, so a crash or a full disk
never leaves a half-written result behind. Layout of the results directory:

    run.json            what ran (notebook, hash, run config, sites and node ids, status, resumes)
    rounds.json         one record per finished round: who was sampled, who contributed, who
                        failed or missed the timeout, train/evaluate metrics per site, pooled metrics,
                        the seconds each site spent in the notebook's code and the round's overhead
                        beyond the slowest site's
    events.jsonl        one line per event, for progress displays
    checkpoints/round-<k>.pt  the global model after round k, the last finished round (torch state_dict)
    model/global_model.pt     the final global model (torch state_dict)

A run whose ServerApp was lost (the aggregator restarted) continues from the checkpoint in a
new Flower run with the remaining rounds (`Recorder.resume`): rounds.json is written before
the checkpoint, so a round recorded without its checkpoint is run again, never skipped.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import torch
from flwr.app import ArrayRecord, Message, MetricRecord

from .metrics import checkpoint_path, checkpoints, summarize_round


class ResultsDiskFull(OSError):
    """The aggregator's results volume is full; what was there before is intact."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write `path` through a synced temporary file and a rename: all of it or none of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        # (torch.save reports a full disk as a RuntimeError about stream positions.)
        full = getattr(err, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < 1 << 20
        tmp.unlink(missing_ok=True)
        if full:
            raise ResultsDiskFull(
                errno.ENOSPC,
                f"the aggregator's results volume is full: writing {path} failed and nothing was "
                "replaced. Free space there, then resume the run from its last checkpoint",
            ) from None
        raise


class Recorder:
    def __init__(self, results_dir: Path, run: dict[str, Any], rounds: list[dict[str, Any]] | None = None):
        self.dir = results_dir
        for sub in ("checkpoints", "model"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.run = run
        self.rounds = rounds or []
        self.offset = len(self.rounds)  # rounds finished before this ServerApp started
        self._current: dict[str, Any] = {}

    @classmethod
    def start(cls, results_dir: Path, run: dict[str, Any]) -> Recorder:
        recorder = cls(results_dir, {**run, "sites": {}, "started_at": _now(), "finished_at": None, "status": "running"})
        recorder._write_json("run.json", recorder.run)
        recorder.event("started", num_rounds=run["num_rounds"])
        return recorder

    @classmethod
    def resume(cls, results_dir: Path, run_id: int) -> tuple[Recorder, ArrayRecord | None]:
        """Continue an interrupted run from its last checkpoint (its later records are dropped);
        no model when it has none (it starts over)."""
        found = checkpoints(results_dir)
        last = max(found, default=0)
        run = json.loads((results_dir / "run.json").read_text())
        rounds = [r for r in json.loads((results_dir / "rounds.json").read_text()) if r["round"] <= last]
        run["resumes"] = [*run.get("resumes", []), {"run_id": run_id, "after_round": last, "at": _now()}]
        run.update(status="running", finished_at=None)
        run.pop("error", None)
        recorder = cls(results_dir, run, rounds)
        recorder._write_json("run.json", run)
        recorder.event("resumed", after_round=last, run_id=run_id)
        return recorder, ArrayRecord(torch.load(found[last], weights_only=True)) if last else None

    # -- files -------------------------------------------------------------------------
    def _write_json(self, name: str, value: Any) -> None:
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        write_atomic(self.dir / name, lambda f: f.write(data))

    def event(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"event": kind, "time": time.time(), **fields}, sort_keys=True)
        with open(self.dir / "events.jsonl", "a") as f:
            f.write(line + "\n")

    def _save_model(self, arrays: ArrayRecord, path: Path) -> None:
        state = arrays.to_torch_state_dict()
        write_atomic(path, lambda f: torch.save(state, f))

    # -- hooks into the strategy ---------------------------------------------------------
    def instrument(self, strategy) -> None:
        """Wrap the strategy's hooks to see every round's messages and replies, whatever the
        strategy. A resumed run's rounds are numbered on from the checkpoint, for the strategy too."""
        configure_train, aggregate_train = strategy.configure_train, strategy.aggregate_train
        configure_evaluate, aggregate_evaluate = strategy.configure_evaluate, strategy.aggregate_evaluate

        def on_configure_train(server_round, *args, **kwargs):
            server_round += self.offset
            self._current = {"round": server_round, "started": time.time(), "sampled": [], "train": {},
                             "evaluate": {}, "seconds": {}, "errors": {}, "missing": {}, "asked": {}, "answered": {}}
            self.event("round_started", round=server_round)
            messages = list(configure_train(server_round, *args, **kwargs))
            self._current["sampled"] = sorted(self._name(m.metadata.dst_node_id) for m in messages)
            self._current["asked"]["train"] = messages
            return messages

        def on_aggregate_train(server_round, replies):
            server_round += self.offset
            result = aggregate_train(server_round, self._tap("train", replies, strategy))
            if not self._current["train"]:
                # fail fast: without one model there is nothing to average
                why = "; ".join(f"{site}: {reason}" for site, reason in {**self._current["errors"], **self._current["missing"]}.items())
                raise RuntimeError(f"round {server_round}: no site returned a model ({why or 'no site was asked'})")
            return result

        def on_configure_evaluate(server_round, *args, **kwargs):
            # A site that did not answer this round's training is presumed gone: asking it to
            # evaluate would only hold the round for another timeout. It is asked next round.
            gone = {m.metadata.dst_node_id for m in self._current["asked"]["train"]} - self._current["answered"].get("train", set())
            messages = [m for m in configure_evaluate(server_round + self.offset, *args, **kwargs)
                        if m.metadata.dst_node_id not in gone]
            self._current["asked"]["evaluate"] = messages
            return messages

        def on_aggregate_evaluate(server_round, replies):
            return aggregate_evaluate(server_round + self.offset, self._tap("evaluate", replies, strategy))

        strategy.configure_train, strategy.aggregate_train = on_configure_train, on_aggregate_train
        strategy.configure_evaluate, strategy.aggregate_evaluate = on_configure_evaluate, on_aggregate_evaluate

    def _name(self, node_id: int) -> str:
        """The site a node id belongs to, once it has answered; `node-<id>` before."""
        return next((site for site, node in self.run["sites"].items() if node == node_id), f"node-{node_id}")

    def _tap(self, phase: str, replies: Iterable[Message], strategy) -> Iterable[Message]:
        """The replies as the strategy gets them, each recorded on its way: one at a time to a
        strategy that folds them (StreamingFedAvg), else all of them at once."""
        answered = self._current["answered"].setdefault(phase, set())
        asked = {m.metadata.message_id: m.metadata.dst_node_id for m in self._current["asked"].get(phase, [])}

        def record(msg: Message) -> None:
            # (A reply SuperLink makes for a node, "Node Unavailable", comes from SuperLink's own
            # node id: the message it answers names the node.)
            node_id = asked.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            answered.add(node_id)
            if msg.has_error():
                self._current["errors"].setdefault(self._name(node_id), f"{phase}: {msg.error.reason.strip().splitlines()[-1]}")
                return
            site = str(msg.content["site"]["name"]) if "site" in msg.content else f"node-{node_id}"
            if self.run["sites"].get(site) != node_id:
                self.run["sites"] = dict(sorted({**self.run["sites"], site: node_id}.items()))
            self._current[phase][site] = {k: v for k, v in msg.content["metrics"].items()}
            if "seconds" in msg.content["site"]:
                self._current["seconds"].setdefault(phase, {})[site] = round(float(msg.content["site"]["seconds"]), 3)

        def tapped():
            for msg in replies:
                record(msg)
                yield msg
                del msg  # before the next reply is pulled
            for node_id in set(asked.values()) - answered:
                self._current["missing"].setdefault(self._name(node_id), f"{phase}: no reply within the round timeout")

        if getattr(strategy, "folds_replies", False):
            return tapped()
        return list(tapped())

    def end_of_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Strategy `evaluate_fn`: called with the new global model after each round."""
        if server_round == 0 or not self._current:
            return None
        server_round += self.offset
        current = self._current
        duration = time.time() - current["started"]
        record = {
            "round": server_round,
            "duration_s": round(duration, 3),
            "sampled": current["sampled"],
            "sites": {site: self.run["sites"][site] for site in sorted(current["train"])},
            "train": current["train"],
            "evaluate": current["evaluate"],
            "pooled": summarize_round(current["evaluate"]) if current["evaluate"] else {},
        }
        if current["seconds"]:
            # Seconds each site spent in the notebook's code (load_data, build_model, train or
            # evaluate); what the round took beyond the slowest site's is the federation's
            # overhead (messages, processes, (de)serialisation, aggregation).
            record["site_seconds"] = current["seconds"]
            record["overhead_s"] = round(duration - sum(max(s.values()) for s in current["seconds"].values()), 3)
        for problems in ("errors", "missing"):
            if current[problems]:
                record[problems] = current[problems]
        self.rounds.append(record)
        self._write_json("rounds.json", self.rounds)
        previous = checkpoints(self.dir)
        self._save_model(arrays, checkpoint_path(self.dir, server_round))
        for round_, path in previous.items():
            if round_ != server_round:
                path.unlink(missing_ok=True)
        self._write_json("run.json", self.run)
        self.event(
            "round_finished",
            round=server_round,
            duration_s=record["duration_s"],
            sites=sorted(record["sites"]),
            pooled=record["pooled"],
            errors={**current["errors"], **current["missing"]},
        )
        self._current = {}
        return None

    def finish(self, arrays: ArrayRecord | None) -> None:
        if arrays is not None:
            self._save_model(arrays, self.dir / "model" / "global_model.pt")
        self.run.update(status="completed", finished_at=_now())
        self._write_json("run.json", self.run)
        self.event("finished", rounds=len(self.rounds))

    def fail(self, error: BaseException) -> None:
        """Record the failure where the disk allows it (it may be the full disk that failed)."""
        self.run.update(status="failed", finished_at=_now(), error=f"{type(error).__name__}: {error}")
        try:
            self._write_json("run.json", self.run)
            self.event("failed", error=self.run["error"])
        except OSError:
            pass
