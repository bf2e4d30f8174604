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
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import torch
from flwr.app import ArrayRecord, MetricRecord

from .metrics import checkpoint_path, checkpoints, summarize_round

_DEFAULT_NAME = re.compile(r"node-\d+")  # a node's site before it has another name (site_of)


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
        self.current: dict[str, Any] = {}
        self.awaited: dict[str, float | None] = {}
        self.registered: dict[int, str] = {}  # node id: its name in SuperLink's registry (nbfed register)

    @classmethod
    def start(cls, results_dir: Path, run: dict[str, Any]) -> Recorder:
        recorder = cls(
            results_dir, {**run, "sites": {}, "started_at": _now(), "finished_at": None, "status": "running"}
        )
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

    # -- what the strategy's hooks report (recording.RecordedStrategy) -----------------------
    def begin_round(self, server_round: int) -> dict[str, Any]:
        self.current = {
            "round": server_round,
            "started": time.time(),
            "sampled": [],
            "train": {},
            "evaluate": {},
            "seconds": {},
            "errors": {},
            "missing": {},
            "asked": {},
            "answered": {},
        }
        self.event("round_started", round=server_round)
        return self.current

    def site_of(self, node_id: int) -> str:
        """The site a node id belongs to: its name in SuperLink's registry, else the name it took
        in this run (`claim`), else `node-<id>`."""
        if node_id in self.registered:
            return self.registered[node_id]
        return next((site for site, node in self.run["sites"].items() if node == node_id), f"node-{node_id}")

    def claim(self, node_id: int, claimed: str | None) -> str | None:
        """Why a reply from `node_id` that names its site `claimed` is refused (None: it is not);
        run.json names the node's site when it is not.

        A reply's word never renames a node: SuperLink's registry names the nodes of a
        federation with node authentication (the deployment registers each site's key under its
        name), and a reply that names another site is an impostor's. Only where SuperLink names
        no node (run-local's SuperLink has no node authentication) does a node take the name its
        first reply gives, unless that is another node's."""
        known = self.site_of(node_id)
        if claimed is None or claimed == known:
            pass
        elif node_id in self.registered or node_id in self.run["sites"].values():
            return f"it names its site {claimed!r}, but node {node_id} is {known!r}"
        elif (holder := self._holder(claimed)) is not None:
            return f"it names its site {claimed!r}, which is node {holder}'s"
        elif not self.registered:
            known = claimed
        if self.run["sites"].get(known) != node_id:
            self.run["sites"] = dict(sorted({**self.run["sites"], known: node_id}.items()))
        return None

    def _holder(self, site: str) -> int | None:
        """The node whose name `site` is (`node-<id>`: that node's, before it has another)."""
        for node, name in self.registered.items():
            if name == site:
                return node
        if site in self.run["sites"]:
            return self.run["sites"][site]
        return int(site.removeprefix("node-")) if _DEFAULT_NAME.fullmatch(site) else None

    def sites_awaited(self, waited: dict[str, float | None]) -> None:
        """A resumed run waited for its sites (seconds each took, None: not back): the next round's record says so."""
        self.awaited = waited
        self.event("sites_awaited", waited=waited)

    def end_of_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Strategy `evaluate_fn`: called with the new global model after each round."""
        if server_round == 0 or not self.current:
            return None
        server_round += self.offset
        current = self.current
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
        if self.awaited:
            record["awaited"], self.awaited = self.awaited, {}
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
            awaited=record.get("awaited", {}),
        )
        self.current = {}
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
